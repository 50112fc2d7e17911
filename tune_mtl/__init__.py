"""tune-mtl: distributed hyperparameter search for multi-task learning."""

__version__ = "0.1.0"
