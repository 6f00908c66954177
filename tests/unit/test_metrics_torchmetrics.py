"""BoxLocalization / MaskLocalization: the reference's numbers, DDP sums, clean resets, safe threads.

(evaluate.py is checked against the same reference in tests/integration/test_evaluate_script.py;
comparing the two package paths with each other would prove nothing the reference does not.)
"""

import copy
import pickle
import threading

import numpy as np
import pytest
import torch

from tests.reference_wsol_metrics import best_ious, max_box_acc_from_ious, pxap, random_scoremaps
from wsol_lightning.metrics.localization import BoxLocalization, MaskLocalization, metric_executor

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
def per_map_ious():
    """50 float32 maps (what the module feeds), GT boxes and the reference's best IoUs per map and threshold."""
    maps, boxes = random_scoremaps(50, 11, kinds=KINDS)
    maps = [m.astype(np.float32) for m in maps]
    return maps, boxes, [best_ious(m, b, np.arange(0, 1, 0.01)) for m, b in zip(maps, boxes)]


@pytest.fixture(scope="module")
def sample(per_map_ious):
    """The maps, their boxes and the reference's (V1, V2) accuracies at IoU 30/50/70."""
    maps, boxes, ious = per_map_ious
    ref_v1, ref_v2 = max_box_acc_from_ious(ious, [30, 50, 70])
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


def test_top1_loc_counts_right_class_and_iou_at_the_best_v1_threshold(per_map_ious):
    maps, boxes, ious = per_map_ious
    rng = np.random.default_rng(0)
    correct = rng.random(len(maps)) < 0.5
    metric = BoxLocalization()
    _feed(metric, maps, boxes, correct)
    result = metric.compute()
    thresholds = np.arange(0, 1, 0.01)
    v1 = np.array([map_ious[0] for map_ious in ious])  # [N, T]
    best_t = int(np.argmax((v1 >= 0.5).sum(0)))
    expected = 100.0 * np.sum(correct & (v1[:, best_t] >= 0.5)) / len(maps)
    assert float(result["top1_loc"]) == pytest.approx(expected, abs=1e-4)
    assert metric.best_threshold() == pytest.approx(thresholds[best_t])
    none_right = BoxLocalization()
    _feed(none_right, maps[:10], boxes[:10], np.zeros(10, bool))
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
    _feed(metric, maps[:10], boxes[:10], np.ones(10, bool))  # queued, never computed
    metric.reset()
    assert metric._pending == [] and int(metric.count) == 0 and int(metric.correct_all.sum()) == 0
    for _ in range(3):  # three "fits"
        _feed(metric, maps[:10], boxes[:10], np.ones(10, bool))
        first = metric.compute()
        metric.reset()
    _feed(metric, maps[:10], boxes[:10], np.ones(10, bool))
    assert {k: float(v) for k, v in metric.compute().items()} == {k: float(v) for k, v in first.items()}
    assert int(metric.count) == 10


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


@pytest.fixture
def held_threads():
    """Every metric thread busy until ``release.set()``: what ``update`` queues waits, deterministically.

    Yields the release event (set again at teardown, so no thread stays blocked).
    """
    executor = metric_executor()
    workers = executor._max_workers  # ThreadPoolExecutor has no public size; the pool is ours
    release, running = threading.Event(), threading.Semaphore(0)

    def hold():
        running.release()
        release.wait(60)

    holders = [executor.submit(hold) for _ in range(workers)]
    for _ in range(workers):
        assert running.acquire(timeout=60)
    yield release
    release.set()
    for holder in holders:
        holder.result(timeout=60)


def test_update_copies_a_cpu_batch_the_caller_overwrites_before_it_is_scored(sample, held_threads):
    """A CPU tensor's numpy() is a view: overwritten by the caller (a reused buffer) before the metric
    thread reads it, it must not change the figures."""
    maps, boxes, ref_v1, ref_v2 = sample
    box_metric, mask_metric = BoxLocalization(), MaskLocalization()
    tensor_maps = torch.from_numpy(np.stack(maps))
    masks = torch.from_numpy(np.stack([(m > 0.5).astype(np.uint8) for m in maps]))
    expected_pxap = pxap(maps, list(masks.numpy().copy()), 0.01)
    box_metric.update(tensor_maps, _padded(boxes), torch.ones(len(maps), dtype=torch.bool))
    mask_metric.update(tensor_maps, masks)
    tensor_maps.fill_(0.5)  # the caller reuses its buffers while the batches wait for a thread
    masks.fill_(1)
    held_threads.set()
    result = box_metric.compute()
    assert float(result["MaxBoxAcc"]) == pytest.approx(ref_v1[1], abs=1e-4)
    assert float(result["MaxBoxAccV2"]) == pytest.approx(float(np.mean(ref_v2)), abs=1e-4)
    assert float(mask_metric.compute()["PxAP"]) == pytest.approx(expected_pxap, abs=1e-4)


def _no_box_batch():
    return torch.rand(2, 224, 224), torch.full((2, 1, 4), -1), torch.ones(2, dtype=torch.bool)


def test_an_error_in_a_queued_batch_is_raised_by_compute(sample, held_threads):
    maps, boxes, _, _ = sample
    metric = BoxLocalization()
    _feed(metric, maps[:8], boxes[:8], np.ones(8, bool))
    metric.update(*_no_box_batch())  # queued: the error happens later, on a metric thread
    held_threads.set()
    with pytest.raises(ValueError, match="an image has no ground-truth box"):
        metric.compute()
    assert metric._pending == []


def test_an_error_in_a_queued_batch_is_raised_by_reset_and_the_metric_stays_usable(sample, held_threads):
    """reset() used to wait and drop errors with the results: a failed epoch then looked clean."""
    maps, boxes, ref_v1, _ = sample
    metric = BoxLocalization()
    metric.update(*_no_box_batch())
    held_threads.set()
    with pytest.raises(ValueError, match="an image has no ground-truth box"):
        metric.reset()
    assert metric._pending == [] and int(metric.count) == 0
    _feed(metric, maps, boxes, np.ones(len(maps), bool))
    assert float(metric.compute()["MaxBoxAcc"]) == pytest.approx(ref_v1[1], abs=1e-4)


def test_an_error_in_a_finished_batch_is_raised_by_the_next_update(sample, held_threads):
    maps, boxes, _, _ = sample
    metric = MaskLocalization()
    metric.update(torch.rand(2, 224, 224), torch.ones(2, 100, 100, dtype=torch.uint8))  # mask shape: fails
    held_threads.set()
    metric._pending[0].exception(timeout=60)  # the batch has failed on its thread
    with pytest.raises(IndexError, match="boolean index did not match"):
        metric.update(torch.rand(2, 224, 224), torch.ones(2, 224, 224, dtype=torch.uint8))


def test_an_error_in_a_metric_thread_fails_the_validation_epoch():
    """Through Lightning: the error of a metric thread ends trainer.validate, it is not logged over."""
    from lightning.pytorch import Trainer
    from torch.utils.data import DataLoader

    from wsol_lightning.module import WSOLModule

    batches = [{"image": torch.randn(2, 3, 64, 64), "label": torch.tensor([0, 1]),
                "gt_boxes": torch.tensor([[[1, 1, 30, 30]], [[-1, -1, -1, -1]]])}]
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False)
    with pytest.raises(ValueError, match="an image has no ground-truth box"):
        trainer.validate(WSOLModule(num_classes=3, backbone="small", wsol_method="base"),
                         dataloaders=DataLoader(batches, batch_size=None), verbose=False)
