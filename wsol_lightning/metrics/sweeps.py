"""Connected components of a score map at every CAM threshold at once: the compiled core of V2.

The contours of ``cv2.findContours(RETR_TREE)`` at a level are one outer
border per 8-connected foreground component (box = the component's) and one
hole border per 4-connected background component that does not touch the
image border (box = the hole's, grown by one pixel); see
:mod:`wsol_lightning.metrics.boxes`. Only the levels the thresholds ask for
matter, so each pixel gets its *class*: the number of asked levels below its
uint8 value (the mask at the i-th level is ``class > i``). Two ways build the
components of all levels, with the same numbers; :func:`_level_sweeps` takes,
per map, the level runs where a map has fewer runs than
:data:`RUNS_PER_PIXEL` per pixel (smooth CAMs), else the sweeps.

**The sweeps** (speckled and noisy maps): two union-find sweeps over pixels,

* foreground: classes from the top down, 8-connected; after class ``c`` the
  sets are the components of the level ``c - 1``;
* background (holes): classes from the bottom up, 4-connected; only up to the
  last level where a hole exists and could matter (below).

What makes them cheap (a 224x224 map in one or two milliseconds, however many
contours):

* whole-image passes that compilers vectorize: classes (a 256-entry table),
  and for every pixel the bit masks of its neighbours that enter *before* it
  in either sweep (higher, resp. lower class, or the same class earlier in
  raster order);
* *class runs*: a row's run of one class enters as one element, joined from
  its first pixel's mask; a later pixel of the run touches only neighbours
  already joined through the pixel on its left, unless a new piece of
  neighbours starts above, below or to the right of it (a table, :data:`CUT8`
  / :data:`CUT4`), and only such pixels join more. Every pixel's parent
  starts at its run's first pixel;
* the Euler number of the foreground (components - holes) per level from the
  masks (Gray's bit quads): the background sweep is skipped where no hole
  exists, and where no hole can beat the outer borders (a hole's box lies in
  its component's box, so its IoU is at most the share of a GT box covered by
  that box) or reach ``floor``;
* a component's IoU is recomputed only when its box grew, and only
  components whose box covers at least ``floor`` of a GT box are looked at per
  level (with ``floor = 0``, all).

**The level runs** (smooth maps): one scan of each row gives the runs of every
level at once: where the class rises from ``a`` to ``b``, runs of the levels
``a .. b - 1`` open; where it falls back, they close. All levels' runs
together number the rows' summed rises (:func:`rises`): about a quarter of
the pixels on a smooth CAM (every pixel of which the sweeps touch twice), more
than the pixels on a speckled or noisy one. Each run, as it closes, joins the
runs of its level in the row above that touch it (8-connected: columns
``s - 1 .. e + 1``), in a union-find over runs whose roots hold their
component's box; each level's runs of the row above are a short list, kept
per level and row parity, so nothing is searched. Then, without touching a
pixel again:

* components: the roots; the outer borders' boxes are theirs;
* holes: a join of a run to a component it already belongs to closes a cycle
  of the run graph, and the graph's independent cycles are the level's holes
  (4-connected background components inside 8-connected foreground: Euler's
  formula on the runs); where a level has a hole that could matter (as
  above), a 4-connected union-find over the gaps between that level's runs
  gives the holes' boxes.

Everything here compiles with numba: just in time (``nogil``, for the metric
threads of training) or ahead of time into an extension module that loads
without numba (:mod:`wsol_lightning.metrics.compiled`, for ``evaluate.py``).
It is one file because numba's disk cache of a function is invalidated only by
changes to the file that defines it, not to the functions it calls in others.
"""

from __future__ import annotations

import numba
import numpy as np

NUM_LEVELS = 256

#: ``way`` of :func:`level_sweeps`: pick per map (the default), the sweeps, the level runs.
WAY_AUTO, WAY_SWEEPS, WAY_RUNS = 0, 1, 2

_jit = numba.njit(cache=True, nogil=True, boundscheck=False)

#: Below this many runs per pixel (all levels' runs over ``height * width``) a map takes the level runs, above
#: it the sweeps. Measured on the benchmark's CAM-like maps with speckle of rising amplitude, one random GT
#: box each, floor 0.3 (2026-12-08, JIT kernels, each way forced): the level runs cost 0.45-0.5x the sweeps
#: at 0.28-0.34 runs per pixel (smooth maps), 0.62x at 0.48, 0.74x at 0.61, 0.85x at 0.76, 0.97x at 0.91,
#: 1.16x at 1.21 (speckled maps have about 1.6).
RUNS_PER_PIXEL = 0.85

#: Rows of the int32 workspace (one column per framed pixel; :func:`compiled.workspace` allocates it), for
#: the sweeps (``I_*``), and for the level runs (``R_*``: a column per run; ``G_*``: gaps, for holes).
(I_PARENT, I_SIZE, I_X0, I_Y0, I_X1, I_Y1, I_CAND, I_DIRTY_LIST, I_RAW_FIRST, I_RAW_LAST, I_RAW_CLASS, I_RUN_OF,
 I_SEG_FIRST) = range(13)
(R_PARENT, R_X0, R_X1, R_Y0, R_Y1, R_LEVEL, R_ROW, R_START, R_END, R_NEXT,
 G_PARENT, G_X0, G_X1, G_Y0, G_Y1, G_BORDER, G_START, G_END, G_NODE) = range(19)
NUM_INT32 = 19
# int64 row: sorted run info (``length << 32 | y``); uint8: foreground then background masks
# (two per pixel); bool rows: border, dirty, candidate; float64 rows: cached IoU, cached GT share;
# int32 row lists of the level runs (:func:`row_lists_size`).


def _tables():
    """Per neighbour mask: ring runs (one find each), 4 x Euler change, and whether a run's pixel joins more.

    Foreground masks: bit k = ring neighbour k in the order N NE E SE S SW W NW
    (ring-consecutive neighbours touch, so a circular run of entered ones is one
    component: one find at its first member). Background masks: bits N E S W
    NW SW (4-connected: each entered one is its own start).
    """
    starts8, count8, euler8 = np.zeros((256, 4), np.int64), np.zeros(256, np.int64), np.zeros(256, np.int64)
    cut8 = np.zeros(256, np.bool_)
    delta = (1, -1, -1, 1, -3, -1, -1, 1)  # 4 x Euler change in a 2x2 quad, by 4 diagonal + 2 side + side
    for mask in range(256):
        bit = [(mask >> k) & 1 for k in range(8)]
        runs = [k for k in range(8) if bit[k] and not bit[(k - 1) % 8]] or ([0] if mask == 255 else [])
        starts8[mask, :len(runs)], count8[mask] = runs, len(runs)
        for diagonal, side_a, side_b in ((7, 0, 6), (1, 0, 2), (3, 2, 4), (5, 4, 6)):  # NW, NE, SE, SW quads
            euler8[mask] += delta[4 * bit[diagonal] + 2 * bit[side_a] + bit[side_b]]
        n, ne, e, se, s = bit[0], bit[1], bit[2], bit[3], bit[4]
        # new neighbours of a pixel, next to its left one in a run: NE, SE (and E at the run's end);
        # N and S were the left pixel's NE and SE, already joined
        cut8[mask] = (ne and not n) or (se and not s) or (e and not ne and not se)
    starts4, count4, cut4 = np.zeros((64, 4), np.int64), np.zeros(64, np.int64), np.zeros(64, np.bool_)
    for mask in range(64):
        runs = [k for k in range(4) if (mask >> k) & 1]
        starts4[mask, :len(runs)], count4[mask] = runs, len(runs)
        n, e, s, nw, sw = mask & 1, (mask >> 1) & 1, (mask >> 2) & 1, (mask >> 4) & 1, (mask >> 5) & 1
        # 4-connected: N is new unless NW (the left pixel's N) is in, S likewise, E always
        cut4[mask] = (n and not nw) or (s and not sw) or e
    return starts8, count8, euler8, cut8, starts4, count4, cut4


RUN_STARTS8, RUN_COUNT8, EULER8, CUT8, RUN_STARTS4, RUN_COUNT4, CUT4 = _tables()


# ----------------------------------------------------------------------------- whole-image passes
@_jit
def _classes(u8, lut, cls):
    """Framed class image (frame: -1, entered by neither sweep)."""
    height, width = u8.shape
    pitch = width + 2
    size = (height + 2) * pitch
    for i in range(pitch):
        cls[i] = -1
        cls[size - pitch + i] = -1
    for y in range(height):
        base = (y + 1) * pitch
        cls[base] = -1
        cls[base + pitch - 1] = -1
        row = u8[y]
        out = cls[base + 1:base + 1 + width]
        for x in range(width):
            out[x] = lut[row[x]]


@_jit
def _masks(cls, fg_masks, bg_masks, height, width):
    """Neighbours entered before each pixel: foreground sweep (class descending, raster order within a
    class; ring bits N NE E SE S SW W NW) and background sweep (ascending; bits N E S W NW SW)."""
    pitch = width + 2
    for y in range(1, height + 1):
        above, here, below = (y - 1) * pitch, y * pitch, (y + 1) * pitch
        c0 = cls[here + 1:here + 1 + width]
        n, ne, nw = cls[above + 1:above + 1 + width], cls[above + 2:above + 2 + width], cls[above:above + width]
        e, w = cls[here + 2:here + 2 + width], cls[here:here + width]
        s, se, sw = cls[below + 1:below + 1 + width], cls[below + 2:below + 2 + width], cls[below:below + width]
        fg = fg_masks[here + 1:here + 1 + width]
        bg = bg_masks[here + 1:here + 1 + width]
        for x in range(width):  # written so that it vectorizes (frame: -1, entered by neither sweep)
            c = c0[x]
            v = np.uint8(n[x] >= c)
            v |= np.uint8(ne[x] >= c) << 1
            v |= np.uint8(e[x] > c) << 2
            v |= np.uint8(se[x] > c) << 3
            v |= np.uint8(s[x] > c) << 4
            v |= np.uint8(sw[x] > c) << 5
            v |= np.uint8(w[x] >= c) << 6
            v |= np.uint8(nw[x] >= c) << 7
            fg[x] = v
            u = np.uint8((n[x] >= 0) & (n[x] <= c))
            u |= np.uint8((e[x] >= 0) & (e[x] < c)) << 1
            u |= np.uint8((s[x] >= 0) & (s[x] < c)) << 2
            u |= np.uint8((w[x] >= 0) & (w[x] <= c)) << 3
            u |= np.uint8((nw[x] >= 0) & (nw[x] <= c)) << 4
            u |= np.uint8((sw[x] >= 0) & (sw[x] < c)) << 5
            bg[x] = u


@_jit
def _runs(cls, height, width, nclass, ints, info, cstart):
    """Runs of one class along the rows, sorted by class (raster order within a class).

    ``ints[I_RUN_OF][p]`` is the first pixel of ``p``'s run (every sweep starts
    its parents from it). Returns the number of runs; ``cstart[c]:cstart[c + 1]``
    are class ``c``'s in ``ints[I_SEG_FIRST]`` / ``info[0]`` (``length << 32 | y``).
    """
    pitch = width + 2
    raw_first, raw_last, raw_class, run_of = ints[I_RAW_FIRST], ints[I_RAW_LAST], ints[I_RAW_CLASS], ints[I_RUN_OF]
    count = 0
    for y in range(1, height + 1):
        base = y * pitch
        prev = -2
        first = 0
        for x in range(1, width + 1):  # branch-free: a new run is one more index, not a jump
            p = base + x
            c = cls[p]
            start = c != prev
            count += start
            first = p if start else first
            run_of[p] = first
            k = count - 1
            raw_first[k] = first
            raw_class[k] = c
            raw_last[k] = p
            prev = c
    cstart[:] = 0
    for k in range(count):
        cstart[raw_class[k] + 1] += 1
    for c in range(nclass):
        cstart[c + 1] += cstart[c]
    seg_first, seg_info = ints[I_SEG_FIRST], info[0]
    fill = cstart[:nclass].copy()
    for k in range(count):
        c = raw_class[k]
        seg_first[fill[c]] = raw_first[k]
        seg_info[fill[c]] = (np.int64(raw_last[k] - raw_first[k] + 1) << 32) | (raw_first[k] // pitch - 1)
        fill[c] += 1
    return count


# ----------------------------------------------------------------------------- the sweeps
@_jit
def _find(parent, b):
    """The root of ``b``'s set, halving the path on the way."""
    while parent[b] != b:
        parent[b] = parent[parent[b]]
        b = parent[b]
    return b


@_jit
def _iou_and_share(x0, y0, x1, y1, gt, gt_area):
    """Best IoU of the box with the GT boxes (a union <= 0 counts 0) and the largest share of a GT box
    it covers."""
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    value = 0.0
    share = 0.0
    for k in range(gt.shape[0]):
        inter = (max(0, min(x1, gt[k, 2]) - max(x0, gt[k, 0]) + 1)
                 * max(0, min(y1, gt[k, 3]) - max(y0, gt[k, 1]) + 1))
        union = area + gt_area[k] - inter
        iou = inter / union if union > 0 else 0.0
        if iou > value:
            value = iou
        if gt_area[k] > 0 and inter / gt_area[k] > share:
            share = inter / gt_area[k]
    return value, share


@_jit
def _sweep(background, cls_from, cls_to, cstart, height, width, gt, floor, ints, info, masks, flags, cached,
           evaluate, best_out, count_out, bound_out, euler_out):
    """One union-find sweep over the runs of classes ``cls_from`` .. ``cls_to`` (either direction).

    A run joins the components of its first pixel's entered neighbours (one
    find per ring run of them) and of those of any later pixel whose mask says
    a new piece of neighbours starts there (:data:`CUT8` / :data:`CUT4`); the
    other pixels' entered neighbours touch ones already joined.

    After each class ``c`` whose level (``c - 1`` foreground, ``c`` background)
    has ``evaluate[level]``: ``best_out[level]`` = best IoU over the
    candidates' boxes (outer borders, or holes not touching the border; -1
    without any component, 0 if none can reach ``floor``), ``count_out`` the
    number of components, ``bound_out`` the best GT share covered by a
    candidate's box, ``euler_out`` 4 x the Euler number (foreground).
    """
    pitch = width + 2
    parent, size = ints[I_PARENT], ints[I_SIZE]
    bx0, by0, bx1, by1 = ints[I_X0], ints[I_Y0], ints[I_X1], ints[I_Y1]
    cand, dirty_list = ints[I_CAND], ints[I_DIRTY_LIST]
    seg_first, seg_info = ints[I_SEG_FIRST], info[0]
    border, dirty, in_cand = flags[0], flags[1], flags[2]
    size_ = (height + 2) * pitch
    parent[:size_] = ints[I_RUN_OF][:size_]  # every pixel's parent: its run's first pixel (set when the run enters)
    gt_area = (gt[:, 2] - gt[:, 0] + 1) * (gt[:, 3] - gt[:, 1] + 1)
    ring8 = np.array([-pitch, -pitch + 1, 1, pitch + 1, pitch, pitch - 1, -1, -pitch - 1], np.int64)
    ring4 = np.array([-pitch, 1, pitch, -1], np.int64)
    step_dir = 1 if cls_to >= cls_from else -1
    ncand = 0
    ndirty = 0
    ncomp = 0
    euler4 = 0
    for c in range(cls_from, cls_to + step_dir, step_dir):
        for j in range(cstart[c], cstart[c + 1]):
            p = seg_first[j]
            run = seg_info[j]
            y = run & 0xFFFFFFFF
            length = run >> 32
            x = p - (y + 1) * pitch - 1
            x_last = x + length - 1
            on_border = background and (y == 0 or x == 0 or y == height - 1 or x_last == width - 1)
            root = -1
            for q in range(p, p + length):
                mask = masks[q]
                if background:
                    if q != p:
                        if not CUT4[mask]:
                            continue
                        mask &= 7  # not W: the run itself, already joined
                    mask &= 15
                    runs = RUN_COUNT4[mask]
                else:
                    euler4 += EULER8[mask]
                    if q != p:
                        if not CUT8[mask]:
                            continue
                        mask &= 0xBF  # not W: the run itself, already joined
                    runs = RUN_COUNT8[mask]
                for t in range(runs):  # one find per run of touching entered neighbours
                    if background:
                        b = q + ring4[RUN_STARTS4[mask, t]]
                    else:
                        b = q + ring8[RUN_STARTS8[mask, t]]
                    b = _find(parent, b)
                    if root < 0:
                        root = b
                    elif b != root:  # union by size
                        a = root
                        if size[a] < size[b]:
                            a, b = b, a
                        parent[b] = a
                        size[a] += size[b]
                        ncomp -= 1
                        grown = False
                        if bx0[b] < bx0[a]:
                            bx0[a] = bx0[b]
                            grown = True
                        if bx1[b] > bx1[a]:
                            bx1[a] = bx1[b]
                            grown = True
                        if by0[b] < by0[a]:
                            by0[a] = by0[b]
                            grown = True
                        if by1[b] > by1[a]:
                            by1[a] = by1[b]
                            grown = True
                        if border[b]:
                            border[a] = True
                        if grown and not dirty[a]:
                            dirty[a] = True
                            dirty_list[ndirty] = a
                            ndirty += 1
                        root = a
                if q != p:
                    continue
                # the run enters (before its later pixels' own neighbours join it)
                if root < 0:  # a new component
                    root = p
                    parent[p] = p
                    size[p] = length
                    bx0[p] = x
                    bx1[p] = x_last
                    by0[p] = y
                    by1[p] = y
                    border[p] = on_border
                    in_cand[p] = False
                    dirty[p] = True
                    dirty_list[ndirty] = p
                    ndirty += 1
                    ncomp += 1
                else:
                    parent[p] = root
                    size[root] += length
                    grown = False
                    if x < bx0[root]:
                        bx0[root] = x
                        grown = True
                    if x_last > bx1[root]:
                        bx1[root] = x_last
                        grown = True
                    if y < by0[root]:
                        by0[root] = y
                        grown = True
                    if y > by1[root]:
                        by1[root] = y
                        grown = True
                    if on_border:
                        border[root] = True
                    if grown and not dirty[root]:
                        dirty[root] = True
                        dirty_list[ndirty] = root
                        ndirty += 1
        level = c if background else c - 1
        if level < 0 or not evaluate[level]:
            continue
        for i in range(ndirty):  # boxes that grew: IoU and GT share again
            r = dirty_list[i]
            if parent[r] != r or not dirty[r]:
                continue
            dirty[r] = False
            if background:
                if border[r]:
                    continue
                x0, y0 = bx0[r] - 1, by0[r] - 1  # the hole border runs over the pixels around the hole
                x1, y1 = min(bx1[r] + 2, width - 1), min(by1[r] + 2, height - 1)
            else:
                x0, y0 = bx0[r], by0[r]
                x1, y1 = min(bx1[r] + 1, width - 1), min(by1[r] + 1, height - 1)
            value, cover = _iou_and_share(x0, y0, x1, y1, gt, gt_area)
            cached[0, r] = value
            cached[1, r] = cover
            if cover >= floor and not in_cand[r]:  # a box only grows: once a candidate, always
                in_cand[r] = True
                cand[ncand] = r
                ncand += 1
        ndirty = 0
        best = -1.0
        bound = 0.0
        kept = 0
        for i in range(ncand):
            r = cand[i]
            if parent[r] != r or (background and border[r]):
                continue
            cand[kept] = r
            kept += 1
            if cached[0, r] > best:
                best = cached[0, r]
            if cached[1, r] > bound:
                bound = cached[1, r]
        ncand = kept
        if ncomp > 0 and best < 0:
            best = 0.0  # components, none of which can reach the floor (IoU <= GT share < floor)
        best_out[level] = best
        count_out[level] = ncomp
        bound_out[level] = bound
        euler_out[level] = euler4


# ----------------------------------------------------------------------------- the level runs
@_jit
def row_lists_size(width):
    """Length of the int32 row-list workspace: per level and row parity, ``(start, end, root)`` of up to
    ``ceil(width / 2)`` runs (runs of one row are at least one pixel apart)."""
    return NUM_LEVELS * 2 * 3 * ((width + 1) // 2)


@_jit
def _scan_classes(cls, height, width, row_top, column_top):
    """One pass over the framed class image (pitch ``width + 2``): the number of runs of every level (per row
    the summed rises of the class, from 0 before the first pixel), and each row's and column's top class
    (``row_top[height]``, ``column_top[width]``)."""
    pitch = width + 2
    total = 0
    column_top[:] = 0
    for y in range(height):
        row = cls[(y + 1) * pitch + 1:(y + 1) * pitch + 1 + width]
        prev = np.int64(0)
        top = np.int64(0)
        for x in range(width):  # written so that it vectorizes
            c = np.int64(row[x])
            total += max(c - prev, 0)
            top = max(top, c)
            column_top[x] = max(column_top[x], c)
            prev = c
        row_top[y] = top
    return total


@_jit
def rises(cls, height, width):
    """The number of runs of every level of a framed class image (see :func:`_scan_classes`)."""
    return _scan_classes(cls, height, width, np.zeros(height, np.int64), np.zeros(width, np.int64))


@_jit
def _first_hopeless_level(row_top, column_top, nlev, gt, gt_area, floor):
    """The lowest level from which on no contour can reach an IoU of ``floor``: the box of the whole
    foreground there covers less than ``floor`` of every GT box (a contour's box lies inside it, and an IoU
    is at most the share of the GT box covered). ``nlev`` where every level can (always with ``floor`` 0).

    The foreground's box shrinks as the level rises (its rows are those whose top class is above the level),
    so one walk up the levels finds it.
    """
    if floor <= 0.0:
        return nlev
    height, width = row_top.shape[0], column_top.shape[0]
    y0, y1, x0, x1 = 0, height - 1, 0, width - 1
    for level in range(nlev):
        while y0 <= y1 and row_top[y0] <= level:
            y0 += 1
        while y1 >= y0 and row_top[y1] <= level:
            y1 -= 1
        while x0 <= x1 and column_top[x0] <= level:
            x0 += 1
        while x1 >= x0 and column_top[x1] <= level:
            x1 -= 1
        if y0 > y1:  # no foreground from here on
            return level
        # the largest share of a GT box that the box covers (as a contour's box), divided as an IoU is:
        # 7 / 100 >= 0.07 where 0.07 * 100 > 7
        if _iou_and_share(x0, y0, min(x1 + 1, width - 1), min(y1 + 1, height - 1), gt, gt_area)[1] < floor:
            return level
    return nlev


@_jit
def _level_runs_of_rows(cls, height, width, nlev, limit, ints, row_lists, first_run, multi_rows):
    """Every level's runs below ``limit``, joined 8-connected to the touching runs of their level in the row
    above.

    Fills the run rows of ``ints`` (``R_*``; a root's box and level are its
    component's; ``R_NEXT`` links each level's runs in raster order from
    ``first_run[level]``, -1 ending it), the first and last row where a level
    has two runs or more (``multi_rows[level]``, ``[height, -1]`` where none),
    and returns the number of runs and, per level, the joins that closed a
    cycle (its hole count).
    """
    pitch = width + 2
    parent, bx0, bx1, by0, by1 = ints[R_PARENT], ints[R_X0], ints[R_X1], ints[R_Y0], ints[R_Y1]
    level_of, row_of, start_of, end_of, next_of = ints[R_LEVEL], ints[R_ROW], ints[R_START], ints[R_END], ints[R_NEXT]
    last_run = np.full(nlev, -1, np.int64)
    first_run[:] = -1
    multi_rows[:, 0] = height
    multi_rows[:, 1] = -1
    stride = 6 * nlev  # entry j of every level's list (both parities, (start, end, root) each) lies together
    opened = np.zeros(nlev + 1, np.int64)  # where each level's current run opened
    count = np.zeros(2 * nlev + 2, np.int64)  # runs per (level, row parity)
    cursor = np.zeros(nlev + 1, np.int64)  # first run of the row above that can still touch
    cycles = np.zeros(nlev, np.int64)
    change_x = np.empty(width + 1, np.int64)
    change_class = np.empty(width + 1, np.int64)
    held = np.zeros(2, np.int64)  # per parity: levels of the row whose lists it holds
    n = 0
    for y in range(height):
        base = (y + 1) * pitch + 1
        parity = y & 1
        m = 0  # the row's class changes (branch-free), then the fall to 0 past its end
        prev = np.int64(0)
        top = np.int64(0)
        for x in range(width):
            c = min(np.int64(cls[base + x]), limit)
            change_x[m] = x
            change_class[m] = c
            m += c != prev
            top = max(top, c)
            prev = c
        change_x[m] = width
        change_class[m] = 0
        m += prev != 0
        for level in range(held[parity]):  # this parity's lists belong to two rows up: empty them
            count[2 * level + parity] = 0
        for level in range(top):
            cursor[level] = 0
        held[parity] = top
        prev = 0
        for i in range(m):
            x = change_x[i]
            c = change_class[i]
            if c == prev + 1:  # most rises on a smooth map: one level opens
                opened[prev] = x
            else:
                for level in range(prev, c):
                    opened[level] = x
            end = x - 1
            for level in range(c, prev):
                k = n
                n += 1
                start = opened[level]
                row_of[k] = y
                start_of[k] = start
                end_of[k] = end
                next_of[k] = -1
                if last_run[level] >= 0:
                    next_of[last_run[level]] = k
                else:
                    first_run[level] = k
                last_run[level] = k
                slot = 2 * level + parity
                above = 3 * (slot ^ 1)
                above_count = count[slot ^ 1]
                p = cursor[level]
                while p < above_count and row_lists[above + stride * p + 1] < start - 1:
                    p += 1
                cursor[level] = p  # the next run of this row starts further right
                root = -1
                while p < above_count and row_lists[above + stride * p] <= end + 1:
                    b = _find(parent, row_lists[above + stride * p + 2])
                    if root < 0:  # the run joins this component
                        root = b
                        bx0[b] = min(bx0[b], start)
                        bx1[b] = max(bx1[b], end)
                        by1[b] = y
                    elif b == root:  # a second join to its own component: a cycle, a hole
                        cycles[level] += 1
                    else:  # two components merge; the older root stays
                        a = min(b, root)
                        b = max(b, root)
                        parent[b] = a
                        bx0[a] = min(bx0[a], bx0[b])
                        bx1[a] = max(bx1[a], bx1[b])
                        by0[a] = min(by0[a], by0[b])
                        by1[a] = max(by1[a], by1[b])
                        root = a
                    p += 1
                if root < 0:  # a new component
                    root = k
                    bx0[k] = start
                    bx1[k] = end
                    by0[k] = y
                    by1[k] = y
                    level_of[k] = level
                parent[k] = root
                j = count[slot]
                count[slot] = j + 1
                if j == 1:  # a second run of the level in this row
                    multi_rows[level, 0] = min(multi_rows[level, 0], y)
                    multi_rows[level, 1] = y
                here = 3 * slot + stride * j
                row_lists[here] = start
                row_lists[here + 1] = end
                row_lists[here + 2] = root
            prev = c
    return n, cycles


@_jit
def _best_hole(first, low, high, ints, height, width, gt, gt_area):
    """Best IoU over the hole borders of one level (-1 without a hole): its runs from ``first`` on (linked by
    ``R_NEXT``, in raster order), ``low``, ``high`` its first and last row with two runs or more.

    Holes: 4-connected components of the gaps between the runs that touch no
    border. A gap at either end of a row, or in the first or last row, touches
    it; so do the gaps that overlap one of those in the row above or below. Only
    the other gaps (between two runs, inside the image) are union-find nodes, and
    the row lists hold the border ones as -1. Only rows with two runs or more
    have such gaps, so only those rows and the two around them are looked at. A
    hole border's box is the hole's grown by one pixel (``x1 = min(x + w, W - 1)``
    as for every box).
    """
    row_of, start_of, end_of, next_of = ints[R_ROW], ints[R_START], ints[R_END], ints[R_NEXT]
    parent, gx0, gx1, gy0, gy1, border = (ints[G_PARENT], ints[G_X0], ints[G_X1], ints[G_Y0], ints[G_Y1],
                                          ints[G_BORDER])
    list_start, list_end, list_node = ints[G_START], ints[G_END], ints[G_NODE]  # two rows' gap lists
    stride = width + 1  # gaps in a row
    if high < 0:
        return -1.0
    low, high = max(low - 1, 0), min(high + 1, height - 1)
    run = first
    while run >= 0 and row_of[run] < low:
        run = next_of[run]
    nodes = 0
    above_count = 0
    for y in range(low, high + 1):
        here = (y & 1) * stride
        above = stride - here
        count = 0
        x = 0
        while True:  # the gaps of row y: before each run, and after the last
            if run >= 0 and row_of[run] == y:
                stop = start_of[run] - 1
                after = end_of[run] + 1
                run = next_of[run]
            else:
                stop = width - 1
                after = -1
            if stop >= x:
                node = -1
                if not (x == 0 or stop == width - 1 or y == 0 or y == height - 1):
                    node = nodes
                    nodes += 1
                    parent[node] = node
                    gx0[node] = x
                    gx1[node] = stop
                    gy0[node] = y
                    gy1[node] = y
                    border[node] = False
                list_start[here + count] = x
                list_end[here + count] = stop
                list_node[here + count] = node
                count += 1
            if after < 0:
                break
            x = after
        p = 0
        for g in range(count):  # 4-connected: gaps that overlap one of the row above
            g_start, g_end, g_node = list_start[here + g], list_end[here + g], list_node[here + g]
            while p < above_count and list_end[above + p] < g_start:
                p += 1
            q = p
            while q < above_count and list_start[above + q] <= g_end:
                q_node = list_node[above + q]
                if g_node >= 0 or q_node >= 0:
                    if q_node < 0:
                        border[_find(parent, g_node)] = True
                    elif g_node < 0:
                        border[_find(parent, q_node)] = True
                    else:
                        a = _find(parent, q_node)
                        b = _find(parent, g_node)
                        if a != b:
                            a, b = min(a, b), max(a, b)
                            parent[b] = a
                            gx0[a] = min(gx0[a], gx0[b])
                            gx1[a] = max(gx1[a], gx1[b])
                            gy0[a] = min(gy0[a], gy0[b])
                            gy1[a] = max(gy1[a], gy1[b])
                            border[a] = border[a] | border[b]
                q += 1
        above_count = count
    best = -1.0
    for g in range(nodes):
        if parent[g] == g and not border[g]:
            value, _ = _iou_and_share(gx0[g] - 1, gy0[g] - 1, min(gx1[g] + 2, width - 1),
                                      min(gy1[g] + 2, height - 1), gt, gt_area)
            if value > best:
                best = value
    return best


@_jit
def _level_runs(cls, height, width, nlev, gt, holes, floor, row_top, column_top, ints, row_lists):
    """The levels ``0 .. nlev - 1`` of a framed class image, over row runs (``row_top``, ``column_top``: from
    :func:`_scan_classes`).

    Returns what :func:`_level_sweeps` returns (best IoU over every contour
    with ``holes``, else outer borders only, with the zero box where a level
    has no foreground; component count; outer-only best IoU, -1 without
    foreground; hole count), each ``[nlev]``. With ``floor``, contours are
    looked at only where one could reach it (an IoU below ``floor`` may come
    back lower, still below it): hole borders only where one could, and no
    level from the first at which the whole foreground's box cannot
    (:func:`_first_hopeless_level`; there every result is 0 and the counts
    -1).
    """
    gt_area = (gt[:, 2] - gt[:, 0] + 1) * (gt[:, 3] - gt[:, 1] + 1)
    limit = _first_hopeless_level(row_top, column_top, nlev, gt, gt_area, floor)
    first_run, multi_rows = np.empty(nlev, np.int64), np.empty((nlev, 2), np.int64)
    n, cycles = _level_runs_of_rows(cls, height, width, nlev, limit, ints, row_lists, first_run, multi_rows)
    parent, bx0, bx1, by0, by1, level_of = (ints[R_PARENT], ints[R_X0], ints[R_X1], ints[R_Y0], ints[R_Y1],
                                            ints[R_LEVEL])
    outer = np.full(nlev, -1.0)
    share = np.zeros(nlev)
    components = np.zeros(nlev, np.int64)
    for k in range(n):
        if parent[k] == k:
            level = level_of[k]
            components[level] += 1
            value, covered = _iou_and_share(bx0[k], by0[k], min(bx1[k] + 1, width - 1), min(by1[k] + 1, height - 1),
                                            gt, gt_area)
            outer[level] = max(outer[level], value)
            share[level] = max(share[level], covered)
    result = outer.copy()
    if holes:
        for level in range(nlev):
            if cycles[level] > 0 and share[level] > outer[level] and share[level] >= floor:
                result[level] = max(result[level], _best_hole(first_run[level], multi_rows[level, 0],
                                                              multi_rows[level, 1], ints, height, width, gt,
                                                              gt_area))
    empty = _iou_and_share(0, 0, 0, 0, gt, gt_area)[0]  # no contour: the box [0, 0, 0, 0]
    top = 0
    for y in range(height):
        top = max(top, row_top[y])
    for level in range(limit, min(top, nlev)):  # not looked at: foreground, no contour that reaches the floor
        result[level] = outer[level] = 0.0
        components[level] = cycles[level] = -1
    for level in range(nlev):
        if outer[level] < 0:
            result[level] = empty
    return result, components, outer, cycles


# ----------------------------------------------------------------------------- both ways, per map
@_jit
def _level_sweeps(u8, lut, nclass, gt, holes, floor, way, ws_int, ws_info, ws_cls, ws_masks, ws_flags, ws_cached,
                  ws_rows):
    """The components of the levels ``0 .. nclass - 2`` of ``lut`` (level i: mask ``lut[u8] > i``).

    ``way``: :data:`WAY_AUTO` takes the level runs where they are fewer than
    :data:`RUNS_PER_PIXEL` per pixel, else
    both sweeps; :data:`WAY_SWEEPS` forces the sweeps, :data:`WAY_RUNS` the
    level runs (a column of ``ws_int`` per run: a noisy map needs a wider
    workspace than its pixels). Both give the same numbers.
    Returns four ``[nclass - 1]`` arrays: best IoU over every contour (with
    ``holes``; else outer borders only), number of foreground components,
    best IoU over the outer borders (-1 without foreground), number of holes.
    """
    height, width = u8.shape
    size = (height + 2) * (width + 2)
    if (ws_int.shape[0] < NUM_INT32 or ws_int.shape[1] < size or ws_info.shape[0] < 1 or ws_info.shape[1] < size
            or ws_cls.shape[0] < size or ws_masks.shape[0] < 2 * size or ws_flags.shape[0] < 3
            or ws_flags.shape[1] < size or ws_cached.shape[0] < 2 or ws_cached.shape[1] < size
            or ws_rows.shape[0] < row_lists_size(width)):
        raise ValueError("component sweeps: workspace too small for the map")
    nlev = nclass - 1
    _classes(u8, lut, ws_cls)
    if way != WAY_SWEEPS:
        row_top, column_top = np.zeros(height, np.int64), np.zeros(width, np.int64)
        count = _scan_classes(ws_cls, height, width, row_top, column_top)  # the runs of every level
        if way == WAY_RUNS or count <= RUNS_PER_PIXEL * height * width:
            if count + height > ws_int.shape[1]:  # they and one level's gaps need a column each
                raise ValueError("level runs: workspace too small for the map's runs")
            return _level_runs(ws_cls, height, width, nlev, gt, holes, floor, row_top, column_top, ws_int,
                               ws_rows)
    fg_masks, bg_masks = ws_masks[:size], ws_masks[size:2 * size]
    cstart = np.zeros(nclass + 1, np.int64)
    _masks(ws_cls, fg_masks, bg_masks, height, width)
    _runs(ws_cls, height, width, nclass, ws_int, ws_info, cstart)
    outer = np.full(nlev, -1.0)
    components = np.zeros(nlev, np.int64)
    bound = np.zeros(nlev)
    euler4 = np.zeros(nlev, np.int64)
    _sweep(False, nclass - 1, 1, cstart, height, width, gt, floor, ws_int, ws_info, fg_masks, ws_flags, ws_cached,
           np.ones(nlev, np.bool_), outer, components, bound, euler4)
    hole_count = components - euler4 // 4
    result = outer.copy()
    if holes:
        # holes can only matter where the outer borders' best is beaten by the share of a GT box that
        # a component's box covers (a hole's box lies inside it), and where that share reaches the floor
        matters = (hole_count > 0) & (bound > outer) & (bound >= floor)
        last = -1
        for level in range(nlev):
            if matters[level]:
                last = level
        if last >= 0:
            hole_best = np.full(nlev, -1.0)
            hole_components = np.zeros(nlev, np.int64)
            _sweep(True, 0, last, cstart, height, width, gt, floor, ws_int, ws_info, bg_masks, ws_flags, ws_cached,
                   matters, hole_best, hole_components, bound, euler4)
            for level in range(last + 1):
                if matters[level] and hole_best[level] > result[level]:
                    result[level] = hole_best[level]
    gt_area = (gt[:, 2] - gt[:, 0] + 1) * (gt[:, 3] - gt[:, 1] + 1)
    empty = _iou_and_share(0, 0, 0, 0, gt, gt_area)[0]  # no contour: the box [0, 0, 0, 0]
    for level in range(nlev):
        if outer[level] < 0:
            result[level] = empty
    return result, components, outer, hole_count


@_jit
def level_sweeps(u8, levels, gt, holes, floor, way, ws_int, ws_info, ws_cls, ws_masks, ws_flags, ws_cached, ws_rows):
    """The components at the given integer levels (sorted, distinct, in [0, 255]; mask ``u8 > level``), the
    ``way`` of :func:`_level_sweeps`."""
    lut = np.zeros(NUM_LEVELS, np.int16)  # class of a value: number of levels below it
    for v in range(NUM_LEVELS):
        k = 0
        while k < levels.shape[0] and levels[k] < v:
            k += 1
        lut[v] = k
    return _level_sweeps(u8, lut, levels.shape[0] + 1, gt, holes, floor, way, ws_int, ws_info, ws_cls, ws_masks,
                         ws_flags, ws_cached, ws_rows)


@_jit
def scoremap_best_ious(scoremap, thresholds, gt, floor, ws_int, ws_info, ws_cls, ws_masks, ws_flags, ws_cached,
                       ws_rows):
    """V2 for one map, from the float map: best IoU over every contour at each CAM threshold.

    ``u8 = uint8(float64(map) * 255)``, level ``int(t * max(u8))`` as the
    reference; IoUs below ``floor`` may come back lower, still below it.
    Returns ``[len(thresholds)]`` float64, or an empty array when the map
    holds NaN or values outside [0, 1] (left to the caller to report).
    """
    height, width = scoremap.shape
    u8 = np.empty((height, width), np.uint8)
    top = np.uint8(0)
    invalid = False
    for y in range(height):  # written so that it vectorizes
        row = scoremap[y]
        out = u8[y]
        for x in range(width):
            value = np.float64(row[x])
            invalid |= not (0.0 <= value <= 1.0)  # NaN too
            v = np.uint8(min(max(value, 0.0), 1.0) * 255.0)
            out[x] = v
            top = max(top, v)
    if invalid:
        return np.empty(0)
    needed = np.zeros(NUM_LEVELS + 1, np.bool_)
    level_of = np.empty(thresholds.shape[0], np.int64)
    for i in range(thresholds.shape[0]):
        level = np.int64(thresholds[i] * np.float64(top))
        level = min(max(level, 0), NUM_LEVELS - 1)
        level_of[i] = level
        needed[level] = True
    rank = np.zeros(NUM_LEVELS + 1, np.int64)  # rank[v]: number of needed levels below v = class of v
    for v in range(NUM_LEVELS):
        rank[v + 1] = rank[v] + needed[v]
    lut = rank[:NUM_LEVELS].astype(np.int16)
    nclass = rank[NUM_LEVELS] + 1
    best = _level_sweeps(u8, lut, nclass, gt, True, floor, WAY_AUTO, ws_int, ws_info, ws_cls, ws_masks, ws_flags,
                         ws_cached, ws_rows)[0]
    out = np.empty(thresholds.shape[0])
    for i in range(thresholds.shape[0]):
        out[i] = best[rank[level_of[i]]]
    return out
