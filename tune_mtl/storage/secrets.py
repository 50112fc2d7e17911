"""Keep secrets out of printed output and result files.

A database URL may carry a password (`postgresql://user:PASSWORD@host/db`, or `?password=` in the query);
every URL this project prints or saves goes through `mask_url` first.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

MASK = "***"
SECRET_QUERY_KEYS = {"password", "passwd", "pwd", "secret", "token", "key", "api_key", "access_key", "secret_key"}


def mask_url(url: str) -> str:
    """The URL with its password (user info or query parameter) replaced by ***; other text unchanged."""
    if "://" not in url:
        return url
    # String surgery rather than urlunsplit, which rewrites 'sqlite:///path' forms with an empty host.
    scheme, rest = url.split("://", 1)
    authority, sep, tail = rest.partition("/")
    if "@" in authority:
        userinfo, host = authority.rsplit("@", 1)
        if ":" in userinfo:
            authority = f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"
    path, qmark, query = tail.partition("?")
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in SECRET_QUERY_KEYS for k, _ in pairs):
            query = urlencode([(k, MASK if k.lower() in SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*/:")
    return f"{scheme}://{authority}{sep}{path}{qmark}{query}"


def is_masked(url: str) -> bool:
    return MASK in url


OPTUNA_STORAGE_ENV = "TUNE_MTL_OPTUNA_STORAGE"


def optuna_storage_url(given: str | None, file: str | None) -> str | None:
    """The Optuna storage URL from --optuna-storage, else --optuna-storage-file (its first line), else the
    environment variable TUNE_MTL_OPTUNA_STORAGE: the last two keep a password off the process command line
    (where `ps` shows it to every user of the machine). A PostgreSQL URL may also leave the password out
    entirely: libpq then reads PGPASSWORD or ~/.pgpass."""
    from pathlib import Path

    from tune_mtl.core.errors import UserError

    if given and file:
        raise UserError("give the Optuna storage once: --optuna-storage or --optuna-storage-file, not both")
    if file:
        try:
            lines = Path(file).expanduser().read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as err:
            reason = getattr(err, "strerror", None) or type(err).__name__
            raise UserError(f"cannot read --optuna-storage-file '{file}' ({reason}); it must hold the storage URL "
                            "on its first line") from None
        url = lines[0].strip()
        if "://" not in url:
            raise UserError(f"--optuna-storage-file '{file}' must hold a database URL such as "
                            f"postgresql://user:password@host/db on its first line, got {mask_url(url)!r}")
        return url
    import os

    return given or os.environ.get(OPTUNA_STORAGE_ENV) or None
