"""torchmetrics metrics of WSOL localization, over the same kernels as ``scripts/evaluate.py``.

``BoxLocalization`` counts, per map, exactly what ``evaluate.py`` counts
(:class:`wsol_lightning.metrics.boxes.BoxCounts`), so ``val/MaxBoxAccV2`` during
training equals ``scripts/evaluate.py --multi-contour-eval --multi-iou-eval``
on the same maps saved as ``.npy``.

The contour work runs on CPU threads, off the training loop: ``update()``
copies the batch's maps to host memory and hands them to a small thread pool
(the numba kernel and OpenCV release the GIL), then returns; the counts are
collected when the states are needed (``compute()``, a DDP ``sync()``,
pickling). So on a GPU the next validation batches run while earlier ones are
being scored. States are integer count tensors summed across processes
(``dist_reduce_fx="sum"``), so the figures are right under DDP; ``reset()``
waits for and drops pending work, so a process that fits many times (tuning)
accumulates nothing. ``update()`` copies a CPU batch (a CPU tensor's
``numpy()`` is a view the caller may overwrite while a thread reads it). An
exception raised while scoring a queued batch is never dropped: it is raised
again, as itself, by the next ``update()`` once that batch is done, else by
``compute()`` / ``sync()`` / ``reset()`` / pickling, so the epoch fails loudly.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torchmetrics import Metric

from wsol_lightning.metrics.boxes import BoxCounts
from wsol_lightning.metrics.geometry import cam_thresholds
from wsol_lightning.metrics.pxap import bin_edges, pxap_from_histograms, score_histograms

#: IoU thresholds (%) of MaxBoxAccV2.
V2_IOU_THRESHOLDS = (30, 50, 70)

_EXECUTOR: Optional[ThreadPoolExecutor] = None
_EXECUTOR_LOCK = threading.Lock()


def metric_executor() -> ThreadPoolExecutor:
    """The process's pool of metric threads (one per core, at most 4), created on first use."""
    global _EXECUTOR
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None:
            _EXECUTOR = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)),
                                           thread_name_prefix="wsol-metrics")
        return _EXECUTOR


class _AsyncCountsMetric(Metric):
    """A metric whose ``update`` queues numpy work on the metric threads; results land in the states later."""

    full_state_update = False

    def __init__(self, asynchronous: bool = True) -> None:
        super().__init__()
        self.asynchronous = asynchronous
        self._pending: List[Future] = []

    def _host_copy(self, tensor: torch.Tensor) -> np.ndarray:
        """``tensor`` as a numpy array the caller cannot change under a metric thread.

        A CUDA tensor's ``.cpu()`` is already a copy; a CPU tensor's ``.numpy()``
        shares its memory, so it is copied when a thread will read it later.
        """
        tensor = tensor.detach()
        array = tensor.cpu().numpy()
        return array.copy() if self.asynchronous and tensor.device.type == "cpu" else array

    def _submit(self, function, *args) -> None:
        if self.asynchronous:
            self._raise_finished_errors()
            self._pending.append(metric_executor().submit(function, *args))
        else:
            self._accumulate(function(*args))

    def _raise_finished_errors(self) -> None:
        """Fail now if a queued batch already failed (its error, raised as itself, after the queue drains)."""
        if any(future.done() and future.exception() is not None for future in self._pending):
            self._drain()

    def _accumulate(self, result) -> None:
        raise NotImplementedError

    def _drain(self) -> None:
        """Wait for the queued batches and add their counts to the states (in submission order).

        Raises:
            The exception of the first queued batch that failed (after every queued batch has
            finished, so no thread still works for this metric); the queue is empty afterwards.
        """
        pending, self._pending = self._pending, []
        error: Optional[BaseException] = None
        for future in pending:
            failure = future.exception()  # waits
            if failure is not None:
                error = error or failure
            elif error is None:
                self._accumulate(future.result())
        if error is not None:
            raise error

    def sync(self, *args, **kwargs) -> None:  # noqa: D102 - torchmetrics calls this before compute
        self._drain()
        super().sync(*args, **kwargs)

    def reset(self) -> None:
        """Drop the states and the queued work's results; a queued batch's error is raised (after the reset)."""
        pending, self._pending = self._pending, []
        error = None
        for future in pending:  # waited for, not cancelled: every queued batch runs and may fail
            error = error or future.exception()
        super().reset()
        if error is not None:
            raise error

    def __getstate__(self) -> dict:  # noqa: D105
        self._drain()
        state = super().__getstate__()
        state["_pending"] = []
        return state


def _box_batch(thresholds: np.ndarray, iou_thresholds: Sequence[int], row50: int, maps: np.ndarray,
               boxes: np.ndarray, correct: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    counts = BoxCounts(thresholds, iou_thresholds)
    loc_cls = np.zeros(len(thresholds), dtype=np.int64)
    for scoremap, image_boxes, is_correct in zip(maps, boxes, correct):
        image_boxes = image_boxes[image_boxes[:, 0] >= 0]
        if len(image_boxes) == 0:
            raise ValueError("BoxLocalization.update: an image has no ground-truth box (all rows are -1 padding)")
        hits_largest, _ = counts.add(scoremap, image_boxes)
        if is_correct:
            loc_cls += hits_largest[row50]
    return counts.largest, counts.every, loc_cls, counts.count


class BoxLocalization(_AsyncCountsMetric):
    """MaxBoxAcc (V1), MaxBoxAccV2 and top-1 localization over a split.

    Args:
        cam_curve_interval: spacing of the CAM thresholds.
        iou_thresholds: IoU thresholds (%) of MaxBoxAccV2.
        asynchronous: score batches on the metric threads (False: inside ``update``).

    ``compute()`` returns percentages (float32 tensors): ``MaxBoxAcc`` (largest
    contour, IoU 50), ``MaxBoxAccV2`` (every contour, mean over
    ``iou_thresholds``), ``MaxBoxAccV2_IoU<k>`` per threshold, and ``top1_loc``
    (correct class and IoU >= 0.5 at the threshold maximizing MaxBoxAcc).
    """

    def __init__(self, cam_curve_interval: float = 0.01, iou_thresholds: Sequence[int] = V2_IOU_THRESHOLDS,
                 asynchronous: bool = True) -> None:
        super().__init__(asynchronous)
        self.thresholds = cam_thresholds(cam_curve_interval)
        self.iou_names = [int(k) for k in iou_thresholds]
        self.counted_ious = sorted(set(self.iou_names) | {50})
        self.v2_rows = [self.counted_ious.index(k) for k in self.iou_names]
        self.row50 = self.counted_ious.index(50)
        shape = (len(self.counted_ious), len(self.thresholds))
        self.add_state("correct_largest", torch.zeros(shape, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("correct_all", torch.zeros(shape, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("correct_loc_cls", torch.zeros(len(self.thresholds), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, scoremaps: torch.Tensor, gt_boxes: torch.Tensor, correct_class: torch.Tensor) -> None:
        """Queue a batch.

        Args:
            scoremaps: ``[B, 224, 224]`` in [0, 1].
            gt_boxes: ``[B, K, 4]`` int boxes at 224, padded with rows of -1.
            correct_class: ``[B]`` bool, the classifier's top-1 is right.
        """
        maps = self._host_copy(scoremaps)
        boxes = gt_boxes.detach().cpu().numpy().astype(np.int64)  # astype copies
        correct = correct_class.detach().cpu().numpy().astype(bool)
        if not (len(maps) == len(boxes) == len(correct)):
            raise ValueError(f"BoxLocalization.update: batch sizes differ ({len(maps)}, {len(boxes)}, {len(correct)})")
        self._submit(_box_batch, self.thresholds, self.counted_ious, self.row50, maps, boxes, correct)

    def _accumulate(self, result) -> None:
        largest, every, loc_cls, count = result
        device = self.correct_largest.device
        self.correct_largest += torch.from_numpy(largest).to(device)
        self.correct_all += torch.from_numpy(every).to(device)
        self.correct_loc_cls += torch.from_numpy(loc_cls).to(device)
        self.count += count

    def _best_index(self) -> int:
        return int(torch.argmax(self.correct_largest[self.row50]).item())  # first of ties, as np.argmax

    def best_threshold(self) -> float:
        """The CAM threshold that maximizes MaxBoxAcc (first of ties)."""
        self._drain()
        return float(self.thresholds[self._best_index()])

    def compute(self) -> Dict[str, torch.Tensor]:  # noqa: D102
        self._drain()
        count = self.count.clamp(min=1).double()
        accuracy_all = self.correct_all.double() * 100.0 / count
        results = {"MaxBoxAcc": (self.correct_largest[self.row50].double() * 100.0 / count).max()}
        per_iou = [accuracy_all[row].max() for row in self.v2_rows]
        results["MaxBoxAccV2"] = torch.stack(per_iou).mean()
        for name, value in zip(self.iou_names, per_iou):
            results[f"MaxBoxAccV2_IoU{name}"] = value
        results["top1_loc"] = self.correct_loc_cls[self._best_index()].double() * 100.0 / count
        return {k: v.float() for k, v in results.items()}


def _mask_batch(edges: np.ndarray, maps: np.ndarray, masks: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    foreground = np.zeros(len(edges) - 1, dtype=np.int64)
    background = np.zeros(len(edges) - 1, dtype=np.int64)
    for scoremap, mask in zip(maps, masks):
        fg, bg = score_histograms(scoremap, mask, edges)
        foreground += fg.astype(np.int64)
        background += bg.astype(np.int64)
    return foreground, background


class MaskLocalization(_AsyncCountsMetric):
    """PxAP over a split (``compute() -> {"PxAP": %}``).

    Args:
        cam_curve_interval: spacing of the CAM thresholds (histogram bins).
        asynchronous: histogram batches on the metric threads (False: inside ``update``).
    """

    def __init__(self, cam_curve_interval: float = 0.01, asynchronous: bool = True) -> None:
        super().__init__(asynchronous)
        self.edges = bin_edges(cam_thresholds(cam_curve_interval))
        bins = len(self.edges) - 1
        self.add_state("foreground", torch.zeros(bins, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("background", torch.zeros(bins, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, scoremaps: torch.Tensor, gt_masks: torch.Tensor) -> None:
        """Queue a batch: ``[B, 224, 224]`` maps and uint8 masks (0, 1, 255 ignored)."""
        self._submit(_mask_batch, self.edges, self._host_copy(scoremaps), self._host_copy(gt_masks))

    def _accumulate(self, result) -> None:
        foreground, background = result
        self.foreground += torch.from_numpy(foreground).to(self.foreground.device)
        self.background += torch.from_numpy(background).to(self.background.device)

    def compute(self) -> Dict[str, torch.Tensor]:  # noqa: D102
        self._drain()
        value = pxap_from_histograms(self.foreground.cpu().numpy().astype(np.float64),
                                     self.background.cpu().numpy().astype(np.float64))
        return {"PxAP": torch.tensor(value, dtype=torch.float32)}
