"""Score map -> boxes at every CAM threshold -> best IoU with the GT: the box-metric kernel.

Exactly wsolevaluation's ``compute_bboxes_from_scoremaps`` + ``BoxEvaluator``:

* ``u8 = (scoremap * 255).astype(uint8)``; at threshold ``t`` the mask is
  ``u8 > int(t * u8.max())`` (``cv2.threshold(..., THRESH_BINARY)``);
* contours from ``cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)`` (holes
  included); none -> the box ``[0, 0, 0, 0]``;
* V1 (``multi_contour_eval=False``): only the first contour of largest
  ``cv2.contourArea``; V2: every contour;
* box of a contour: its bounding rect ``x, y, w, h`` -> ``[x, y, min(x + w, W - 1),
  min(y + h, H - 1)]``; IoU inclusive (``+1``) against every GT box, the best over
  GT boxes and the threshold's boxes counts.

Two things make it cheaper than the reference without changing a number: a
threshold only matters through its integer level ``int(t * max)``, so each
distinct level is searched once (interval 0.001 costs at most 256 searches, not
1000); and bounding rects and shoelace areas of all contours are computed with
``np.minimum.reduceat`` & co. over the concatenated contour points instead of a
Python call per contour, so noisy maps with thousands of contours stay cheap.
No torch import here: ``scripts/evaluate.py`` stays fast to start.
"""

from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np


def scoremap_levels(scoremap: np.ndarray, thresholds: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The uint8 map and the integer level ``int(t * max)`` of each threshold.

    Args:
        scoremap: ``[H, W]`` floats in [0, 1].
        thresholds: CAM thresholds (``np.arange(0, 1, interval)``).

    Returns:
        ``(u8, levels)`` with ``levels[i] = int(thresholds[i] * u8.max())``.
    """
    u8 = (scoremap * 255).astype(np.uint8)
    peak = np.max(u8)
    levels = np.array([int(t * peak) for t in thresholds], dtype=np.int64)
    return u8, levels


def contour_boxes_and_areas(binary: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Bounding boxes (reference convention) and doubled areas of every contour of a mask.

    Args:
        binary: ``[H, W]`` uint8 mask (0 or 255).

    Returns:
        ``boxes`` ``[N, 4]`` int64 ``x0, y0, x1, y1`` (``x1 = min(x + w, W - 1)``)
        and ``twice_area`` ``[N]`` int64 (twice ``cv2.contourArea``, exact), in
        OpenCV's contour order; ``N = 0`` when there is no contour.
    """
    height, width = binary.shape
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    if len(contours) == 0:
        return np.zeros((0, 4), dtype=np.int64), np.zeros(0, dtype=np.int64)
    lengths = np.fromiter((len(c) for c in contours), dtype=np.int64, count=len(contours))
    points = np.concatenate(contours).reshape(-1, 2).astype(np.int64)
    starts = np.zeros(len(contours), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    xs, ys = points[:, 0], points[:, 1]
    x0 = np.minimum.reduceat(xs, starts)
    y0 = np.minimum.reduceat(ys, starts)
    x1 = np.minimum(np.maximum.reduceat(xs, starts) + 1, width - 1)
    y1 = np.minimum(np.maximum.reduceat(ys, starts) + 1, height - 1)
    # Shoelace over each closed polygon: the next point of the last point is the first.
    next_index = np.arange(1, len(points) + 1)
    next_index[starts[1:] - 1] = starts[:-1]
    next_index[-1] = starts[-1]
    cross = xs * ys[next_index] - xs[next_index] * ys
    twice_area = np.abs(np.add.reduceat(cross, starts))
    return np.stack([x0, y0, x1, y1], axis=1), twice_area


def box_ious(boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """Inclusive IoU ``[N, K]`` of boxes against GT boxes (both ``x0, y0, x1, y1``)."""
    boxes = boxes.astype(np.float64)[:, None, :]
    gt = gt_boxes.astype(np.float64)[None, :, :]
    inter_w = np.maximum(0.0, np.minimum(boxes[..., 2], gt[..., 2]) - np.maximum(boxes[..., 0], gt[..., 0]) + 1)
    inter_h = np.maximum(0.0, np.minimum(boxes[..., 3], gt[..., 3]) - np.maximum(boxes[..., 1], gt[..., 1]) + 1)
    intersection = inter_w * inter_h
    area = (boxes[..., 2] - boxes[..., 0] + 1) * (boxes[..., 3] - boxes[..., 1] + 1)
    gt_area = (gt[..., 2] - gt[..., 0] + 1) * (gt[..., 3] - gt[..., 1] + 1)
    return intersection / (area + gt_area - intersection)


def best_ious_per_threshold(scoremap: np.ndarray, gt_boxes: np.ndarray,
                            thresholds: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Best IoU at every threshold, for V1 (largest contour) and V2 (all contours).

    Args:
        scoremap: ``[H, W]`` floats in [0, 1] (224x224 for the benchmark).
        gt_boxes: ``[K, 4]`` GT boxes at the score map's scale, K >= 1.
        thresholds: CAM thresholds.

    Returns:
        ``(iou_largest, iou_all)``, each ``[len(thresholds)]`` float64.
    """
    u8, levels = scoremap_levels(scoremap, thresholds)
    unique_levels, inverse = np.unique(levels, return_inverse=True)
    largest = np.empty(len(unique_levels))
    every = np.empty(len(unique_levels))
    empty_box_iou = None
    for index, level in enumerate(unique_levels):
        binary = cv2.threshold(u8, int(level), 255, cv2.THRESH_BINARY)[1]
        boxes, twice_area = contour_boxes_and_areas(binary)
        if len(boxes) == 0:
            if empty_box_iou is None:
                empty_box_iou = box_ious(np.zeros((1, 4), dtype=np.int64), gt_boxes).max()
            largest[index] = every[index] = empty_box_iou
            continue
        per_box = box_ious(boxes, gt_boxes).max(axis=1)
        largest[index] = per_box[int(np.argmax(twice_area))]  # first of the largest, as max()
        every[index] = per_box.max()
    return largest[inverse], every[inverse]


def correct_at_iou(best_ious: np.ndarray, iou_thresholds: np.ndarray) -> np.ndarray:
    """``[len(iou_thresholds), T]`` bool: best IoU >= iou/100 at each CAM threshold."""
    return best_ious[None, :] >= (np.asarray(iou_thresholds, dtype=np.float64)[:, None] / 100)
