"""Score map -> boxes at every CAM threshold -> best IoU with the GT: the box-metric kernel.

Exactly wsolevaluation's ``compute_bboxes_from_scoremaps`` + ``BoxEvaluator``:

* ``u8 = (scoremap * 255).astype(uint8)``; at threshold ``t`` the mask is
  ``u8 > int(t * u8.max())`` (``cv2.threshold(..., THRESH_BINARY)``);
* contours from ``cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)`` (holes
  included); none -> the box ``[0, 0, 0, 0]``;
* V1 (``multi_contour_eval=False``): only the first contour of largest
  ``cv2.contourArea``; V2: every contour;
* box of a contour: its bounding rect ``x, y, w, h`` -> ``[x, y, min(x + w, W - 1),
  min(y + h, H - 1)]``; IoU inclusive (``+1``) against every GT box (a
  non-positive union counts as IoU 0), the best over GT boxes and the
  threshold's boxes counts.

How it is made cheap without changing a number:

* a threshold only matters through its integer level ``int(t * max)``: each
  distinct level is evaluated once (interval 0.001 costs at most 256 levels,
  not 1000);
* V2 (every contour) needs no contour search. The contours of
  ``RETR_TREE`` are one outer border per 8-connected foreground component
  (bounding rect = the component's) and one hole border per 4-connected
  background component that does not touch the image border (bounding rect =
  the hole's, grown by one pixel on each side). This was checked against
  ``cv2.findContours`` on every binary image up to 4x4, 3x5 and 5x3 and on
  20 000 random ones (``tests/unit/test_metrics_boxes.py`` keeps checking
  it). The components of all levels at once come from the compiled kernel
  (:mod:`~wsol_lightning.metrics.sweeps`, numba,
  :mod:`~wsol_lightning.metrics.compiled`) in one of two ways, picked per map:
  on smooth maps, a union-find over the row runs of every level (a quarter as
  many runs as pixels); on speckled and noisy ones, two union-find sweeps over
  pixels (foreground 8-connected from the top level down, holes 4-connected
  from the bottom up), whose cost does not grow with the number of contours,
  so maps with thousands of small contours per level cost a few times what
  smooth ones cost. Scratch arrays are reused per thread (fresh ones per map
  cost page faults).
* V1 needs OpenCV's own contour areas and order (first of the largest wins
  ties), so it keeps one ``cv2.findContours`` per distinct level, with
  ``RETR_EXTERNAL`` (a hole border never beats its own outer border, which
  comes first; checked like the above) and with every contour's rect and
  shoelace area computed at once with ``np.minimum.reduceat`` & co.

Without numba, V2 falls back to one ``cv2.findContours(RETR_TREE)`` per
distinct level (same numbers, slower). No torch, numba (with the
ahead-of-time kernel) or OpenCV (V2 only) import here: ``scripts/evaluate.py``
stays fast to start.
"""

from __future__ import annotations

import threading
from typing import List, Optional, Sequence, Tuple

import numpy as np

from wsol_lightning.metrics import compiled

#: Number of uint8 levels of a score map.
NUM_LEVELS = 256


# ----------------------------------------------------------------------------- levels
def scoremap_to_uint8(scoremap: np.ndarray) -> np.ndarray:
    """``(scoremap * 255).astype(uint8)`` in float64, C-contiguous.

    ``evaluate_wsol`` hands every map to the evaluator through ``t2n``, which
    casts to float64, so a float32 map is multiplied in float64 too.
    """
    return np.ascontiguousarray((np.asarray(scoremap, dtype=np.float64) * 255).astype(np.uint8))


def threshold_levels(u8: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``int(t * u8.max())`` for every threshold, as int64 (``float64 * uint8`` then truncation)."""
    return (np.asarray(thresholds, dtype=np.float64) * np.max(u8)).astype(np.int64)


def scoremap_levels(scoremap: np.ndarray, thresholds: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The uint8 map and the integer level ``int(t * max)`` of each threshold."""
    u8 = scoremap_to_uint8(scoremap)
    return u8, threshold_levels(u8, thresholds)


# ----------------------------------------------------------------------------- IoU
def box_ious(boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """Inclusive IoU ``[N, K]`` of boxes against GT boxes (both ``x0, y0, x1, y1``, ints).

    As the reference: integer areas, a union <= 0 gives IoU 0.
    """
    boxes = np.asarray(boxes, dtype=np.int64)[:, None, :]
    gt = np.asarray(gt_boxes, dtype=np.int64)[None, :, :]
    inter_w = np.maximum(0, np.minimum(boxes[..., 2], gt[..., 2]) - np.maximum(boxes[..., 0], gt[..., 0]) + 1)
    inter_h = np.maximum(0, np.minimum(boxes[..., 3], gt[..., 3]) - np.maximum(boxes[..., 1], gt[..., 1]) + 1)
    intersection = inter_w * inter_h
    area = (boxes[..., 2] - boxes[..., 0] + 1) * (boxes[..., 3] - boxes[..., 1] + 1)
    gt_area = (gt[..., 2] - gt[..., 0] + 1) * (gt[..., 3] - gt[..., 1] + 1)
    union = area + gt_area - intersection
    degenerate = union <= 0
    ious = intersection / np.where(degenerate, 1, union)
    ious[degenerate] = 0.0
    return ious


# ----------------------------------------------------------------------------- V1 (largest contour)
def _cv2():
    """OpenCV, imported on first use: ``evaluate.py --multi-contour-eval`` never needs it (start-up time)."""
    import cv2

    return cv2


def contour_boxes_and_areas(binary: np.ndarray, mode: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Bounding boxes (reference convention) and doubled areas of every contour of a mask.

    Args:
        binary: ``[H, W]`` uint8 mask (0 or 255).
        mode: ``cv2.RETR_TREE`` (every contour; the default) or ``cv2.RETR_EXTERNAL`` (outer ones).

    Returns:
        ``boxes`` ``[N, 4]`` int64 ``x0, y0, x1, y1`` (``x1 = min(x + w, W - 1)``)
        and ``twice_area`` ``[N]`` int64 (twice ``cv2.contourArea``, exact), in
        OpenCV's contour order; ``N = 0`` when there is no contour.
    """
    cv2 = _cv2()
    height, width = binary.shape
    contours = cv2.findContours(binary, cv2.RETR_TREE if mode is None else mode, cv2.CHAIN_APPROX_SIMPLE)[0]
    if len(contours) == 0:
        return np.zeros((0, 4), dtype=np.int64), np.zeros(0, dtype=np.int64)
    if len(contours) == 1:
        points = contours[0].reshape(-1, 2).astype(np.int64)
        starts = np.zeros(1, dtype=np.int64)
    else:
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


def largest_contour_ious(u8: np.ndarray, gt_boxes: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """V1: best IoU of the (first) largest contour's box at each given level.

    Where the component sweep (numba) finds no foreground or a single
    component, the answer needs no contour search (the zero box; that
    component's box); only levels with several components run
    ``cv2.findContours(RETR_EXTERNAL)`` for OpenCV's areas and order.

    Args:
        u8: ``[H, W]`` uint8 map.
        gt_boxes: ``[K, 4]`` GT boxes.
        levels: integer levels (mask ``u8 > level``).

    Returns:
        ``[len(levels)]`` float64.
    """
    out = np.empty(len(levels))
    search = np.ones(len(levels), dtype=bool)
    if compiled.kernel() is not None:
        every, components, _, _ = component_sweeps(u8, gt_boxes, levels, holes=False)
        search = components > 1
        out[~search] = every[~search]  # outer-only sweep: the zero box or the single component's box
    empty_iou = None
    cv2 = _cv2() if search.any() else None
    for index in np.flatnonzero(search):
        binary = cv2.threshold(u8, int(levels[index]), 255, cv2.THRESH_BINARY)[1]
        boxes, twice_area = contour_boxes_and_areas(binary, cv2.RETR_EXTERNAL)
        if len(boxes) == 0:
            if empty_iou is None:
                empty_iou = box_ious(np.zeros((1, 4), dtype=np.int64), gt_boxes).max()
            out[index] = empty_iou
            continue
        largest = int(np.argmax(twice_area))  # first of the largest, as max(key=cv2.contourArea)
        out[index] = box_ious(boxes[largest:largest + 1], gt_boxes).max()
    return out


# ----------------------------------------------------------------------------- V2 (every contour)
def all_contour_ious_opencv(u8: np.ndarray, gt_boxes: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """V2 with one ``cv2.findContours(RETR_TREE)`` per level (the fallback without numba)."""
    cv2 = _cv2()
    out = np.empty(len(levels))
    for index, level in enumerate(levels):
        binary = cv2.threshold(u8, int(level), 255, cv2.THRESH_BINARY)[1]
        boxes, _ = contour_boxes_and_areas(binary, cv2.RETR_TREE)
        if len(boxes) == 0:
            boxes = np.zeros((1, 4), dtype=np.int64)
        out[index] = box_ious(boxes, gt_boxes).max()
    return out


_SCRATCH = threading.local()

#: ``way`` of :func:`component_sweeps` -> the kernel's (``sweeps.WAY_*``).
WAYS = {"auto": 0, "sweeps": 1, "runs": 2}


def _workspace(height: int, width: int) -> tuple:
    """This thread's scratch arrays for the kernel, grown as needed, never shrunk.

    Fresh ~2 MB of arrays per map cost page faults and cold caches (measured
    ~1.5 ms of ~5.5 ms per 224x224 map); one set per thread costs neither and
    keeps the metric threads of :mod:`~wsol_lightning.metrics.localization` apart.
    """
    size = (height + 2) * (width + 2)
    scratch = getattr(_SCRATCH, "arrays", None)
    if scratch is None or scratch[2].shape[0] < size or scratch[6].shape[0] < compiled.row_lists_size(width):
        scratch = compiled.workspace(height, width)
        _SCRATCH.arrays = scratch
    return scratch


def component_sweeps(u8: np.ndarray, gt_boxes: np.ndarray, levels: np.ndarray, holes: bool = True,
                     floor: float = 0.0, way: str = "auto", workspace: Optional[tuple] = None,
                     ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The compiled components (:mod:`~wsol_lightning.metrics.sweeps`) at the given levels.

    Args:
        u8: ``[H, W]`` uint8 map.
        gt_boxes: ``[K, 4]`` GT boxes.
        levels: integer levels in [0, 255] (mask ``u8 > level``), any order, repeats allowed.
        holes: include hole contours in the first result (else outer borders only).
        floor: see :func:`all_contour_ious`.
        way: ``auto`` (per map: the level runs on smooth maps, else the sweeps), ``sweeps`` or ``runs``
            (forced; same numbers: for tests and benchmarks).
        workspace: scratch arrays (:func:`compiled.workspace`; default: this thread's, or with ``runs``
            one that holds the map's runs).

    Returns:
        ``(V2 best IoU, foreground component count, outer-only best IoU (-1
        without foreground), hole count)``, each ``[len(levels)]``; holes are
        counted (components - Euler number; the run graph's cycles on the level runs: the same), with or
        without ``holes``.

    Needs numba (:func:`compiled.kernel` is None without it).
    """
    levels = np.asarray(levels, dtype=np.int64)
    distinct, inverse = np.unique(levels, return_inverse=True)
    u8 = np.ascontiguousarray(u8, dtype=np.uint8)
    if workspace is None and way == "runs":  # a column per run of every level: the rises along the rows
        classes = np.searchsorted(distinct, u8, side="left").astype(np.int64)
        runs = int(np.maximum(np.diff(classes, axis=1, prepend=0), 0).sum())
        workspace = compiled.workspace(*u8.shape, columns=runs + u8.shape[0])
    every, components, outer, hole_count = compiled.kernel().level_sweeps(
        u8, distinct, np.ascontiguousarray(gt_boxes, dtype=np.int64), bool(holes), float(floor), WAYS[way],
        *(workspace or _workspace(*u8.shape)))
    return every[inverse], components[inverse], outer[inverse], hole_count[inverse]


def all_contour_ious(u8: np.ndarray, gt_boxes: np.ndarray, levels: np.ndarray, floor: float = 0.0,
                     way: str = "auto") -> np.ndarray:
    """V2: best IoU over every contour's box (holes included) at each given level.

    Args:
        u8: ``[H, W]`` uint8 map.
        gt_boxes: ``[K, 4]`` GT boxes.
        levels: integer levels in [0, 255] (mask ``u8 > level``).
        floor: only IoUs >= ``floor`` need to be exact; one below it may come
            back lower, still below it (hole contours that cannot reach it are
            skipped). ``BoxCounts`` passes its smallest IoU threshold.
        way: see :func:`component_sweeps`.

    Returns:
        ``[len(levels)]`` float64.
    """
    if compiled.kernel() is None:
        return all_contour_ious_opencv(u8, gt_boxes, levels)
    return component_sweeps(u8, gt_boxes, levels, floor=floor, way=way)[0]


# ----------------------------------------------------------------------------- per map
def scoremap_all_contour_ious(scoremap: np.ndarray, gt_boxes: np.ndarray, thresholds: np.ndarray,
                              floor: float = 0.0) -> np.ndarray:
    """V2 of one float map at every CAM threshold, in one compiled call (uint8 map and levels included).

    Args:
        scoremap: ``[H, W]`` float32 or float64 in [0, 1].
        gt_boxes: ``[K, 4]`` GT boxes, K >= 1.
        thresholds: CAM thresholds.
        floor: IoUs below it need not be exact (see :func:`all_contour_ious`).

    Returns:
        ``[len(thresholds)]`` float64.

    Raises:
        ValueError: the map holds NaN or values outside [0, 1].
    """
    kernel = compiled.kernel()
    gt_boxes = np.ascontiguousarray(np.asarray(gt_boxes, dtype=np.int64).reshape(-1, 4))
    thresholds = np.ascontiguousarray(thresholds, dtype=np.float64)
    scoremap = np.asarray(scoremap)
    if kernel is None:
        u8, levels = scoremap_levels(scoremap, thresholds)
        unique_levels, inverse = np.unique(levels, return_inverse=True)
        return all_contour_ious_opencv(u8, gt_boxes, unique_levels)[inverse]
    if scoremap.dtype == np.float32:
        function = kernel.scoremap_best_ious_f4
    else:
        function = kernel.scoremap_best_ious_f8
        scoremap = scoremap.astype(np.float64, copy=False)
    scoremap = np.ascontiguousarray(scoremap)
    best = function(scoremap, thresholds, gt_boxes, float(floor), *_workspace(*scoremap.shape))
    if len(best) != len(thresholds):
        raise ValueError("scoremap_all_contour_ious: the map holds NaN or values outside [0, 1]")
    return best


def best_ious_per_threshold(scoremap: np.ndarray, gt_boxes: np.ndarray, thresholds: np.ndarray,
                            largest: bool = True, every: bool = True, floor: float = 0.0
                            ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """Best IoU at every threshold, for V1 (largest contour) and V2 (all contours).

    Args:
        scoremap: ``[H, W]`` floats in [0, 1] (224x224 for the benchmark).
        gt_boxes: ``[K, 4]`` GT boxes at the score map's scale, K >= 1.
        thresholds: CAM thresholds.
        largest: compute V1.
        every: compute V2.
        floor: V2 IoUs below it need not be exact (see :func:`all_contour_ious`).

    Returns:
        ``(iou_largest, iou_all)``, each ``[len(thresholds)]`` float64, or None
        where not asked for.
    """
    gt_boxes = np.asarray(gt_boxes, dtype=np.int64).reshape(-1, 4)
    if len(gt_boxes) == 0:
        raise ValueError("best_ious_per_threshold: no ground-truth box")
    v1 = None
    if largest:
        u8, levels = scoremap_levels(scoremap, thresholds)
        unique_levels, inverse = np.unique(levels, return_inverse=True)
        v1 = largest_contour_ious(u8, gt_boxes, unique_levels)[inverse]
    v2 = scoremap_all_contour_ious(scoremap, gt_boxes, thresholds, floor) if every else None
    return v1, v2


def correct_at_iou(best_ious: np.ndarray, iou_thresholds: Sequence[float]) -> np.ndarray:
    """``[len(iou_thresholds), T]`` bool: best IoU >= iou/100 at each CAM threshold (as the reference)."""
    return best_ious[None, :] >= (np.asarray(iou_thresholds, dtype=np.float64)[:, None] / 100)


# ----------------------------------------------------------------------------- accumulation
class BoxCounts:
    """Correct-map counts per IoU threshold and CAM threshold, as ``BoxEvaluator.num_correct``.

    Args:
        thresholds: CAM thresholds.
        iou_thresholds: IoU thresholds (%).
        largest: count V1 (largest contour).
        every: count V2 (every contour).

    Counts of several ``BoxCounts`` (chunks, processes) add up with :meth:`merge`.
    """

    def __init__(self, thresholds: np.ndarray, iou_thresholds: Sequence[int], largest: bool = True,
                 every: bool = True) -> None:
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.iou_thresholds = [int(k) for k in iou_thresholds]
        shape = (len(self.iou_thresholds), len(self.thresholds))
        self.largest = np.zeros(shape, dtype=np.int64) if largest else None
        self.every = np.zeros(shape, dtype=np.int64) if every else None
        self.count = 0

    def add(self, scoremap: np.ndarray, gt_boxes: np.ndarray) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """Count one map; returns its ``[len(iou_thresholds), T]`` hits (V1, V2; None if not counted)."""
        v1, v2 = best_ious_per_threshold(scoremap, gt_boxes, self.thresholds, self.largest is not None,
                                         self.every is not None, min(self.iou_thresholds) / 100)
        hits = []
        for best, counts in ((v1, self.largest), (v2, self.every)):
            if best is None:
                hits.append(None)
                continue
            correct = correct_at_iou(best, self.iou_thresholds)
            counts += correct
            hits.append(correct)
        self.count += 1
        return hits[0], hits[1]

    def merge(self, other: "BoxCounts") -> "BoxCounts":
        """Add another accumulator's counts (same thresholds) into this one."""
        for name in ("largest", "every"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine is not None and theirs is not None:
                mine += theirs
        self.count += other.count
        return self

    def max_box_acc(self, multi_contour_eval: bool) -> List[float]:
        """Per IoU threshold, the accuracy (%) at the best CAM threshold, as ``BoxEvaluator.compute``."""
        counts = self.every if multi_contour_eval else self.largest
        if counts is None:
            raise ValueError("max_box_acc: these contours were not counted")
        if self.count == 0:
            raise ValueError("max_box_acc: no score map was counted")
        return [float((row * 100.0 / float(self.count)).max()) for row in counts]
