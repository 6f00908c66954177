"""The box kernel equals a straightforward transcription of wsolevaluation, map by map and threshold by threshold.

The reference (``tests/reference_wsol_metrics.py``) runs one ``cv2.findContours``
per map and threshold; the kernel derives V2 from connected components and V1
from one ``RETR_EXTERNAL`` search per distinct level. Hundreds of random maps
(multimodal, ring-shaped with holes, plateaus with tied contour areas, noisy
with thousands of contours, speckled CAMs, flat; float32 and float64; 1-3 GT
boxes) at intervals 0.01 and 0.001, and every 4x4 binary image; each of the
kernel's two ways to the components (the sweeps, the level runs) forced on all
of them, and the per-map choice; the ahead-of-time build of the kernel equals
the just-in-time one.
"""

import itertools
import shutil

import cv2
import numpy as np
import pytest

from tests.reference_wsol_metrics import (best_iou, best_ious, contour_boxes, max_box_acc_both,
                                          max_box_acc_from_ious, random_scoremaps)
from wsol_lightning.metrics import boxes as kernel
from wsol_lightning.metrics import compiled
from wsol_lightning.metrics.boxes import (BoxCounts, best_ious_per_threshold, contour_boxes_and_areas,
                                          scoremap_all_contour_ious)


#: The kernel's ways to the components: chosen per map (``auto``, what every caller gets), or one forced.
WAYS = ["auto", "sweeps", "runs"]


def _v2_by_way(scoremap, gt, thresholds, way, floor=0.0):
    """V2 at every threshold through the uint8 entry point with ``way`` forced."""
    u8, levels = kernel.scoremap_levels(scoremap, thresholds)
    return kernel.all_contour_ious(u8, gt, levels, floor=floor, way=way)


def _assert_map_parity(maps, gts, interval, references=None, way="auto"):
    """V1 and V2 (the per-map kernel) equal the reference; with ``way`` forced, V2 of that way."""
    thresholds = np.arange(0, 1, interval)
    for index, (scoremap, gt) in enumerate(zip(maps, gts)):
        if way == "auto":
            v1, v2 = best_ious_per_threshold(scoremap, gt, thresholds)
        else:
            v1, v2 = None, _v2_by_way(scoremap, gt, thresholds, way)
        ref_v1, ref_v2 = references[index] if references else best_ious(scoremap, gt, thresholds)
        bad_v2 = np.flatnonzero(np.abs(v2 - ref_v2) > 1e-12)
        assert len(bad_v2) == 0, f"V2 ({way}) map {index} ({scoremap.dtype}) thresholds {thresholds[bad_v2][:5]}"
        if v1 is not None:
            bad_v1 = np.flatnonzero(np.abs(v1 - ref_v1) > 1e-12)
            assert len(bad_v1) == 0, f"V1 map {index} ({scoremap.dtype}) thresholds {thresholds[bad_v1][:5]}"


@pytest.fixture(scope="module")
def at_0_01():
    """120 random maps (two seeds, 24 of each of 5 kinds), GT boxes and the reference's best IoUs at interval 0.01,
    computed once."""
    maps, gts = [], []
    for seed in (0, 1):
        seed_maps, seed_gts = random_scoremaps(60, seed)
        maps, gts = maps + seed_maps, gts + seed_gts
    thresholds = np.arange(0, 1, 0.01)
    return maps, gts, [best_ious(scoremap, gt, thresholds) for scoremap, gt in zip(maps, gts)]


@pytest.mark.parametrize("way", WAYS)
def test_best_iou_at_every_threshold_equals_the_reference_at_0_01(at_0_01, way):
    maps, gts, references = at_0_01
    _assert_map_parity(maps, gts, 0.01, references, way)


@pytest.mark.parametrize("way", WAYS)
def test_best_iou_at_every_threshold_equals_the_reference_at_0_001(way):
    maps, gts = random_scoremaps(24, 10, kinds=("multimodal", "ring", "plateaus", "flat"))
    noisy, noisy_gts = random_scoremaps(2, 11, kinds=("noisy",))
    _assert_map_parity(maps + noisy, gts + noisy_gts, 0.001, way=way)


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("interval", [0.01, 0.001])
def test_speckled_cams_equal_the_reference(interval, way):
    """Smooth CAMs with light pixel speckle: hundreds of small contours and holes on the slopes at every
    threshold, holes that matter; per threshold, V1 and V2, float32 and float64 (96x96: the reference
    traces every contour in Python)."""
    maps, gts = random_scoremaps(4 if interval == 0.01 else 1, 40, size=96, kinds=("speckled",))
    _assert_map_parity(maps, gts, interval, way=way)


@pytest.mark.parametrize("interval", [0.01, 0.001])
def test_max_box_acc_v1_and_v2_equal_the_reference(interval, at_0_01):
    ious = [30, 50, 70]
    if interval == 0.01:  # 60 maps of every kind, with the module's reference IoUs
        maps, gts, references = (part[:60] for part in at_0_01)
        ref_v1, ref_v2 = max_box_acc_from_ious(references, ious)
    else:
        maps, gts = random_scoremaps(16, 20, kinds=("multimodal", "ring"))
        ref_v1, ref_v2 = max_box_acc_both(maps, gts, interval, ious)
    counts = BoxCounts(np.arange(0, 1, interval), ious)
    halves = [BoxCounts(np.arange(0, 1, interval), ious) for _ in range(2)]
    for index, (scoremap, gt) in enumerate(zip(maps, gts)):
        counts.add(scoremap, gt)
        halves[index % 2].add(scoremap, gt)
    merged = halves[0].merge(halves[1])
    for result in (counts, merged):
        assert result.count == len(maps)
        assert result.max_box_acc(False) == pytest.approx(ref_v1, abs=1e-6)
        assert result.max_box_acc(True) == pytest.approx(ref_v2, abs=1e-6)


def _mask_boxes_reference(binary):
    """Every RETR_TREE contour's box of a binary image, as the reference computes them."""
    scoremap = (binary > 0).astype(np.float64)
    every, _ = contour_boxes(scoremap, 0.0)
    return every


@pytest.fixture(scope="module")
def every_4x4():
    """All 65 536 binary 4x4 images with the reference's contour boxes, searched once for the module."""
    images = []
    for bits in itertools.product((0, 255), repeat=16):
        u8 = np.array(bits, dtype=np.uint8).reshape(4, 4)
        images.append((u8, _mask_boxes_reference(u8)))
    return images


@pytest.mark.parametrize("way", ["sweeps", "runs"])
def test_every_4x4_binary_image(every_4x4, way):
    """V2 from components equals RETR_TREE contours on all 65 536 binary 4x4 images (holes, diagonals, borders)."""
    gt = np.array([[1, 1, 2, 2], [0, 0, 1, 3], [3, 2, 3, 3]])
    for u8, reference_boxes in every_4x4:
        got = kernel.all_contour_ious(u8, gt, np.array([0]), way=way)[0]
        assert got == best_iou(reference_boxes, gt), u8


@pytest.mark.parametrize("way", WAYS)
def test_small_multilevel_images_every_level(way):
    """Random small images with few values: every level, tiny GT boxes (sensitive to each contour box)."""
    rng = np.random.default_rng(5)
    for _ in range(400):
        height, width = rng.integers(2, 14, 2)
        u8 = (rng.integers(0, 5, (height, width)) * 60).astype(np.uint8)
        gt = np.stack([rng.integers(0, width, 2), rng.integers(0, height, 2)], 1)  # (x, y) of two corners
        gt = np.array([[min(gt[0]), min(gt[1]), max(gt[0]), max(gt[1])]])
        levels = np.arange(0, 256)
        got = kernel.all_contour_ious(u8, gt, levels, way=way)
        for level in (0, 59, 60, 119, 120, 179, 180, 239, 240, 255):
            binary = cv2.threshold(u8, level, 255, cv2.THRESH_BINARY)[1]
            contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
            boxes = [[x, y, min(x + w, width - 1), min(y + h, height - 1)]
                     for x, y, w, h in (cv2.boundingRect(c) for c in contours)] or [[0, 0, 0, 0]]
            assert got[level] == best_iou(boxes, gt), (u8, level, gt)


def test_opencv_fallback_equals_the_reference(at_0_01):
    """The kernel without numba (one RETR_TREE search per level) gives the reference's V2 IoUs."""
    thresholds = np.arange(0, 1, 0.01)
    for scoremap, gt, (_, ref_v2) in zip(*(part[:25] for part in at_0_01)):
        u8, levels = kernel.scoremap_levels(scoremap, thresholds)
        assert np.abs(kernel.all_contour_ious_opencv(u8, gt, levels) - ref_v2).max() <= 1e-12


def test_contour_areas_and_boxes_match_opencv_on_masks_with_holes():
    rng = np.random.default_rng(3)
    for _ in range(30):
        binary = (rng.random((60, 60)) > 0.55).astype(np.uint8) * 255
        binary[20:40, 20:40] = 255
        binary[25:35, 25:35] = 0  # a hole
        for mode in (cv2.RETR_TREE, cv2.RETR_EXTERNAL):
            boxes, twice_area = contour_boxes_and_areas(binary, mode)
            contours = cv2.findContours(binary, mode, cv2.CHAIN_APPROX_SIMPLE)[0]
            assert len(boxes) == len(contours)
            for box, doubled, contour in zip(boxes, twice_area, contours):
                x, y, w, h = cv2.boundingRect(contour)
                assert list(box) == [x, y, min(x + w, 59), min(y + h, 59)]
                assert doubled / 2 == cv2.contourArea(contour)


def test_flat_maps():
    gt = np.array([[0, 0, 0, 0], [10, 10, 50, 50]])
    thresholds = np.arange(0, 1, 0.1)
    largest, every = best_ious_per_threshold(np.zeros((224, 224), np.float32), gt, thresholds)
    assert np.all(largest == 1.0) and np.all(every == 1.0)  # no contour: the box [0,0,0,0] matches GT 1
    largest, every = best_ious_per_threshold(np.full((224, 224), 0.5), np.array([[0, 0, 223, 223]]), thresholds)
    assert np.all(largest == 1.0) and np.all(every == 1.0)  # one contour: the whole map


def test_v1_tie_goes_to_opencv_first_contour():
    """Two equal squares: V1 takes the first contour in OpenCV's order (the lower one), not the GT's."""
    scoremap = np.zeros((224, 224))
    scoremap[10:30, 10:30] = 1.0
    scoremap[150:170, 150:170] = 1.0
    thresholds = np.array([0.5])
    for gt in (np.array([[10, 10, 30, 30]]), np.array([[150, 150, 170, 170]])):
        v1, v2 = best_ious_per_threshold(scoremap, gt, thresholds)
        ref_v1, ref_v2 = best_ious(scoremap, gt, thresholds)
        assert v1[0] == ref_v1[0] and v2[0] == ref_v2[0] == 1.0
    assert {best_ious(scoremap, g, thresholds)[0][0] for g in ([[10, 10, 30, 30]], [[150, 150, 170, 170]])} \
        == {1.0, 0.0}  # the tie is decided by order, so one of the two GTs loses


def test_degenerate_union_counts_as_zero():
    boxes = np.array([[5, 5, 3, 3]])  # negative "area"
    assert kernel.box_ious(boxes, np.array([[5, 5, 3, 3]]))[0, 0] == 0.0


def test_contour_boxes_are_component_boxes_on_every_4x4_image(every_4x4):
    """The fact the V2 kernel rests on, checked on its own: RETR_TREE contour boxes = boxes of the
    8-connected foreground components + boxes of the 4-connected background components not touching
    the border, grown by one pixel (same clamp to W-1 / H-1)."""
    for u8, reference_boxes in every_4x4:
        expected = sorted(map(tuple, reference_boxes)) if u8.any() else []
        got = []
        count, _, stats, _ = cv2.connectedComponentsWithStats((u8 > 0).astype(np.uint8), connectivity=8)
        got += [(x, y, min(x + w, 3), min(y + h, 3)) for x, y, w, h, _ in stats[1:]]
        count, _, stats, _ = cv2.connectedComponentsWithStats((u8 == 0).astype(np.uint8), connectivity=4)
        got += [(x - 1, y - 1, min(x + w + 1, 3), min(y + h + 1, 3)) for x, y, w, h, _ in stats[1:]
                if x > 0 and y > 0 and x + w < 4 and y + h < 4]
        assert sorted(got) == expected, u8


@pytest.mark.parametrize("way", ["sweeps", "runs"])
def test_hole_counts_equal_opencv(way):
    """The hole count that lets the kernel skip holes (components - Euler number, kept by the foreground
    sweep; the cycles of the run graph on the level runs) equals the number of 4-connected background
    components not touching the border, at every level of random multi-level images and of rings."""
    rng = np.random.default_rng(11)
    images = [(rng.integers(0, 4, rng.integers(2, 16, 2)) * 80).astype(np.uint8) for _ in range(300)]
    ring = np.zeros((20, 20), np.uint8)
    ring[3:17, 3:17], ring[6:14, 6:14], ring[9:11, 9:11] = 200, 0, 120  # a hole holding an island
    images.append(ring)
    gt = np.array([[0, 0, 1, 1]])
    for u8 in images:
        levels = np.arange(0, 255)
        _, _, _, holes = kernel.component_sweeps(u8, gt, levels, way=way)
        for level in levels[::20].tolist() + [0, 79, 80, 119, 120, 199]:
            if level >= 255:
                continue
            background = (u8 <= level).astype(np.uint8)
            count, labels = cv2.connectedComponents(background, connectivity=4)
            touching = set(labels[0]) | set(labels[-1]) | set(labels[:, 0]) | set(labels[:, -1])
            expected = len(set(range(1, count)) - touching) if (u8 > level).any() else 0
            assert holes[level] == expected, (u8, level)


@pytest.fixture(scope="module")
def floor_maps():
    """Rings, noisy and multimodal maps plus a thin ring, with the reference's and the exact kernel's V2."""
    maps, gts = random_scoremaps(40, 21, kinds=("ring", "noisy", "multimodal"))
    # A thin ring whose hole box beats the outer box (IoU 0.0245 vs 0.0198) although the ring's box
    # covers under 5% of the GT box: with any floor above that, neither is looked at.
    ring = np.zeros((100, 100))
    ring[0:60, 0:60] = 1.0
    ring[20:58, 20:58] = 0.0
    maps, gts = maps + [ring], gts + [np.array([[50, 50, 99, 99]])]
    thresholds = np.arange(0, 1, 0.01)
    references = [np.asarray(best_ious(scoremap, gt, thresholds)[1]) for scoremap, gt in zip(maps, gts)]
    exact = [best_ious_per_threshold(scoremap, gt, thresholds, largest=False)[1] for scoremap, gt in zip(maps, gts)]
    return maps, gts, references, exact


def test_without_floor_every_v2_iou_is_the_references(floor_maps):
    for reference, exact in zip(*floor_maps[2:]):
        assert np.allclose(exact, reference, rtol=0, atol=1e-12)


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("floor", [0.3, 0.5])
def test_floor_keeps_every_iou_at_or_above_it_exact(floor, floor_maps, way):
    """With a floor (BoxCounts passes its smallest IoU threshold) contours whose box covers less than
    the floor's share of every GT box are not looked at (nor holes inside them): IoUs >= floor stay
    exact, smaller ones may come back lower but stay below it."""
    thresholds = np.arange(0, 1, 0.01)
    for scoremap, gt, reference, exact in zip(*floor_maps):
        if way == "auto":
            _, got = best_ious_per_threshold(scoremap, gt, thresholds, largest=False, floor=floor)
        else:
            got = _v2_by_way(scoremap, gt, thresholds, way, floor)
        above = reference >= floor
        assert np.array_equal(got[above], exact[above])
        assert np.all(got[~above] <= exact[~above]) and np.all(got[~above] < floor)
    # The ring: its box covers under 5 % of the GT box, so with a floor neither its outer border (121 / 6100) nor
    # its hole (100 / 4081, the exact best) is looked at: lowered to 0.
    assert exact == pytest.approx(100 / 4081) and got == pytest.approx(0.0)


def test_ahead_of_time_kernel_equals_the_just_in_time_kernel():
    """The extension module ``evaluate.py`` loads (built once with numba.pycc) computes what the JIT does."""
    aot = compiled.ahead_of_time()
    if aot is None and not any(shutil.which(cc) for cc in ("cc", "gcc", "clang")):
        pytest.skip(f"no C compiler, no ahead-of-time build: {compiled._state['aot_error']}")
    assert aot is not None, compiled._state["aot_error"]
    jit = compiled.just_in_time()
    maps, gts = random_scoremaps(5, 50, kinds=("multimodal", "ring", "noisy", "speckled", "flat"))
    thresholds = np.arange(0, 1, 0.01)
    for scoremap, gt in zip(maps, gts):
        gt = np.ascontiguousarray(gt, dtype=np.int64)
        for floor in (0.0, 0.3):
            for dtype in (np.float32, np.float64):
                name = "scoremap_best_ious_f4" if dtype == np.float32 else "scoremap_best_ious_f8"
                one = np.ascontiguousarray(scoremap, dtype=dtype)
                expected = getattr(jit, name)(one, thresholds, gt, floor, *compiled.workspace(224, 224))
                got = getattr(aot, name)(one, thresholds, gt, floor, *compiled.workspace(224, 224))
                assert np.array_equal(expected, got)
            u8, levels = kernel.scoremap_levels(scoremap, thresholds)
            levels = np.unique(levels)
            for way in kernel.WAYS.values():
                wide = 8 * 226 * 226  # forced level runs on a noisy map: a column per run
                expected = jit.level_sweeps(u8, levels, gt, True, floor, way, *compiled.workspace(224, 224, wide))
                got = aot.level_sweeps(u8, levels, gt, True, floor, way, *compiled.workspace(224, 224, wide))
                assert all(np.array_equal(a, b) for a, b in zip(expected, got))


@pytest.mark.parametrize("value", [np.nan, 1.5, -0.25])
def test_the_compiled_path_refuses_maps_outside_0_1(value):
    scoremap = np.zeros((20, 20), np.float32)
    scoremap[3, 4] = value
    with pytest.raises(ValueError, match="NaN or values outside"):
        scoremap_all_contour_ious(scoremap, np.array([[0, 0, 5, 5]]), np.arange(0, 1, 0.1))


def test_components_below_the_floor_are_not_taken_for_no_foreground():
    """With a floor, a level whose components all cover less than it of the GT box reports an IoU below the
    floor, not the empty-map box [0, 0, 0, 0] (which matches a GT box at the origin exactly)."""
    scoremap = np.zeros((60, 60))
    scoremap[40:50, 40:50] = 1.0
    gt = np.array([[0, 0, 0, 0]])
    thresholds = np.array([0.0, 0.5])
    _, got = best_ious_per_threshold(scoremap, gt, thresholds, largest=False, floor=0.3)
    assert best_ious(scoremap, gt, thresholds)[1] == [0.0, 0.0]
    assert np.all(got < 0.3)
    _, empty = best_ious_per_threshold(np.zeros((60, 60)), gt, thresholds, largest=False, floor=0.3)
    assert np.all(empty == 1.0)  # no foreground at all: the box [0, 0, 0, 0]


def test_run_count_is_the_rises_along_the_rows():
    """The count that picks the kernel's way per map: the runs of every level, i.e. per row the summed rises
    of the class from 0 before the first pixel, against numpy's count of the runs of each level's mask."""
    from wsol_lightning.metrics import sweeps

    rng = np.random.default_rng(8)
    for _ in range(20):
        height, width = rng.integers(1, 30, 2)
        u8 = rng.integers(0, 256, (height, width)).astype(np.uint8)
        levels = np.unique(rng.integers(0, 256, rng.integers(1, 40)))
        lut = np.searchsorted(levels, np.arange(256), side="left").astype(np.int16)
        cls = np.empty((height + 2) * (width + 2), np.int16)
        sweeps._classes(u8, lut, cls)
        expected = sum(int(np.count_nonzero(np.diff((u8 > level).astype(np.int8), axis=1, prepend=0) == 1))
                       for level in levels)
        assert sweeps.rises(cls, height, width) == expected


def test_levels_whose_whole_foreground_box_cannot_reach_the_floor_are_found():
    """The level runs skip the levels from the first at which the box of the whole foreground covers less than
    the floor of every GT box (no contour's box can do more); below it every level is looked at."""
    from wsol_lightning.metrics import sweeps

    u8 = np.zeros((50, 60), np.uint8)
    u8[10:40, 10:50] = 100  # levels 0-99: a 40 x 30 box, [10, 10, 50, 40] as a contour's box
    u8[20:25, 20:24] = 200  # levels 100-199: [20, 20, 24, 25]
    levels = np.arange(0, 255)
    lut = np.searchsorted(levels, np.arange(256), side="left").astype(np.int16)
    cls = np.empty(52 * 62, np.int16)
    sweeps._classes(u8, lut, cls)
    row_top, column_top = np.zeros(50, np.int64), np.zeros(60, np.int64)
    sweeps._scan_classes(cls, 50, 60, row_top, column_top)
    def first_hopeless(gt, floor):
        gt = np.array(gt, np.int64)
        area = (gt[:, 2] - gt[:, 0] + 1) * (gt[:, 3] - gt[:, 1] + 1)
        return sweeps._first_hopeless_level(row_top, column_top, 255, gt, area, floor)

    whole = [[0, 0, 59, 49]]  # the whole image: the big box covers 41 * 31 / 3000 = 0.42, the small 0.01
    assert first_hopeless(whole, 0.42) == 100
    assert first_hopeless(whole, 0.43) == 0
    assert first_hopeless(whole, 0.01) == 200  # 6 * 5 / 3000 = 0.01
    assert first_hopeless(whole, 0.0) == 255
    assert first_hopeless([[21, 21, 22, 22]], 1.0) == 200  # covered whole by either box, up to the last level


@pytest.mark.parametrize("way", WAYS)
def test_an_iou_exactly_at_the_floor_is_exact(way):
    """A contour box inside a GT box covering exactly the floor's share of it has that IoU, so it must come
    back exact: 7 / 100 >= 0.07 holds where 0.07 * 100 > 7 (a product would skip the level)."""
    u8 = np.zeros((1, 30), np.uint8)
    u8[0, :6] = 200  # the contour box [0, 0, 6, 0]: 7 pixels
    got, components, _, _ = kernel.component_sweeps(u8, np.array([[0, 0, 99, 0]]), np.array([100]), floor=0.07,
                                                    way=way)
    assert got[0] == 7 / 100 and components[0] == 1
    scoremap = np.zeros((30, 30), np.float32)
    scoremap[0:4, 0:10] = 1.0  # the box [0, 0, 10, 4]: 55 pixels of a 20 x 5 GT box
    best = scoremap_all_contour_ious(scoremap, np.array([[0, 0, 19, 4]]), np.arange(0, 1, 0.01), 0.55)
    assert np.all(best[:99] == 55 / 100)
