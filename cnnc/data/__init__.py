"""Data sets by name: the registry, the built-in loaders, and the check that data fits a model.

    from cnnc.data import load_dataset, check_fits
    ds = load_dataset("digits")
    check_fits(ds, (8, 8, 1), 10)

Built in: `digits` (shipped, the default), `fashion-mnist` and `mnist` (IDX files found on this
machine, or downloaded on first use: `cnnc.data.download`), `shapes` (synthetic), `npz:PATH`,
`idx:DIR` and `folder:DIR` (your own images, one sub-folder per class). Other packages add
data sets through the entry-point group ``cnnc.datasets`` (see `cnnc.data._registry`).
"""

# Importing the loaders registers them.
from cnnc.data import digits as _digits  # noqa: E402,F401
from cnnc.data import folder as _folder  # noqa: E402,F401
from cnnc.data import idx as _idx  # noqa: E402,F401
from cnnc.data import npz as _npz  # noqa: E402,F401
from cnnc.data import shapes as _shapes  # noqa: E402,F401
from cnnc.data._registry import (
    ENTRY_POINT_GROUP,
    Dataset,
    check_fits,
    dataset_help,
    dataset_names,
    load_dataset,
    register_dataset,
)

DEFAULT_DATASET = "digits"

__all__ = ["DEFAULT_DATASET", "Dataset", "ENTRY_POINT_GROUP", "check_fits", "dataset_help",
           "dataset_names", "load_dataset", "register_dataset"]
