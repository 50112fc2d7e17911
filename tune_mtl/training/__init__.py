"""One trial: its typed config, the objective it reports, the training loop and the Ray trainable.

Imports only down (core, data, models, strategies); never search, reporting or storage.
"""
