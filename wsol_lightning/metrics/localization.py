"""torchmetrics metrics of WSOL localization, over the kernels of ``boxes`` and ``pxap``.

States are count tensors summed across processes (``dist_reduce_fx="sum"``), so
the figures are right under DDP, and ``reset()`` drops everything: a process
that fits many times (tuning) accumulates nothing. Score maps are moved to the
CPU once per batch, where OpenCV computes the contours.
"""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import torch
from torchmetrics import Metric

from wsol_lightning.metrics.boxes import best_ious_per_threshold, correct_at_iou
from wsol_lightning.metrics.geometry import cam_thresholds
from wsol_lightning.metrics.pxap import bin_edges, pxap_from_histograms, score_histograms

#: IoU thresholds (%) of MaxBoxAccV2.
V2_IOU_THRESHOLDS = (30, 50, 70)


class BoxLocalization(Metric):
    """MaxBoxAcc (V1), MaxBoxAccV2 and top-1 localization over a split.

    Args:
        cam_curve_interval: spacing of the CAM thresholds.
        iou_thresholds: IoU thresholds (%) of MaxBoxAccV2.

    ``compute()`` returns percentages: ``MaxBoxAcc`` (largest contour, IoU 50),
    ``MaxBoxAccV2`` (all contours, mean over ``iou_thresholds``),
    ``MaxBoxAccV2_IoU<k>`` per threshold, and ``top1_loc`` (correct class and
    IoU >= 0.5 at the threshold maximizing MaxBoxAcc).
    """

    full_state_update = False

    def __init__(self, cam_curve_interval: float = 0.01, iou_thresholds: Sequence[int] = V2_IOU_THRESHOLDS) -> None:
        super().__init__()
        self.thresholds = cam_thresholds(cam_curve_interval)
        self.iou_thresholds = np.asarray(sorted(set(iou_thresholds) | {50}), dtype=np.float64)
        self.v2_rows = [int(np.where(self.iou_thresholds == k)[0][0]) for k in iou_thresholds]
        self.row50 = int(np.where(self.iou_thresholds == 50)[0][0])
        shape = (len(self.iou_thresholds), len(self.thresholds))
        self.add_state("correct_largest", torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("correct_all", torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("correct_loc_cls", torch.zeros(len(self.thresholds), dtype=torch.float64),
                       dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.iou_names = [int(k) for k in iou_thresholds]

    def update(self, scoremaps: torch.Tensor, gt_boxes: torch.Tensor, correct_class: torch.Tensor) -> None:
        """Accumulate a batch.

        Args:
            scoremaps: ``[B, 224, 224]`` in [0, 1].
            gt_boxes: ``[B, K, 4]`` int boxes at 224, padded with rows of -1.
            correct_class: ``[B]`` bool, the classifier's top-1 is right.
        """
        maps = scoremaps.detach().float().cpu().numpy()
        boxes = gt_boxes.detach().cpu().numpy()
        correct = correct_class.detach().cpu().numpy().astype(bool)
        largest_counts = np.zeros(self.correct_largest.shape)
        all_counts = np.zeros(self.correct_all.shape)
        loc_cls = np.zeros(len(self.thresholds))
        for scoremap, image_boxes, is_correct in zip(maps, boxes, correct):
            image_boxes = image_boxes[image_boxes[:, 0] >= 0]
            largest, every = best_ious_per_threshold(scoremap, image_boxes, self.thresholds)
            hits_largest = correct_at_iou(largest, self.iou_thresholds)
            largest_counts += hits_largest
            all_counts += correct_at_iou(every, self.iou_thresholds)
            if is_correct:
                loc_cls += hits_largest[self.row50]
        device = self.correct_largest.device
        self.correct_largest += torch.from_numpy(largest_counts).to(device)
        self.correct_all += torch.from_numpy(all_counts).to(device)
        self.correct_loc_cls += torch.from_numpy(loc_cls).to(device)
        self.count += len(maps)

    def _best_index(self) -> int:
        return int(torch.argmax(self.correct_largest[self.row50]).item())

    def best_threshold(self) -> float:
        """The CAM threshold that maximizes MaxBoxAcc (first of ties)."""
        return float(self.thresholds[self._best_index()])

    def compute(self) -> Dict[str, torch.Tensor]:  # noqa: D102
        count = self.count.clamp(min=1)
        accuracy_all = self.correct_all * 100 / count
        results = {"MaxBoxAcc": (self.correct_largest[self.row50] * 100 / count).max()}
        per_iou = [accuracy_all[row].max() for row in self.v2_rows]
        results["MaxBoxAccV2"] = torch.stack(per_iou).mean()
        for name, value in zip(self.iou_names, per_iou):
            results[f"MaxBoxAccV2_IoU{name}"] = value
        results["top1_loc"] = self.correct_loc_cls[self._best_index()] * 100 / count
        return {k: v.float() for k, v in results.items()}


class MaskLocalization(Metric):
    """PxAP over a split (``compute() -> {"PxAP": %}``).

    Args:
        cam_curve_interval: spacing of the CAM thresholds (histogram bins).
    """

    full_state_update = False

    def __init__(self, cam_curve_interval: float = 0.01) -> None:
        super().__init__()
        self.edges = bin_edges(cam_thresholds(cam_curve_interval))
        bins = len(self.edges) - 1
        self.add_state("foreground", torch.zeros(bins, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("background", torch.zeros(bins, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, scoremaps: torch.Tensor, gt_masks: torch.Tensor) -> None:
        """Accumulate a batch: ``[B, 224, 224]`` maps and uint8 masks (0, 1, 255 ignored)."""
        maps = scoremaps.detach().float().cpu().numpy()
        masks = gt_masks.detach().cpu().numpy()
        foreground = np.zeros(len(self.edges) - 1)
        background = np.zeros(len(self.edges) - 1)
        for scoremap, mask in zip(maps, masks):
            fg, bg = score_histograms(scoremap, mask, self.edges)
            foreground += fg
            background += bg
        self.foreground += torch.from_numpy(foreground).to(self.foreground.device)
        self.background += torch.from_numpy(background).to(self.background.device)

    def compute(self) -> Dict[str, torch.Tensor]:  # noqa: D102
        value = pxap_from_histograms(self.foreground.cpu().numpy(), self.background.cpu().numpy())
        return {"PxAP": torch.tensor(value, dtype=torch.float32)}
