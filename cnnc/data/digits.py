"""`digits`: the small data set shipped inside cnnc, the default when none is named.

UCI "Optical Recognition of Handwritten Digits" (E. Alpaydin and C. Kaynak, 1998, CC BY 4.0), the
same file scikit-learn ships as `load_digits`; see DIGITS_README.md beside this file.
"""

from __future__ import annotations

import functools
import gzip
import io
from importlib import resources

import numpy as np

from cnnc.data._registry import Dataset, register_dataset
from cnnc.diagnostics import CnncError

DESCRIPTION = ("8x8 handwritten digits, 10 classes, 1,438 train / 359 test (UCI Optical "
               "Recognition of Handwritten Digits, E. Alpaydin and C. Kaynak, 1998, CC BY 4.0)")
RESOURCE = "digits.csv.gz"


@functools.lru_cache(maxsize=1)
def _table() -> np.ndarray:
    """The 1,797 x 65 table, read from the package (works from a wheel or a zip too)."""
    try:
        packed = resources.files("cnnc.data").joinpath(RESOURCE).read_bytes()
        table = np.loadtxt(io.BytesIO(gzip.decompress(packed)), delimiter=",", dtype=np.int64,
                           ndmin=2)
    except Exception as exc:
        raise CnncError(f"the embedded data set file cnnc/data/{RESOURCE} could not be read: "
                        f"{type(exc).__name__}: {exc}",
                        hint="the cnnc installation is damaged; reinstall cnnc", code="data"
                        ) from exc
    if (table.shape[1] != 65 or table[:, :64].min() < 0 or table[:, :64].max() > 16
            or table[:, 64].min() < 0 or table[:, 64].max() > 9):
        raise CnncError(f"the embedded data set file cnnc/data/{RESOURCE} is damaged "
                        f"(table {table.shape[0]}x{table.shape[1]}, expected 1797x65 with pixels "
                        "0..16 and labels 0..9)", hint="reinstall cnnc", code="data")
    table.setflags(write=False)
    return table


def split_mask(labels: np.ndarray) -> np.ndarray:
    """The fixed, stratified split: within each class, every fifth image from the third on."""
    mask = np.zeros(len(labels), dtype=bool)
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        mask[idx[2::5]] = True
    return mask


@register_dataset("digits", "8x8 handwritten digits shipped with cnnc (UCI, CC BY 4.0); "
                            "the default")
def load_digits(arg=None, **_options) -> Dataset:
    table = _table()
    x = (table[:, :64].astype(np.float32) / np.float32(16.0)).reshape(-1, 8, 8, 1)
    y = table[:, 64].astype(np.int64)
    test = split_mask(y)
    return Dataset("digits", x[~test], y[~test], x[test], y[test], 10, DESCRIPTION,
                   [str(d) for d in range(10)])
