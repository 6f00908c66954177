"""Small pieces of wsolevaluation's evaluation contract shared by every metric.

* score maps are evaluated at ``SCOREMAP_SIZE`` x ``SCOREMAP_SIZE`` (224);
* CAM thresholds are ``np.arange(0, 1, interval)``;
* ground-truth boxes are rescaled from the original image size to 224 with
  ``int()`` on each coordinate (``resize_box``), boxes are inclusive
  ``(x0, y0, x1, y1)``.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

SCOREMAP_SIZE = 224

Box = Tuple[int, int, int, int]


def cam_thresholds(interval: float) -> np.ndarray:
    """The reference's CAM threshold list ``np.arange(0, 1, interval)``.

    Args:
        interval: spacing of the thresholds, in (0, 1).

    Returns:
        float64 array starting at 0 and stopping below 1.
    """
    if not 0.0 < float(interval) < 1.0:
        raise ValueError(f"cam_curve_interval must be in (0, 1), got {interval}")
    return np.arange(0, 1, interval)


def resize_box(box: Sequence[float], image_size: Sequence[float], resize_size: Sequence[float]) -> Box:
    """Rescale a box from an image of ``image_size`` to ``resize_size``, truncating with ``int()``.

    Args:
        box: ``(x0, y0, x1, y1)`` in original pixels.
        image_size: ``(width, height)`` of the original image.
        resize_size: ``(width, height)`` after resizing (224, 224 for the benchmark).

    Returns:
        The rescaled box as four ints, exactly as wsolevaluation's ``resize_bbox``.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    width, height = (float(v) for v in image_size)
    new_width, new_height = (float(v) for v in resize_size)
    return (
        int(x0 * new_width / width),
        int(y0 * new_height / height),
        int(x1 * new_width / width),
        int(y1 * new_height / height),
    )
