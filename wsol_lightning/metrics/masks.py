"""Ground-truth masks for PxAP, read as wsolevaluation's ``get_mask`` does.

OpenCV reads and resizes the PNGs (``cv2.imread`` grayscale, nearest-neighbour
resize to 224x224) because that is what the reference uses: a different decoder
or interpolation would shift mask borders by a pixel and change PxAP.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from wsol_lightning.errors import WSOLInputError
from wsol_lightning.metrics.geometry import SCOREMAP_SIZE

#: Value of ignored pixels in a ground-truth mask (foreground is 1, background 0).
IGNORE_VALUE = 255


def _read_binary_mask(path: str, size: int) -> np.ndarray:
    import cv2  # here, not at the top: evaluate.py on boxes never needs OpenCV (start-up time)

    image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise WSOLInputError(f"{path}: mask file missing or unreadable")
    resized = cv2.resize(np.float32(image), (size, size), interpolation=cv2.INTER_NEAREST)
    return resized > 0.5


def load_gt_mask(mask_dir: str, mask_paths: Sequence[str], ignore_path: str, size: int = SCOREMAP_SIZE) -> np.ndarray:
    """Union of an image's instance masks, with the ignore region marked 255.

    Args:
        mask_dir: ``<mask_root>/OpenImages``, the folder the metadata's mask paths are relative to.
        mask_paths: the image's instance mask paths (at least one).
        ignore_path: the image's ignore-box mask path (``''``: no ignore region).
        size: side of the returned mask.

    Returns:
        uint8 array (size, size): 1 foreground, 0 background, 255 ignored
        (ignore box minus foreground).
    """
    if not mask_paths:
        raise WSOLInputError(f"{mask_dir}: image has no mask paths")
    foreground = np.zeros((size, size), dtype=bool)
    for mask_path in mask_paths:
        foreground |= _read_binary_mask(os.path.join(mask_dir, mask_path), size)
    ignore = np.zeros((size, size), dtype=bool)
    if ignore_path:
        ignore = _read_binary_mask(os.path.join(mask_dir, ignore_path), size) & ~foreground
    return foreground.astype(np.uint8) + IGNORE_VALUE * ignore.astype(np.uint8)
