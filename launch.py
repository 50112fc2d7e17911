"""Entry point: `python launch.py ...` is `python -m tune_mtl ...` (see `python launch.py --help`)."""

from tune_mtl.cli import run

if __name__ == "__main__":
    run()
