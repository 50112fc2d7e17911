"""Entry point: `python launch.py ...` is `python -m tune_mtl ...` (see `python launch.py --help`)."""

from tune_mtl.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
