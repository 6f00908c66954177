"""``evaluate.py``: wsolevaluation's ``evaluate_wsol`` on saved score maps, same numbers, faster.

Score maps are ``<scoremap_root>/<image_id>.npy`` (224x224, float32 or float64,
values in [0, 1]); metadata at ``<metadata_root>/<dataset_name>/<split>/``;
masks under ``<mask_root>/OpenImages/``. Every map is validated before any is
evaluated (missing file, wrong shape or dtype, NaN, values outside [0, 1] -> one
line naming the image id): nothing is evaluated on partial data.

The work is split over processes (``--workers``, default: all cores) by image;
each returns count arrays that are summed, so the result does not depend on the
split. Nothing here imports torch (start-up time counts in whole-process use).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from wsol_lightning.data.metadata import Metadata, load_metadata
from wsol_lightning.errors import WSOLInputError, exit_on_input_error
from wsol_lightning.metrics.boxes import best_ious_per_threshold, correct_at_iou
from wsol_lightning.metrics.geometry import SCOREMAP_SIZE, cam_thresholds
from wsol_lightning.metrics.masks import load_gt_mask
from wsol_lightning.metrics.pxap import bin_edges, pxap_from_histograms, score_histograms

DATASETS = ("CUB", "ILSVRC", "OpenImages")


def load_scoremap(scoremap_root: str, image_id: str) -> np.ndarray:
    """Read and validate one score map; errors name the image id."""
    path = os.path.join(scoremap_root, image_id + ".npy")
    try:
        scoremap = np.load(path)
    except FileNotFoundError:
        raise WSOLInputError(f"{image_id}: score map file missing ({path})") from None
    except (ValueError, OSError) as error:
        raise WSOLInputError(f"{image_id}: score map unreadable ({path}: {error})") from None
    if scoremap.shape != (SCOREMAP_SIZE, SCOREMAP_SIZE):
        raise WSOLInputError(f"{image_id}: score map has shape {scoremap.shape}, expected "
                             f"({SCOREMAP_SIZE}, {SCOREMAP_SIZE})")
    if scoremap.dtype not in (np.float32, np.float64):
        raise WSOLInputError(f"{image_id}: score map dtype {scoremap.dtype}, expected float32 or float64")
    if np.isnan(scoremap).any():
        raise WSOLInputError(f"{image_id}: score map contains NaN")
    low, high = float(scoremap.min()), float(scoremap.max())
    if low < 0 or high > 1:
        raise WSOLInputError(f"{image_id}: score map values outside [0, 1] (min {low:.4g}, max {high:.4g})")
    return scoremap


_JOB: Dict[str, object] = {}


def _box_counts(image_ids: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    thresholds, ious, metadata, root = (_JOB["thresholds"], _JOB["ious"], _JOB["metadata"], _JOB["root"])
    largest = np.zeros((len(ious), len(thresholds)))
    every = np.zeros((len(ious), len(thresholds)))
    for image_id in image_ids:
        best_largest, best_every = best_ious_per_threshold(load_scoremap(root, image_id),
                                                           metadata.resized_boxes(image_id), thresholds)
        largest += correct_at_iou(best_largest, ious)
        every += correct_at_iou(best_every, ious)
    return largest, every


def _mask_counts(image_ids: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    edges, metadata, root, mask_dir = _JOB["edges"], _JOB["metadata"], _JOB["root"], _JOB["mask_dir"]
    foreground = np.zeros(len(edges) - 1)
    background = np.zeros(len(edges) - 1)
    for image_id in image_ids:
        mask = load_gt_mask(mask_dir, metadata.mask_paths[image_id], metadata.ignore_paths.get(image_id, ""))
        fg, bg = score_histograms(load_scoremap(root, image_id), mask, edges)
        foreground += fg
        background += bg
    return foreground, background


def _map_chunks(function, image_ids: Sequence[str], workers: int) -> List[Tuple[np.ndarray, np.ndarray]]:
    chunks = [list(image_ids[i::workers * 4]) for i in range(workers * 4)]
    chunks = [c for c in chunks if c]
    if workers <= 1 or len(image_ids) < 64:
        return [function(chunk) for chunk in chunks]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(function, chunks)


def evaluate_scoremaps(scoremap_root: str, metadata: Metadata, cam_curve_interval: float = 0.01,
                       multi_contour_eval: bool = False, multi_iou_eval: bool = False,
                       iou_threshold_list: Sequence[int] = (30, 50, 70), mask_root: Optional[str] = None,
                       workers: Optional[int] = None) -> Dict[str, object]:
    """Evaluate saved score maps as wsolevaluation's ``evaluate_wsol``.

    Returns:
        ``{"localization", "max_box_acc": {iou: %}, "num_images"}`` for box
        datasets, ``{"localization", "pxap", "num_images"}`` for mask datasets.
    """
    workers = workers or os.cpu_count() or 1
    image_ids = list(metadata.image_ids)
    for image_id in image_ids:  # validate everything before evaluating anything
        load_scoremap(scoremap_root, image_id)
    _JOB.update(metadata=metadata, root=scoremap_root, thresholds=cam_thresholds(cam_curve_interval))
    if metadata.has_masks:
        if mask_root is None:
            raise WSOLInputError("--mask-root: required for mask datasets (OpenImages)")
        _JOB.update(edges=bin_edges(_JOB["thresholds"]), mask_dir=os.path.join(mask_root, "OpenImages"))
        parts = _map_chunks(_mask_counts, image_ids, workers)
        value = pxap_from_histograms(sum(p[0] for p in parts), sum(p[1] for p in parts))
        return {"localization": value, "pxap": value, "num_images": len(image_ids)}
    ious = [int(k) for k in (iou_threshold_list if multi_iou_eval else [50])]
    _JOB["ious"] = np.asarray(ious, dtype=np.float64)
    parts = _map_chunks(_box_counts, image_ids, workers)
    counts = sum(p[1] if multi_contour_eval else p[0] for p in parts)
    per_iou = {str(k): float((counts[i] * 100.0 / len(image_ids)).max()) for i, k in enumerate(ious)}
    headline = float(np.mean(list(per_iou.values()))) if multi_iou_eval else per_iou["50"]
    return {"localization": headline, "max_box_acc": per_iou, "num_images": len(image_ids)}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Flags, in dash and in the reference's underscore spelling."""
    parser = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.splitlines()[0])

    def add(name: str, **kwargs) -> None:
        parser.add_argument(f"--{name}", f"--{name.replace('-', '_')}", **kwargs)

    add("scoremap-root", required=True, help="folder of <image_id>.npy score maps")
    add("metadata-root", required=True, help="metadata at <metadata_root>/<dataset_name>/<split>/")
    add("mask-root", default=None, help="masks at <mask_root>/OpenImages/ (OpenImages)")
    add("dataset-name", required=True, choices=DATASETS)
    add("split", default="test", help="[test]")
    add("cam-curve-interval", type=float, default=0.01, help="[0.01]")
    add("multi-contour-eval", action="store_true", help="all contours (MaxBoxAccV2)")
    add("multi-iou-eval", action="store_true", help="mean over --iou-threshold-list (MaxBoxAccV2)")
    add("iou-threshold-list", type=int, nargs="+", default=[30, 50, 70], help="[30 50 70]")
    add("json", default=None, help="write the result as JSON here")
    add("workers", type=int, default=None, help="processes [all cores]")
    args = parser.parse_args(list(argv))
    if not 0 < args.cam_curve_interval < 1:
        raise WSOLInputError(f"--cam-curve-interval={args.cam_curve_interval} must be in (0, 1)")
    if any(not 0 < k <= 100 for k in args.iou_threshold_list):
        raise WSOLInputError(f"--iou-threshold-list {args.iou_threshold_list}: values must be in (0, 100]")
    return args


@exit_on_input_error
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``evaluate.py``; returns the exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    metadata = load_metadata(args.metadata_root, args.dataset_name, args.split)
    result = evaluate_scoremaps(args.scoremap_root, metadata, args.cam_curve_interval, args.multi_contour_eval,
                                args.multi_iou_eval, args.iou_threshold_list, args.mask_root, args.workers)
    if "pxap" in result:
        print(f"PxAP on {args.dataset_name}/{args.split} ({result['num_images']} images): {result['pxap']:.4f}")
    else:
        name = "MaxBoxAccV2" if args.multi_contour_eval and args.multi_iou_eval else "MaxBoxAcc"
        per_iou = ", ".join(f"IoU {k}: {v:.4f}" for k, v in result["max_box_acc"].items())
        print(f"{name} on {args.dataset_name}/{args.split} ({result['num_images']} images): "
              f"{result['localization']:.4f} ({per_iou})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0
