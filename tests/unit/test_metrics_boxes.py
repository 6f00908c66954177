"""The box kernel and BoxLocalization equal a straightforward transcription of wsolevaluation."""

import numpy as np
import pytest
import torch

from tests.reference_wsol_metrics import max_box_acc, random_scoremaps
from wsol_lightning.metrics.boxes import best_ious_per_threshold, contour_boxes_and_areas
from wsol_lightning.metrics.localization import BoxLocalization


def _kernel_max_box_acc(maps, boxes, interval, iou_thresholds):
    thresholds = np.arange(0, 1, interval)
    largest_hits = {k: np.zeros(len(thresholds)) for k in iou_thresholds}
    all_hits = {k: np.zeros(len(thresholds)) for k in iou_thresholds}
    for scoremap, gt in zip(maps, boxes):
        largest, every = best_ious_per_threshold(scoremap, gt, thresholds)
        for k in iou_thresholds:
            largest_hits[k] += largest >= k / 100
            all_hits[k] += every >= k / 100
    as_acc = lambda hits: [float((hits[k] * 100 / len(maps)).max()) for k in iou_thresholds]  # noqa: E731
    return as_acc(largest_hits), as_acc(all_hits)


@pytest.mark.parametrize("seed,count,interval", [(0, 150, 0.01), (1, 150, 0.01), (2, 60, 0.001)])
def test_max_box_acc_v1_and_v2_equal_the_reference(seed, count, interval):
    maps, boxes = random_scoremaps(count, seed)
    ious = [30, 50, 70]
    v1, v2 = _kernel_max_box_acc(maps, boxes, interval, ious)
    assert v1 == pytest.approx(max_box_acc(maps, boxes, interval, False, ious), abs=1e-6)
    assert v2 == pytest.approx(max_box_acc(maps, boxes, interval, True, ious), abs=1e-6)


def test_per_map_per_threshold_values_equal_the_reference():
    """Finer than accuracies: every (map, threshold) best IoU, including ring maps with holes."""
    import cv2

    from tests.reference_wsol_metrics import boxes_at_threshold, iou

    maps, boxes = random_scoremaps(40, 7)
    thresholds = np.arange(0, 1, 0.05)
    for scoremap, gt in zip(maps, boxes):
        largest, every = best_ious_per_threshold(scoremap, gt, thresholds)
        for index, t in enumerate(thresholds):
            ref_v1 = max(iou(b, g) for b in boxes_at_threshold(scoremap, t, False) for g in gt)
            ref_v2 = max(iou(b, g) for b in boxes_at_threshold(scoremap, t, True) for g in gt)
            assert largest[index] == pytest.approx(ref_v1, abs=1e-12)
            assert every[index] == pytest.approx(ref_v2, abs=1e-12)


def test_contour_areas_and_boxes_match_opencv_on_masks_with_holes():
    import cv2

    rng = np.random.default_rng(3)
    for _ in range(30):
        binary = (rng.random((60, 60)) > 0.55).astype(np.uint8) * 255
        binary[20:40, 20:40] = 255
        binary[25:35, 25:35] = 0  # a hole
        boxes, twice_area = contour_boxes_and_areas(binary)
        contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
        assert len(boxes) == len(contours)
        for box, doubled, contour in zip(boxes, twice_area, contours):
            x, y, w, h = cv2.boundingRect(contour)
            assert list(box) == [x, y, min(x + w, 59), min(y + h, 59)]
            assert doubled / 2 == cv2.contourArea(contour)


def test_flat_map_gives_the_zero_box():
    gt = np.array([[0, 0, 0, 0], [10, 10, 50, 50]])
    largest, every = best_ious_per_threshold(np.zeros((224, 224)), gt, np.arange(0, 1, 0.1))
    assert np.all(largest == 1.0) and np.all(every == 1.0)  # the [0,0,0,0] box matches the first GT exactly


def test_torchmetric_equals_reference_and_splits_sum():
    maps, boxes = random_scoremaps(60, 11)
    ious = [30, 50, 70]
    ref_v1 = max_box_acc(maps, boxes, 0.01, False, [50])[0]
    ref_v2 = float(np.mean(max_box_acc(maps, boxes, 0.01, True, ious)))
    metric = BoxLocalization(cam_curve_interval=0.01)
    k = max(len(b) for b in boxes)
    padded = torch.full((len(boxes), k, 4), -1, dtype=torch.int64)
    for i, b in enumerate(boxes):
        padded[i, : len(b)] = torch.from_numpy(b)
    tensor_maps = torch.from_numpy(np.stack([m.astype(np.float32) for m in maps]))
    for start in range(0, 60, 16):  # batches
        metric.update(tensor_maps[start:start + 16], padded[start:start + 16], torch.ones(16, dtype=torch.bool)[: len(tensor_maps[start:start + 16])])
    result = metric.compute()
    assert float(result["MaxBoxAcc"]) == pytest.approx(ref_v1, abs=1e-4)
    assert float(result["MaxBoxAccV2"]) == pytest.approx(ref_v2, abs=1e-4)
    # all classified correctly -> top1_loc equals MaxBoxAcc
    assert float(result["top1_loc"]) == pytest.approx(ref_v1, abs=1e-4)
    metric.reset()
    assert float(metric.count) == 0 and float(metric.correct_all.sum()) == 0


def test_top1_loc_needs_the_right_class():
    maps, boxes = random_scoremaps(20, 5)
    metric = BoxLocalization()
    padded = torch.full((20, 3, 4), -1, dtype=torch.int64)
    for i, b in enumerate(boxes):
        padded[i, : len(b)] = torch.from_numpy(b)
    metric.update(torch.from_numpy(np.stack([m.astype(np.float32) for m in maps])), padded,
                  torch.zeros(20, dtype=torch.bool))
    assert float(metric.compute()["top1_loc"]) == 0.0
