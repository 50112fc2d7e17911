"""A throw-away PostgreSQL server on 127.0.0.1 for the tests: its own data folder, a random port, a password.

Debian's `postgresql` package (which .ci/run installs through apt-get when it is missing) provides the server
binaries under /usr/lib/postgresql/<version>/bin. The server refuses to run as root, so under root it runs as
the unprivileged user `nobody`, in a folder that user owns.
"""

from __future__ import annotations

import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

USER = "tune"
PASSWORD = "s3cret-Pw_9"  # what the tests look for in files and output
DATABASE = "tunemtl"


def find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)  # newest version first
    return str(candidates[0]) if candidates else None


def free_port() -> int:
    for _ in range(50):
        port = random.randint(20000, 60000)
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no free port found")


@dataclass
class PostgresServer:
    folder: Path
    port: int
    run_as: list[str]  # the command prefix that runs a program as the server's user
    pg_ctl: str

    @property
    def url(self) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*self.run_as, self.pg_ctl, "-D", str(self.folder / "data"), *args],
                              capture_output=True, text=True, timeout=timeout)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        proc = self.ctl("-o", options, "-l", str(self.folder / "server.log"), "-w", "start")
        if proc.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start: {proc.stderr}\n{self.log()}")

    def stop(self, mode: str = "fast") -> None:
        self.ctl("-m", mode, "-w", "stop")

    def log(self) -> str:
        path = self.folder / "server.log"
        return path.read_text() if path.exists() else ""


def start_server() -> PostgresServer:
    """initdb + start + CREATE DATABASE; raises FileNotFoundError when no server binaries exist."""
    initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
    if not (initdb and pg_ctl and find_binary("postgres")):
        raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; install "
                                "Debian's 'postgresql' package (.ci/run does)")
    folder = Path(tempfile.mkdtemp(prefix="tune-mtl-pg-"))
    folder.chmod(0o755)
    run_as: list[str] = []
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
        run_as = ["runuser", "-u", "nobody", "--"]
    pwfile = folder / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if run_as:
        os.chown(pwfile, pwd.getpwnam("nobody").pw_uid, -1)
    subprocess.run([*run_as, initdb, "-D", str(folder / "data"), "-U", USER, f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8"],
                   check=True, capture_output=True, timeout=120)
    pwfile.unlink()
    server = PostgresServer(folder, free_port(), run_as, pg_ctl)
    server.start()
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port={server.port} user={USER} password={PASSWORD} dbname=postgres",
                         autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {DATABASE}")
    return server


def remove_server(server: PostgresServer) -> None:
    server.stop("immediate")
    shutil.rmtree(server.folder, ignore_errors=True)
