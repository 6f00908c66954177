"""Connected components of a score map at every CAM threshold at once: the compiled core of V2.

The contours of ``cv2.findContours(RETR_TREE)`` at a level are one outer
border per 8-connected foreground component (box = the component's) and one
hole border per 4-connected background component that does not touch the
image border (box = the hole's, grown by one pixel); see
:mod:`wsol_lightning.metrics.boxes`. Only the levels the thresholds ask for
matter, so each pixel gets its *class*: the number of asked levels below its
uint8 value (the mask at the i-th level is ``class > i``). Two union-find
sweeps then build the components of all levels:

* foreground: classes from the top down, 8-connected; after class ``c`` the
  sets are the components of the level ``c - 1``;
* background (holes): classes from the bottom up, 4-connected; only up to the
  last level where a hole exists and could matter (below).

What makes it cheap (a smooth 224x224 map in under a millisecond):

* whole-image passes that compilers vectorize: classes (a 256-entry table),
  and for every pixel the bit masks of its neighbours that enter *before* it
  in either sweep (higher, resp. lower class, or the same class earlier in
  raster order);
* *runs*: a row's run of one class enters as one element, joined from its
  first pixel's mask; a later pixel of the run touches only neighbours already
  joined through the pixel on its left, unless a new piece of neighbours
  starts above, below or to the right of it (a table, :data:`CUT8` /
  :data:`CUT4`), and only such pixels join more. Every pixel's parent starts
  at its run's first pixel. Smooth maps have a third as many runs as pixels;
* the Euler number of the foreground (components - holes) per level from the
  masks (Gray's bit quads): the background sweep is skipped where no hole
  exists, and where no hole can beat the outer borders (a hole's box lies in
  its component's box, so its IoU is at most the share of a GT box covered by
  that box) or reach ``floor``;
* a component's IoU is recomputed only when its box grew, and only
  components whose box covers at least ``floor`` of a GT box are looked at per
  level (with ``floor = 0``, all).

Everything here compiles with numba: just in time (``nogil``, for the metric
threads of training) or ahead of time into an extension module that loads
without numba (:mod:`wsol_lightning.metrics.compiled`, for ``evaluate.py``).
"""

from __future__ import annotations

import numba
import numpy as np

NUM_LEVELS = 256

_jit = numba.njit(cache=True, nogil=True, boundscheck=False)

#: Rows of the int32 workspace (one column per framed pixel; :func:`compiled.workspace` allocates it).
(I_PARENT, I_SIZE, I_X0, I_Y0, I_X1, I_Y1, I_CAND, I_DIRTY_LIST, I_RAW_FIRST, I_RAW_LAST, I_RAW_CLASS, I_RUN_OF,
 I_SEG_FIRST) = range(13)
NUM_INT32 = 13
# int64 row: sorted run info (``length << 32 | y``); uint8: foreground then background masks
# (two per pixel); bool rows: border, dirty, candidate; float64 rows: cached IoU, cached GT share.


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
                    while parent[b] != b:  # find, with path halving
                        parent[b] = parent[parent[b]]
                        b = parent[b]
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
            area = (x1 - x0 + 1) * (y1 - y0 + 1)
            value = 0.0
            cover = 0.0
            for k in range(gt.shape[0]):
                inter = (max(0, min(x1, gt[k, 2]) - max(x0, gt[k, 0]) + 1)
                         * max(0, min(y1, gt[k, 3]) - max(y0, gt[k, 1]) + 1))
                union = area + gt_area[k] - inter
                iou = inter / union if union > 0 else 0.0
                if iou > value:
                    value = iou
                if gt_area[k] > 0 and inter > cover * gt_area[k]:
                    cover = inter / gt_area[k]
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


@_jit
def _level_sweeps(u8, lut, nclass, gt, holes, floor, ws_int, ws_info, ws_cls, ws_masks, ws_flags, ws_cached):
    """Both sweeps for the levels ``0 .. nclass - 2`` of ``lut`` (level i: mask ``lut[u8] > i``).

    Returns four ``[nclass - 1]`` arrays: best IoU over every contour (with
    ``holes``; else outer borders only), number of foreground components,
    best IoU over the outer borders (-1 without foreground), number of holes.
    """
    height, width = u8.shape
    size = (height + 2) * (width + 2)
    if (ws_int.shape[0] < NUM_INT32 or ws_int.shape[1] < size or ws_info.shape[0] < 1 or ws_info.shape[1] < size
            or ws_cls.shape[0] < size or ws_masks.shape[0] < 2 * size or ws_flags.shape[0] < 3
            or ws_flags.shape[1] < size or ws_cached.shape[0] < 2 or ws_cached.shape[1] < size):
        raise ValueError("component sweeps: workspace too small for the map")
    nlev = nclass - 1
    fg_masks, bg_masks = ws_masks[:size], ws_masks[size:2 * size]
    cstart = np.zeros(nclass + 1, np.int64)
    _classes(u8, lut, ws_cls)
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
    empty = 0.0  # no contour: the box [0, 0, 0, 0]
    for k in range(gt.shape[0]):
        inter = max(0, min(0, gt[k, 2]) - max(0, gt[k, 0]) + 1) * max(0, min(0, gt[k, 3]) - max(0, gt[k, 1]) + 1)
        union = 1 + (gt[k, 2] - gt[k, 0] + 1) * (gt[k, 3] - gt[k, 1] + 1) - inter
        iou = inter / union if union > 0 else 0.0
        if iou > empty:
            empty = iou
    for level in range(nlev):
        if outer[level] < 0:
            result[level] = empty
    return result, components, outer, hole_count


@_jit
def level_sweeps(u8, levels, gt, holes, floor, ws_int, ws_info, ws_cls, ws_masks, ws_flags, ws_cached):
    """The sweeps at the given integer levels (sorted, distinct, in [0, 255]; mask ``u8 > level``)."""
    lut = np.zeros(NUM_LEVELS, np.int16)  # class of a value: number of levels below it
    for v in range(NUM_LEVELS):
        k = 0
        while k < levels.shape[0] and levels[k] < v:
            k += 1
        lut[v] = k
    return _level_sweeps(u8, lut, levels.shape[0] + 1, gt, holes, floor, ws_int, ws_info, ws_cls, ws_masks,
                         ws_flags, ws_cached)


@_jit
def scoremap_best_ious(scoremap, thresholds, gt, floor, ws_int, ws_info, ws_cls, ws_masks, ws_flags, ws_cached):
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
    best = _level_sweeps(u8, lut, nclass, gt, True, floor, ws_int, ws_info, ws_cls, ws_masks, ws_flags,
                         ws_cached)[0]
    out = np.empty(thresholds.shape[0])
    for i in range(thresholds.shape[0]):
        out[i] = best[rank[level_of[i]]]
    return out
