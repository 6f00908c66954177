"""Saved score maps (wsolevaluation's layout ``<scoremap_root>/<image_id>.npy``): load and validate.

A valid map is a 224x224 float32 or float64 array without NaN, with values in
[0, 1] (what ``check_scoremap_validity`` demands of what the reference
evaluates). Anything else raises :class:`WSOLInputError` with one line that
names the image id, so a bad map is never evaluated nor skipped silently.
"""

from __future__ import annotations

import io
import os
from typing import Dict, Optional, Tuple

import numpy as np

from wsol_lightning.errors import WSOLInputError
from wsol_lightning.metrics.geometry import SCOREMAP_SIZE

#: dtypes accepted for saved score maps.
SCOREMAP_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def scoremap_path(scoremap_root: str, image_id: str) -> str:
    """``<scoremap_root>/<image_id>.npy``."""
    return os.path.join(scoremap_root, image_id + ".npy")


def validate_scoremap(scoremap: np.ndarray, image_id: str, size: int = SCOREMAP_SIZE,
                      check_values: bool = True) -> np.ndarray:
    """Return ``scoremap`` if it is a valid ``size`` x ``size`` map, else raise naming ``image_id``.

    ``check_values=False`` leaves NaN and the range to the caller (the compiled
    box kernel checks them as it reads the map, and ``evaluate.py`` calls this
    again to name what is wrong).
    """
    if not isinstance(scoremap, np.ndarray):
        raise WSOLInputError(f"{image_id}: score map is a {type(scoremap).__name__}, expected a numpy array")
    if scoremap.shape != (size, size):
        raise WSOLInputError(f"{image_id}: score map has shape {scoremap.shape}, expected ({size}, {size})")
    if scoremap.dtype not in SCOREMAP_DTYPES:
        raise WSOLInputError(f"{image_id}: score map dtype {scoremap.dtype}, expected float32 or float64")
    if not check_values:
        return scoremap
    low, high = float(scoremap.min()), float(scoremap.max())  # NaN propagates into both
    if np.isnan(low) or np.isnan(high):
        raise WSOLInputError(f"{image_id}: score map contains NaN")
    if low < 0 or high > 1:
        raise WSOLInputError(f"{image_id}: score map values outside [0, 1] (min {low:.6g}, max {high:.6g})")
    return scoremap


_HEADERS: Dict[Tuple[int, np.dtype], bytes] = {}


def _npy_header(size: int, dtype: np.dtype) -> bytes:
    """The exact header ``np.save`` writes for a C-order ``size`` x ``size`` array of ``dtype``."""
    key = (size, dtype)
    if key not in _HEADERS:
        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(buffer, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                      "fortran_order": False, "shape": (size, size)})
        _HEADERS[key] = buffer.getvalue()
    return _HEADERS[key]


class ReadBuffer:
    """One buffer for the maps that a loop reads one after another (``load_scoremap(..., into=buffer)``).

    A fresh 200 KB ``bytearray`` per map costs zero-filling and page faults
    (memory that large is mapped anew by every allocation): about 0.02 ms of
    the ~0.1 ms that reading and checking a map takes. A map read into the
    buffer is valid until the next read.
    """

    def __init__(self) -> None:
        self.data = bytearray()

    def get(self, length: int) -> bytearray:
        if len(self.data) != length:
            self.data = bytearray(length)
        return self.data


def _read_saved_map(path: str, size: int, into: Optional[ReadBuffer] = None):
    """The array of a file ``np.save`` wrote for a valid map's shape and dtype, read in one go; else None.

    ``np.load`` parses the header with ``ast``: twice the time of this read
    (~0.03 ms more per map, a few percent of a smooth map's evaluation).
    Anything but the exact expected header goes to ``np.load``. With ``into``,
    the map is read into that buffer.
    """
    with open(path, "rb") as handle:
        length = os.fstat(handle.fileno()).st_size
        for dtype in SCOREMAP_DTYPES:
            header = _npy_header(size, dtype)
            if length == len(header) + size * size * dtype.itemsize:
                data = bytearray(length) if into is None else into.get(length)  # writable: the kernel takes it
                if handle.readinto(data) == length and data.startswith(header):
                    return np.frombuffer(data, dtype=dtype, offset=len(header)).reshape(size, size)
                return None
    return None


def load_scoremap(scoremap_root: str, image_id: str, size: int = SCOREMAP_SIZE, check_values: bool = True,
                  into: Optional[ReadBuffer] = None) -> np.ndarray:
    """Read ``<scoremap_root>/<image_id>.npy`` and validate it; every error names the image id.

    Args:
        scoremap_root: folder of the maps.
        image_id: the map's image id.
        size: expected side.
        check_values: also refuse NaN and values outside [0, 1] (see :func:`validate_scoremap`).
        into: read into this buffer (the map is valid until its next read); default: a new array.
    """
    path = scoremap_path(scoremap_root, image_id)
    try:
        scoremap = _read_saved_map(path, size, into)
        if scoremap is None:
            scoremap = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise WSOLInputError(f"{image_id}: score map file missing ({path})") from None
    except (ValueError, OSError, EOFError) as error:
        raise WSOLInputError(f"{image_id}: score map unreadable ({path}: {error})") from None
    return validate_scoremap(scoremap, image_id, size, check_values)
