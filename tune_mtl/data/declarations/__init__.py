"""The data sets' declarations, one module per family (no torch): each public module defines `DECLARATIONS`, a
tuple of `DataSetDeclaration`s, which the registry (`tune_mtl.data`) collects. Modules starting with '_' are
shared helpers. The builders live beside this package, in `tune_mtl/data/<family>.py`."""
