from tune_mtl.cli import run

run()
