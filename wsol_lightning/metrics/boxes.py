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
  it). The components of all levels at once are two union-find sweeps over
  the pixels sorted by value (foreground, 8-connected, from the top level
  down; background, 4-connected, from the bottom up), compiled with numba:
  the cost does not grow with the number of contours, so noisy early-epoch
  maps with thousands of small contours per level cost what smooth ones cost.
  The foreground sweep also tracks the Euler number (Gray's bit quads), which
  gives the number of holes per level: the background sweep runs only up to
  the last level with a hole (not at all for most smooth CAMs). Scratch
  arrays are reused per thread (fresh ones per map cost page faults).
* V1 needs OpenCV's own contour areas and order (first of the largest wins
  ties), so it keeps one ``cv2.findContours`` per distinct level, with
  ``RETR_EXTERNAL`` (a hole border never beats its own outer border, which
  comes first; checked like the above) and with every contour's rect and
  shoelace area computed at once with ``np.minimum.reduceat`` & co.

Without numba, V2 falls back to one ``cv2.findContours(RETR_TREE)`` per
distinct level (same numbers, slower). No torch import here:
``scripts/evaluate.py`` stays fast to start.
"""

from __future__ import annotations

import threading
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

try:  # numba makes V2 independent of the number of contours; without it, OpenCV per level
    import numba
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None

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
def contour_boxes_and_areas(binary: np.ndarray, mode: int = cv2.RETR_TREE) -> Tuple[np.ndarray, np.ndarray]:
    """Bounding boxes (reference convention) and doubled areas of every contour of a mask.

    Args:
        binary: ``[H, W]`` uint8 mask (0 or 255).
        mode: ``cv2.RETR_TREE`` (every contour) or ``cv2.RETR_EXTERNAL`` (outer ones).

    Returns:
        ``boxes`` ``[N, 4]`` int64 ``x0, y0, x1, y1`` (``x1 = min(x + w, W - 1)``)
        and ``twice_area`` ``[N]`` int64 (twice ``cv2.contourArea``, exact), in
        OpenCV's contour order; ``N = 0`` when there is no contour.
    """
    height, width = binary.shape
    contours = cv2.findContours(binary, mode, cv2.CHAIN_APPROX_SIMPLE)[0]
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
    if _component_sweeps is not None:
        every, components, _, _ = component_sweeps(u8, gt_boxes, levels, holes=False)
        search = components > 1
        out[~search] = every[~search]  # outer-only sweep: the zero box or the single component's box
    empty_iou = None
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
    out = np.empty(len(levels))
    for index, level in enumerate(levels):
        binary = cv2.threshold(u8, int(level), 255, cv2.THRESH_BINARY)[1]
        boxes, _ = contour_boxes_and_areas(binary, cv2.RETR_TREE)
        if len(boxes) == 0:
            boxes = np.zeros((1, 4), dtype=np.int64)
        out[index] = box_ious(boxes, gt_boxes).max()
    return out


#: 4 x the change of the Euler number (8-connected foreground, 4-connected holes) in one 2x2 quad
#: when a pixel enters it, by which of the quad's other pixels were in: index = 4 * diagonal +
#: 2 * first side + second side. From Gray's bit-quad counts (Euler = (Q1 - Q3 - 2 QD) / 4):
#: e.g. alone -> Q1 (+1); next to its diagonal only -> Q1 becomes QD (-3).
_EULER_DELTA = np.array([1, -1, -1, 1, -3, -1, -1, 1], np.int64)


def _neighbour_tables() -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per mask of entered neighbours (bit k: ring neighbour k, ring N NE E SE S SW W NW / N E S W).

    8-connected: ring-consecutive neighbours (NW and N included) touch, so each circular run of
    entered ones is one component and needs one find, at its first member (all eight: one run).
    4-connected: N, E, S, W do not touch each other, every entered one is a start.
    Also 4 x the Euler number change of a pixel entering with that 8-neighbour mask: the sum of
    :data:`_EULER_DELTA` over its four 2x2 quads (NW, NE, SE, SW).
    """
    starts8, count8, euler8 = np.zeros((256, 4), np.int64), np.zeros(256, np.int64), np.zeros(256, np.int64)
    for mask in range(256):
        bit = [(mask >> k) & 1 for k in range(8)]
        runs = [k for k in range(8) if bit[k] and not bit[(k - 1) % 8]] or ([0] if mask == 255 else [])
        starts8[mask, :len(runs)], count8[mask] = runs, len(runs)
        for diagonal, side_a, side_b in ((7, 0, 6), (1, 0, 2), (3, 2, 4), (5, 4, 6)):  # NW, NE, SE, SW
            euler8[mask] += _EULER_DELTA[4 * bit[diagonal] + 2 * bit[side_a] + bit[side_b]]
    starts4, count4 = np.zeros((16, 4), np.int64), np.zeros(16, np.int64)
    for mask in range(16):
        runs = [k for k in range(4) if (mask >> k) & 1]
        starts4[mask, :len(runs)], count4[mask] = runs, len(runs)
    return starts8, count8, euler8, starts4, count4


_RUN_STARTS8, _RUN_COUNT8, _EULER8, _RUN_STARTS4, _RUN_COUNT4 = _neighbour_tables()


def _component_sweeps_py(u8, needed, gt, holes, floor, ints, flags, cached):  # pragma: no cover - compiled by numba below
    """Best IoU over every contour's box at each needed level (``needed[L]``), from components.

    Foreground sweep: pixels enter from the top value down; after the pixels of
    value ``v`` entered, the union-find sets are the 8-connected components of
    ``u8 > v - 1``. Background sweep: pixels enter from value 0 up; after value
    ``v`` the sets are the 4-connected components of ``u8 <= v``; those not
    touching the image border are the holes of level ``v`` (skipped unless
    ``holes``). The foreground sweep also keeps the Euler number (bit-quad
    changes of each entering pixel), so the number of holes at a level is
    components - Euler: the background sweep stops after the last needed
    level with a hole and runs not at all for maps without holes (smooth CAMs).

    A hole's box lies inside the box of the component around it, so its IoU
    with a GT box is at most the share of that GT box covered by the
    component's box: the background sweep skips levels (and stops early) where
    that bound cannot beat the outer borders' best, or is below ``floor``. With
    ``floor = 0`` every returned IoU is exact; with ``floor > 0`` an IoU below
    ``floor`` may be returned lower than it is, still below ``floor`` (the
    counts at IoU thresholds >= ``floor`` are unchanged).

    ``ints`` ``[8, M]`` int32, ``flags`` ``[2, M]`` bool and ``cached`` ``[2, M]``
    float64 (``M >= (H + 2) * (W + 2)``) are scratch space (contents
    irrelevant; reused between calls, see :func:`_workspace`).

    Returns four ``[256]`` arrays (levels not needed: undefined): the best IoU
    over every contour (outer and hole borders; without ``holes``, outer
    only), the number of foreground components, the best IoU over the outer
    borders (-1 without foreground), and the number of holes.
    """
    height, width = u8.shape
    n = height * width
    pitch = width + 2  # a frame of never-entered pixels around the map: no bounds checks
    flat = u8.ravel()
    starts = np.zeros(NUM_LEVELS + 1, np.int64)
    for i in range(n):
        starts[flat[i] + 1] += 1
    for v in range(NUM_LEVELS):
        starts[v + 1] += starts[v]
    fill = starts[:NUM_LEVELS].copy()
    m = (height + 2) * pitch
    parent = ints[0]
    size = ints[1]
    bx0 = ints[2]
    by0 = ints[3]
    bx1 = ints[4]
    by1 = ints[5]
    roots = ints[6]
    order = ints[7]  # framed indices, by value, raster order within a value
    border = flags[0]
    dirty = flags[1]
    for i in range(n):
        v = flat[i]
        y = i // width
        order[fill[v]] = (y + 1) * pitch + (i - y * width) + 1
        fill[v] += 1

    gt_area = (gt[:, 2] - gt[:, 0] + 1) * (gt[:, 3] - gt[:, 1] + 1)
    # 8-neighbours in ring order (N, NE, E, SE, S, SW, W, NW): ring-consecutive ones touch,
    # so a run of entered ring neighbours is one component and needs one find.
    ring8 = np.array([-pitch, -pitch + 1, 1, pitch + 1, pitch, pitch - 1, -1, -pitch - 1], np.int32)
    ring4 = np.array([-pitch, 1, pitch, -1], np.int32)

    foreground_best = np.full(NUM_LEVELS, -1.0)  # -1: no foreground at that level
    components = np.zeros(NUM_LEVELS, np.int64)
    hole_best = np.zeros(NUM_LEVELS)
    hole_count = np.zeros(NUM_LEVELS, np.int64)  # holes = components - Euler number, at needed levels
    hole_matters = np.zeros(NUM_LEVELS, np.bool_)
    result = np.zeros(NUM_LEVELS)
    euler4 = 0  # 4 x the Euler number (8-connected foreground) of the entered pixels
    last_hole_level = -1

    for sweep in range(2 if holes else 1):
        if sweep == 1 and last_hole_level < 0:
            break  # no hole at any needed level: the background sweep has nothing to add
        parent[:m] = -1
        ring = ring8 if sweep == 0 else ring4
        run_starts = _RUN_STARTS8 if sweep == 0 else _RUN_STARTS4
        run_count = _RUN_COUNT8 if sweep == 0 else _RUN_COUNT4
        count = 0
        for step in range(NUM_LEVELS - 1):
            v = NUM_LEVELS - 1 - step if sweep == 0 else step
            if sweep == 1 and v > last_hole_level:
                break
            for j in range(starts[v], starts[v + 1]):
                p = order[j]
                y = p // pitch - 1
                x = p - (y + 1) * pitch - 1
                on_border = x == 0 or y == 0 or x == width - 1 or y == height - 1
                root = -1
                around = 0  # bit k: ring neighbour k entered
                for k in range(ring.shape[0]):
                    around |= int(parent[p + ring[k]] >= 0) << k
                for t in range(run_count[around]):  # one find per run of touching entered neighbours
                    b = p + ring[run_starts[around, t]]
                    while parent[b] != b:  # find, with path halving
                        parent[b] = parent[parent[b]]
                        b = parent[b]
                    if root < 0:  # p joins b's component
                        root = b
                        parent[p] = b
                        size[b] += 1
                        if x < bx0[b]:
                            bx0[b] = x
                            dirty[b] = True
                        if x > bx1[b]:
                            bx1[b] = x
                            dirty[b] = True
                        if y < by0[b]:
                            by0[b] = y
                            dirty[b] = True
                        if y > by1[b]:
                            by1[b] = y
                            dirty[b] = True
                        if on_border:
                            border[b] = True
                    elif b != root:  # p joins two components: union by size
                        a = root
                        if size[a] < size[b]:
                            a, b = b, a
                        parent[b] = a
                        size[a] += size[b]
                        if bx0[b] < bx0[a]:
                            bx0[a] = bx0[b]
                            dirty[a] = True
                        if bx1[b] > bx1[a]:
                            bx1[a] = bx1[b]
                            dirty[a] = True
                        if by0[b] < by0[a]:
                            by0[a] = by0[b]
                            dirty[a] = True
                        if by1[b] > by1[a]:
                            by1[a] = by1[b]
                            dirty[a] = True
                        if border[b]:
                            border[a] = True
                        root = a
                if sweep == 0:
                    euler4 += _EULER8[around]
                if root < 0:  # a new component
                    parent[p] = p
                    size[p] = 1
                    bx0[p] = x
                    bx1[p] = x
                    by0[p] = y
                    by1[p] = y
                    border[p] = on_border
                    dirty[p] = True
                    roots[count] = p
                    count += 1
            level = v - 1 if sweep == 0 else v
            if not needed[level]:
                continue
            if sweep == 1 and not hole_matters[level]:
                continue  # no hole (no foreground, components without holes), or none can matter
            best = -1.0
            bound = 0.0
            kept = 0
            for i in range(count):
                r = roots[i]
                if parent[r] != r:
                    continue
                roots[kept] = r
                kept += 1
                if sweep == 1 and border[r]:
                    continue
                if dirty[r]:
                    if sweep == 0:
                        x0 = bx0[r]
                        y0 = by0[r]
                        x1 = min(bx1[r] + 1, width - 1)
                        y1 = min(by1[r] + 1, height - 1)
                    else:  # the hole border runs over the foreground pixels around the hole
                        x0 = bx0[r] - 1
                        y0 = by0[r] - 1
                        x1 = min(bx1[r] + 2, width - 1)
                        y1 = min(by1[r] + 2, height - 1)
                    area = (x1 - x0 + 1) * (y1 - y0 + 1)
                    value = 0.0
                    cover = 0.0
                    for k in range(gt.shape[0]):
                        inter_w = max(0, min(x1, gt[k, 2]) - max(x0, gt[k, 0]) + 1)
                        inter_h = max(0, min(y1, gt[k, 3]) - max(y0, gt[k, 1]) + 1)
                        inter = inter_w * inter_h
                        union = area + gt_area[k] - inter
                        iou = inter / union if union > 0 else 0.0
                        if iou > value:
                            value = iou
                        if sweep == 0 and gt_area[k] > 0 and inter > cover * gt_area[k]:
                            cover = inter / gt_area[k]
                    cached[0, r] = value
                    cached[1, r] = cover
                    dirty[r] = False
                if cached[0, r] > best:
                    best = cached[0, r]
                if cached[1, r] > bound:
                    bound = cached[1, r]
            count = kept
            if sweep == 0:
                foreground_best[level] = best
                components[level] = kept
                hole_count[level] = kept - euler4 // 4
                # A hole's box lies inside its component's box, so its IoU with a GT box is at most the
                # share of that GT box the component's box covers: holes only matter where that bound
                # beats the outer borders' best and reaches the floor.
                if hole_count[level] > 0 and bound > best and bound >= floor:
                    hole_matters[level] = True
                    last_hole_level = max(last_hole_level, level)
            else:
                hole_best[level] = best

    empty = 0.0  # no contour: the box [0, 0, 0, 0]
    for k in range(gt.shape[0]):
        inter = max(0, min(0, gt[k, 2]) - max(0, gt[k, 0]) + 1) * max(0, min(0, gt[k, 3]) - max(0, gt[k, 1]) + 1)
        union = 1 + gt_area[k] - inter
        iou = inter / union if union > 0 else 0.0
        if iou > empty:
            empty = iou
    for level in range(NUM_LEVELS):
        if foreground_best[level] < 0:
            result[level] = empty
        else:
            result[level] = max(foreground_best[level], hole_best[level])
    return result, components, foreground_best, hole_count


if numba is not None:
    _component_sweeps = numba.njit(cache=True, nogil=True, boundscheck=False)(_component_sweeps_py)
else:  # pragma: no cover
    _component_sweeps = None


_SCRATCH = threading.local()


def _workspace(height: int, width: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """This thread's scratch arrays for :func:`_component_sweeps`, grown as needed, never shrunk.

    Fresh ~2 MB of arrays per map cost page faults and cold caches (measured
    ~1.5 ms of ~5.5 ms per 224x224 map); one set per thread costs neither and
    keeps the metric threads of :mod:`~wsol_lightning.metrics.localization` apart.
    """
    size = (height + 2) * (width + 2)
    scratch = getattr(_SCRATCH, "arrays", None)
    if scratch is None or scratch[2].shape[1] < size:
        scratch = (np.empty((8, size), np.int32), np.empty((2, size), np.bool_), np.empty((2, size), np.float64))
        _SCRATCH.arrays = scratch
    return scratch


def component_sweeps(u8: np.ndarray, gt_boxes: np.ndarray, levels: np.ndarray, holes: bool = True,
                     floor: float = 0.0) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The compiled sweeps at the given levels (``floor``: see :func:`all_contour_ious`).

    Returns:
        ``(V2 best IoU, foreground component count, outer-only best IoU, hole
        count)``, each ``[len(levels)]``; holes are counted from the Euler
        number (components - Euler), with or without ``holes``.

    Needs numba (``_component_sweeps`` is None without it).
    """
    needed = np.zeros(NUM_LEVELS, dtype=np.bool_)
    needed[levels] = True
    ints, flags, cached = _workspace(*np.shape(u8))
    every, components, outer, hole_count = _component_sweeps(
        np.ascontiguousarray(u8, dtype=np.uint8), needed, np.ascontiguousarray(gt_boxes, dtype=np.int64), holes,
        float(floor), ints, flags, cached)
    return every[levels], components[levels], outer[levels], hole_count[levels]


def all_contour_ious(u8: np.ndarray, gt_boxes: np.ndarray, levels: np.ndarray, floor: float = 0.0) -> np.ndarray:
    """V2: best IoU over every contour's box (holes included) at each given level.

    Args:
        u8: ``[H, W]`` uint8 map.
        gt_boxes: ``[K, 4]`` GT boxes.
        levels: integer levels in [0, 255] (mask ``u8 > level``).
        floor: only IoUs >= ``floor`` need to be exact; one below it may come
            back lower, still below it (hole contours that cannot reach it are
            skipped). ``BoxCounts`` passes its smallest IoU threshold.

    Returns:
        ``[len(levels)]`` float64.
    """
    if _component_sweeps is None:
        return all_contour_ious_opencv(u8, gt_boxes, levels)
    return component_sweeps(u8, gt_boxes, levels, floor=floor)[0]


# ----------------------------------------------------------------------------- per map
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
    u8, levels = scoremap_levels(scoremap, thresholds)
    unique_levels, inverse = np.unique(levels, return_inverse=True)
    v1 = largest_contour_ious(u8, gt_boxes, unique_levels)[inverse] if largest else None
    v2 = all_contour_ious(u8, gt_boxes, unique_levels, floor)[inverse] if every else None
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
