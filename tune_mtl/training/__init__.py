"""One trial without Ray: its typed config, the objective it reports and the training loop.

Imports only down (core, data, models, strategies); never search, reporting, storage, Ray, Optuna or W&B.
The Ray trainable that drives the loop is `tune_mtl.search.trainable`.
"""
