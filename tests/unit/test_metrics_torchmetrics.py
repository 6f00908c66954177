"""BoxLocalization / MaskLocalization: the reference's numbers, evaluate.py's numbers, DDP sums, clean resets."""

import copy
import pickle

import numpy as np
import pytest
import torch

from tests.reference_wsol_metrics import best_ious, max_box_acc_both, pxap, random_scoremaps
from wsol_lightning.evaluate import evaluate_scoremaps
from wsol_lightning.data.metadata import load_metadata
from wsol_lightning.metrics.localization import BoxLocalization, MaskLocalization

KINDS = ("multimodal", "ring", "plateaus", "noisy", "flat")


def _padded(boxes):
    k = max(len(b) for b in boxes)
    padded = torch.full((len(boxes), k, 4), -1, dtype=torch.int64)
    for i, b in enumerate(boxes):
        padded[i, : len(b)] = torch.from_numpy(np.asarray(b))
    return padded


def _feed(metric, maps, boxes, correct, batch=16):
    tensor_maps = torch.from_numpy(np.stack([m.astype(np.float32) for m in maps]))
    padded = _padded(boxes)
    correct = torch.as_tensor(correct, dtype=torch.bool)
    for start in range(0, len(maps), batch):
        metric.update(tensor_maps[start:start + batch], padded[start:start + batch], correct[start:start + batch])


@pytest.fixture(scope="module")
def sample():
    maps, boxes = random_scoremaps(50, 11, kinds=KINDS)
    maps = [m.astype(np.float32) for m in maps]  # what the module feeds (and what is saved)
    ref_v1, ref_v2 = max_box_acc_both(maps, boxes, 0.01, [30, 50, 70])
    return maps, boxes, ref_v1, ref_v2


@pytest.mark.parametrize("asynchronous", [True, False])
def test_box_metric_equals_the_reference(sample, asynchronous):
    maps, boxes, ref_v1, ref_v2 = sample
    metric = BoxLocalization(cam_curve_interval=0.01, asynchronous=asynchronous)
    _feed(metric, maps, boxes, np.ones(len(maps), bool))
    result = metric.compute()
    assert set(result) == {"MaxBoxAcc", "MaxBoxAccV2", "MaxBoxAccV2_IoU30", "MaxBoxAccV2_IoU50",
                           "MaxBoxAccV2_IoU70", "top1_loc"}
    assert all(v.dtype == torch.float32 for v in result.values())
    assert float(result["MaxBoxAcc"]) == pytest.approx(ref_v1[1], abs=1e-4)
    assert float(result["MaxBoxAccV2"]) == pytest.approx(float(np.mean(ref_v2)), abs=1e-4)
    for k, value in zip((30, 50, 70), ref_v2):
        assert float(result[f"MaxBoxAccV2_IoU{k}"]) == pytest.approx(value, abs=1e-4)
    assert float(result["top1_loc"]) == pytest.approx(ref_v1[1], abs=1e-4)  # every class right


def test_box_metric_equals_evaluate_py_on_the_same_saved_maps(sample, tmp_path):
    """One kernel: the training metric and evaluate.py agree on maps saved as float32 .npy."""
    maps, boxes, _, _ = sample
    meta = tmp_path / "metadata" / "CUB" / "val"
    meta.mkdir(parents=True)
    ids = [f"c/{i:03d}.jpg" for i in range(len(maps))]
    (meta / "image_ids.txt").write_text("\n".join(ids) + "\n")
    (meta / "class_labels.txt").write_text("\n".join(f"{i},0" for i in ids) + "\n")
    (meta / "image_sizes.txt").write_text("\n".join(f"{i},224,224" for i in ids) + "\n")
    (meta / "localization.txt").write_text("\n".join(f"{i},{b[0]},{b[1]},{b[2]},{b[3]}"
                                                     for i, bs in zip(ids, boxes) for b in bs) + "\n")
    for image_id, scoremap in zip(ids, maps):
        (tmp_path / "maps" / "c").mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / "maps" / (image_id + ".npy"), scoremap)
    metadata = load_metadata(tmp_path / "metadata", "CUB", "val")
    v2 = evaluate_scoremaps(str(tmp_path / "maps"), metadata, 0.01, True, True, workers=2)
    v1 = evaluate_scoremaps(str(tmp_path / "maps"), metadata, 0.01, False, False, workers=1)
    metric = BoxLocalization()
    _feed(metric, maps, boxes, np.ones(len(maps), bool), batch=7)
    result = metric.compute()
    assert float(result["MaxBoxAccV2"]) == pytest.approx(v2["localization"], abs=1e-4)
    assert float(result["MaxBoxAcc"]) == pytest.approx(v1["localization"], abs=1e-4)


def test_top1_loc_counts_right_class_and_iou_at_the_best_v1_threshold(sample):
    maps, boxes, _, _ = sample
    rng = np.random.default_rng(0)
    correct = rng.random(len(maps)) < 0.5
    metric = BoxLocalization()
    _feed(metric, maps, boxes, correct)
    result = metric.compute()
    thresholds = np.arange(0, 1, 0.01)
    v1 = np.array([best_ious(m, b, thresholds)[0] for m, b in zip(maps, boxes)])  # [N, T]
    best_t = int(np.argmax((v1 >= 0.5).sum(0)))
    expected = 100.0 * np.sum(correct & (v1[:, best_t] >= 0.5)) / len(maps)
    assert float(result["top1_loc"]) == pytest.approx(expected, abs=1e-4)
    assert metric.best_threshold() == pytest.approx(thresholds[best_t])
    none_right = BoxLocalization()
    _feed(none_right, maps, boxes, np.zeros(len(maps), bool))
    assert float(none_right.compute()["top1_loc"]) == 0.0


def test_states_of_two_processes_sum_to_the_whole(sample):
    """What DDP's sum reduction does: the states of two halves add up to those of the whole split."""
    maps, boxes, ref_v1, ref_v2 = sample
    halves = [BoxLocalization(), BoxLocalization()]
    for part, metric in enumerate(halves):
        _feed(metric, maps[part::2], boxes[part::2], np.ones(len(maps[part::2]), bool))
        metric.compute()  # drains the queue into the states
    whole = BoxLocalization()
    for name in ("correct_largest", "correct_all", "correct_loc_cls", "count"):
        setattr(whole, name, getattr(halves[0], name) + getattr(halves[1], name))
        assert getattr(whole, name).dtype == torch.int64
    whole._update_count = 1  # as if updated (compute warns otherwise)
    result = whole.compute()
    assert float(result["MaxBoxAcc"]) == pytest.approx(ref_v1[1], abs=1e-4)
    assert float(result["MaxBoxAccV2"]) == pytest.approx(float(np.mean(ref_v2)), abs=1e-4)


def test_reset_drops_queued_work_and_repeated_use_does_not_accumulate(sample):
    maps, boxes, ref_v1, _ = sample
    metric = BoxLocalization()
    _feed(metric, maps, boxes, np.ones(len(maps), bool))  # queued, never computed
    metric.reset()
    assert metric._pending == [] and int(metric.count) == 0 and int(metric.correct_all.sum()) == 0
    for _ in range(3):  # three "fits"
        _feed(metric, maps[:20], boxes[:20], np.ones(20, bool))
        first = metric.compute()
        metric.reset()
    _feed(metric, maps[:20], boxes[:20], np.ones(20, bool))
    assert {k: float(v) for k, v in metric.compute().items()} == {k: float(v) for k, v in first.items()}
    assert int(metric.count) == 20


def test_pickling_and_deepcopy_with_queued_work(sample):
    maps, boxes, ref_v1, _ = sample
    metric = BoxLocalization()
    _feed(metric, maps, boxes, np.ones(len(maps), bool))
    for clone in (copy.deepcopy(metric), pickle.loads(pickle.dumps(metric))):
        assert float(clone.compute()["MaxBoxAcc"]) == pytest.approx(ref_v1[1], abs=1e-4)


def test_all_padding_rows_is_an_error():
    metric = BoxLocalization(asynchronous=False)
    with pytest.raises(ValueError, match="no ground-truth box"):
        metric.update(torch.zeros(1, 224, 224), torch.full((1, 2, 4), -1), torch.ones(1, dtype=torch.bool))


@pytest.mark.parametrize("interval", [0.01, 0.001])
def test_mask_metric_equals_the_reference(interval):
    maps, _ = random_scoremaps(30, 4)
    rng = np.random.default_rng(0)
    masks = []
    for scoremap in maps:
        mask = (scoremap > rng.uniform(0.2, 0.8)).astype(np.uint8)
        mask[rng.random(mask.shape) < 0.05] = 255
        masks.append(mask)
    maps32 = [m.astype(np.float32) for m in maps]
    metric = MaskLocalization(cam_curve_interval=interval)
    for start in range(0, 30, 8):
        metric.update(torch.from_numpy(np.stack(maps32[start:start + 8])), torch.from_numpy(np.stack(masks[start:start + 8])))
    assert float(metric.compute()["PxAP"]) == pytest.approx(pxap(maps32, masks, interval), abs=1e-4)
    metric.reset()
    assert int(metric.foreground.sum()) == 0 and metric._pending == []
