"""How a `launch.py` process ends: Ray stopped by the search that started it (and only by it), then a prompt
exit that still joins threads and runs every `atexit` handler."""

import subprocess
import sys
import textwrap

from launch_env import launch_env

from tune_mtl.search.cluster import disconnect


def run_python(code: str, tmp_path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=launch_env(tmp_path),
                          capture_output=True, text=True, timeout=120)


def test_prompt_exit_keeps_the_exit_code_joins_threads_and_runs_atexit_handlers(tmp_path):
    done = run_python(
        """
        import atexit, threading, time
        from tune_mtl.cli import exit_promptly

        atexit.register(lambda: open("atexit-ran", "w").close())
        def late_writer():
            time.sleep(0.5)
            open("thread-finished", "w").close()
        threading.Thread(target=late_writer).start()
        print("printed before the exit", end="")  # no newline: only a flush writes it to the pipe
        exit_promptly(3)
        """,
        tmp_path,
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout == "printed before the exit"
    assert (tmp_path / "atexit-ran").exists()
    assert (tmp_path / "thread-finished").exists()


def test_disconnect_stops_the_ray_that_connect_started(tmp_path):
    done = run_python(
        """
        import ray
        from tune_mtl.search.cluster import connect, disconnect

        connect(None)
        assert ray.is_initialized()
        disconnect()
        print("initialized after disconnect:", ray.is_initialized())
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "initialized after disconnect: False" in done.stdout


def test_disconnect_leaves_a_ray_it_did_not_start_running(ray_session):
    disconnect()  # the session's shared Ray: started by the tests, not by `connect`
    assert ray_session.is_initialized()
