"""The options every data set in MTAN's preprocessed .npy layout shares (NYUv2, Cityscapes: data/npy_dense.py)."""

from __future__ import annotations

from tune_mtl.core.options import Field

COMMON_OPTIONS = {
    "root": Field(str, None, help="folder with train/ and val/ in the preprocessed MTAN .npy layout", path=True),
    "augment": Field(bool, True, help="random scale-crop + horizontal flip on the training split (MTAN)"),
    "scales": Field(list, None, help="scale factors of the random crop (default MTAN's [1.0, 1.2, 1.5])"),
    "image_size": Field(list, None, help="[H, W] to resize every sample to (default: as stored)"),
    "val_fraction": Field(float, 0.1, low=0.01, high=0.9, help="fraction of train/ held out for validation"),
    "max_train_samples": Field(int, None, low=1, help="use at most this many training samples"),
    "max_eval_samples": Field(int, None, low=1, help="use at most this many validation and test samples"),
    "data_seed": Field(int, None, help="seed of the train/validation split (default: the trial seed)"),
}
