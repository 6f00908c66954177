"""``evaluate.py``: wsolevaluation's ``evaluate_wsol`` on saved score maps, same numbers, faster.

Score maps are ``<scoremap_root>/<image_id>.npy`` (224x224, float32 or float64,
values in [0, 1]); metadata at ``<metadata_root>/<dataset_name>/<split>/``;
masks under ``<mask_root>/OpenImages/``. Flags are accepted with dashes and in
the reference's underscore spelling (``--scoremap_root``; boolean flags also
as ``--multi_contour_eval true``), so existing command lines work unchanged.

Result, as the reference returns it (percent): CUB / ILSVRC: MaxBoxAcc at every
IoU of ``--iou-threshold-list`` (largest contour, or every contour with
``--multi-contour-eval``); the headline ("localization") is their mean with
``--multi-iou-eval``, else the IoU-50 value. OpenImages: PxAP.

Every map of the split must exist before anything is evaluated, and each map is
validated as it is read (wrong shape or dtype, NaN, values outside [0, 1]):
one line naming the image id, exit status 2, no result on partial data. Maps
in the folder that the split does not list are ignored, as by the reference
(a warning says how many). The maps are shared among ``--workers`` processes
(default: every core); each returns count arrays that are summed, so the
figures do not depend on the split of the work. Start-up time counts in
whole-process use: nothing here imports torch, nor numba (the box kernel is
loaded as an extension module built ahead of time on the first run, see
:mod:`wsol_lightning.metrics.compiled`), nor OpenCV for MaxBoxAccV2.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import threading
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from wsol_lightning.data.metadata import Metadata, load_metadata
from wsol_lightning.errors import WSOLInputError, exit_on_input_error
from wsol_lightning.files import check_writable, write_text_atomically
from wsol_lightning.interrupt_guard import InterruptGuard
from wsol_lightning.metrics import compiled
from wsol_lightning.metrics.boxes import BoxCounts, all_contour_ious
from wsol_lightning.metrics.geometry import cam_thresholds
from wsol_lightning.metrics.masks import load_gt_mask
from wsol_lightning.metrics.pxap import bin_edges, pxap_from_histograms, score_histograms
from wsol_lightning.metrics.scoremaps import ReadBuffer, load_scoremap, scoremap_path, validate_scoremap

DATASETS = ("CUB", "ILSVRC", "OpenImages", "synthetic")  # synthetic: the embedded default data (boxes)
MASK_DATASETS = ("OpenImages",)

#: Maps per task handed to a worker (small: noisy and smooth maps differ 2-3x in cost).
CHUNK = 8

# What the workers need, set before the pool forks (nothing large is pickled per task).
_JOB: Dict[str, object] = {}


def _box_chunk(image_ids: Sequence[str]) -> Tuple[np.ndarray, int]:
    every = bool(_JOB["multi_contour_eval"])
    counts = BoxCounts(_JOB["thresholds"], _JOB["ious"], largest=not every, every=every)
    boxes, root = _JOB["boxes"], _JOB["root"]
    # The compiled V2 kernel refuses NaN and values outside [0, 1] as it reads a map (the check here would
    # read it once more); what it refuses is then named by the full check.
    kernel_checks = every and compiled.kernel() is not None
    buffer = ReadBuffer()
    for image_id in image_ids:
        scoremap = load_scoremap(root, image_id, check_values=not kernel_checks, into=buffer)
        try:
            counts.add(scoremap, boxes[image_id])
        except ValueError:
            validate_scoremap(scoremap, image_id)  # raises, naming the image and what is wrong
            raise
    return (counts.every if every else counts.largest), counts.count


def _mask_chunk(image_ids: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    edges, metadata, root, mask_dir = _JOB["edges"], _JOB["metadata"], _JOB["root"], _JOB["mask_dir"]
    foreground = np.zeros(len(edges) - 1)
    background = np.zeros(len(edges) - 1)
    for image_id in image_ids:
        mask = load_gt_mask(mask_dir, metadata.mask_paths[image_id], metadata.ignore_paths.get(image_id, ""))
        fg, bg = score_histograms(load_scoremap(root, image_id), mask, edges)
        foreground += fg
        background += bg
    return foreground, background


def _worker_init() -> None:
    if _JOB.get("opencv"):  # V1 contour searches, masks: one process per core already
        import cv2

        cv2.setNumThreads(1)


def _run(function, image_ids: Sequence[str], workers: int) -> List[tuple]:
    """``function`` over chunks of image ids, in this process and ``workers - 1`` forked ones (inline for 1
    or few maps). A ``multiprocessing.Pool`` of ``workers`` processes took about 10 % more wall and CPU time
    on 1000 smooth maps (measured 2026-12-02; there the parent only dispatches)."""
    chunks = [image_ids[i:i + CHUNK] for i in range(0, len(image_ids), CHUNK)]
    # fork() from a process with other threads (torch, a metric's thread pool, pytest plugins) can copy a
    # held lock into the child and hang it: fork only from a single-threaded process without torch.
    if threading.active_count() > 1 or "torch" in sys.modules:
        workers = 1
    if workers <= 1 or len(chunks) <= 2:
        return [function(chunk) for chunk in chunks]
    return _forked(function, chunks, min(workers, len(chunks)))


#: Chunk indices that the queue holds, all written before forking: 4 bytes each, within the smallest pipe
#: buffer of the usual systems (16 KiB; 64 KiB on Linux). More chunks are grouped into larger ones.
MAX_QUEUED = 4000


def _forked(function, chunks: List[Sequence[str]], workers: int) -> List[tuple]:
    """``function`` over ``chunks`` in this process and ``workers - 1`` forked children.

    Each takes the next chunk index from a pipe filled before forking (maps differ 2-3x in cost;
    every read of 4 bytes gets one whole index, since all were written before anyone reads) and the
    children send their results back pickled, once, when the pipe is empty. An error empties the
    pipe, so the others stop after their current chunk, and the first one (the parent's, else the
    first child's) is raised here. (No ``multiprocessing``: importing it costs every run ~8 ms.)
    """
    if len(chunks) > MAX_QUEUED:  # more chunks than the pipe holds: fewer, larger ones
        per = -(-len(chunks) // MAX_QUEUED)
        grouped = [[image_id for chunk in chunks[i:i + per] for image_id in chunk] for i in range(0, len(chunks), per)]
        return _forked(function, grouped, workers)
    queue_read, queue_write = os.pipe()
    os.write(queue_write, b"".join(index.to_bytes(4, "little") for index in range(len(chunks))))
    os.close(queue_write)

    def work() -> List[tuple]:
        results = []
        while True:
            data = os.read(queue_read, 4)
            if len(data) < 4:  # empty (or emptied after an error)
                return results
            try:
                results.append(function(chunks[int.from_bytes(data, "little")]))
            except BaseException:
                while os.read(queue_read, 65536):  # the others find it empty
                    pass
                raise

    children = []
    for _ in range(workers - 1):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: work, send, exit without running the parent's exit handlers
            os.close(read)
            status = 1
            try:
                _worker_init()
                payload = ("ok", work())
            except BaseException as error:  # noqa: BLE001 - handed to the parent, which raises it
                payload = ("error", error)
            try:
                with os.fdopen(write, "wb") as pipe:
                    pickle.dump(payload, pipe, protocol=pickle.HIGHEST_PROTOCOL)
                status = 0
            finally:
                os._exit(status)
        os.close(write)
        children.append((pid, read))
    results, failure = [], None
    try:
        results = work()
    except BaseException as error:
        failure = error
    os.close(queue_read)
    for pid, read in children:
        try:
            with os.fdopen(read, "rb") as pipe:
                status, payload = pickle.load(pipe)
        except (EOFError, pickle.UnpicklingError):
            status, payload = "error", RuntimeError(f"evaluate.py: a worker process (pid {pid}) died")
        os.waitpid(pid, 0)
        if status == "ok":
            results.extend(payload)
        elif failure is None:
            failure = payload
    if failure is not None:
        raise failure
    return results


def _check_files(scoremap_root: str, image_ids: Iterable[str]) -> None:
    if not os.path.isdir(scoremap_root):
        raise WSOLInputError(f"--scoremap-root {scoremap_root}: not a directory")
    for image_id in image_ids:
        if not os.path.isfile(scoremap_path(scoremap_root, image_id)):
            raise WSOLInputError(f"{image_id}: score map file missing ({scoremap_path(scoremap_root, image_id)})")


def unlisted_scoremaps(scoremap_root: str, image_ids: Iterable[str]) -> List[str]:
    """Image ids of the ``.npy`` files under ``scoremap_root`` that ``image_ids`` does not list."""
    listed = set(image_ids)
    extra = []
    for directory, _, files in os.walk(scoremap_root):
        for name in files:
            if name.endswith(".npy"):
                image_id = os.path.relpath(os.path.join(directory, name), scoremap_root)[:-len(".npy")]
                if image_id.replace(os.sep, "/") not in listed:
                    extra.append(image_id)
    return sorted(extra)


def evaluate_scoremaps(scoremap_root: str, metadata: Metadata, cam_curve_interval: float = 0.01,
                       multi_contour_eval: bool = False, multi_iou_eval: bool = False,
                       iou_threshold_list: Sequence[int] = (30, 50, 70), mask_root: Optional[str] = None,
                       workers: Optional[int] = None, image_ids: Optional[Sequence[str]] = None,
                       ) -> Dict[str, object]:
    """Evaluate saved score maps as wsolevaluation's ``evaluate_wsol``.

    Args:
        scoremap_root: folder of ``<image_id>.npy`` maps.
        metadata: the split (boxes for CUB / ILSVRC, masks for OpenImages).
        cam_curve_interval: CAM threshold spacing.
        multi_contour_eval: every contour (MaxBoxAccV2) instead of the largest.
        multi_iou_eval: headline = mean over ``iou_threshold_list`` (else IoU 50).
        iou_threshold_list: IoU thresholds (%).
        mask_root: ``<mask_root>/OpenImages/`` holds the masks (mask datasets).
        workers: processes (default: every core).
        image_ids: evaluate these (default: the whole split); an id the
            metadata does not list is refused.

    Returns:
        ``{"localization", "max_box_acc": {"30": %, ...}, "num_images"}`` for box
        datasets, ``{"localization", "pxap", "num_images"}`` for mask datasets.
    """
    thresholds = cam_thresholds(cam_curve_interval)
    workers = workers or os.cpu_count() or 1
    listed = set(metadata.image_ids)
    ids = list(metadata.image_ids if image_ids is None else image_ids)
    for image_id in ids:
        if image_id not in listed:
            raise WSOLInputError(f"{image_id}: image id not in the metadata of {metadata.dataset_name}/"
                                 f"{metadata.split} ({metadata.directory})")
    if not ids:
        raise WSOLInputError("no image to evaluate")
    _check_files(scoremap_root, ids)
    _JOB.clear()
    _JOB.update(metadata=metadata, root=scoremap_root, thresholds=thresholds,
                opencv=metadata.dataset_name in MASK_DATASETS or not multi_contour_eval)
    try:
        if metadata.dataset_name in MASK_DATASETS:
            if mask_root is None:
                raise WSOLInputError("--mask-root: required for OpenImages (masks under <mask_root>/OpenImages/)")
            for image_id in ids:
                if image_id not in metadata.mask_paths:
                    raise WSOLInputError(f"{image_id}: no mask in the metadata ({metadata.directory})")
            _JOB.update(edges=bin_edges(thresholds), mask_dir=os.path.join(mask_root, "OpenImages"))
            parts = _run(_mask_chunk, ids, workers)
            value = pxap_from_histograms(sum(p[0] for p in parts), sum(p[1] for p in parts))
            return {"localization": value, "pxap": value, "num_images": len(ids)}

        ious = [int(k) for k in iou_threshold_list]
        if not multi_iou_eval and 50 not in ious:
            raise WSOLInputError(f"--iou-threshold-list {' '.join(map(str, ious))}: must contain 50 "
                                 f"without --multi-iou-eval (the headline is MaxBoxAcc at IoU 50)")
        boxes = {}
        for image_id in ids:
            image_boxes = metadata.resized_boxes(image_id)
            if len(image_boxes) == 0:
                raise WSOLInputError(f"{image_id}: no ground-truth box in the metadata ({metadata.directory})")
            boxes[image_id] = image_boxes
        _JOB.update(boxes=boxes, ious=ious, multi_contour_eval=multi_contour_eval)
        # Once, before forking: the ahead-of-time kernel (a millisecond to load, no numba import; built on
        # first use), else numba's JIT kernel compiled or loaded from its cache.
        if not compiled.use_ahead_of_time():
            all_contour_ious(np.zeros((2, 2), np.uint8), np.zeros((1, 4), np.int64), np.zeros(1, np.int64))
        parts = _run(_box_chunk, ids, workers)
        counts = sum(p[0] for p in parts)
        count = sum(p[1] for p in parts)
        per_iou = {str(k): float((counts[i] * 100.0 / float(count)).max()) for i, k in enumerate(ious)}
        headline = float(np.average(list(per_iou.values()))) if multi_iou_eval else per_iou["50"]
        return {"localization": headline, "max_box_acc": per_iou, "num_images": count}
    finally:
        _JOB.clear()


def _str2bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("yes", "true", "t", "y", "1"):
        return True
    if lowered in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"boolean value expected, got {value!r}")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit status 2, as every refusal of the package
        raise WSOLInputError(f"{self.prog}: {message}")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Flags, in dash and in the reference's underscore spelling."""
    parser = _Parser(prog="evaluate.py", description=__doc__.splitlines()[0])

    def add(name: str, **kwargs) -> None:
        parser.add_argument(f"--{name}", f"--{name.replace('-', '_')}", **kwargs)

    add("scoremap-root", required=True, help="folder of <image_id>.npy score maps")
    add("metadata-root", required=True, help="metadata at <metadata_root>/<dataset_name>/<split>/")
    add("mask-root", default=None, help="masks at <mask_root>/OpenImages/ (OpenImages)")
    add("dataset-name", required=True, choices=DATASETS)
    add("split", required=True, help="val or test (the metadata folder's name)")
    add("cam-curve-interval", type=float, default=0.01, help="CAM threshold spacing [0.01]")
    add("multi-contour-eval", type=_str2bool, nargs="?", const=True, default=False,
        help="every contour (MaxBoxAccV2) instead of the largest")
    add("multi-iou-eval", type=_str2bool, nargs="?", const=True, default=False,
        help="headline = mean over --iou-threshold-list (MaxBoxAccV2) instead of IoU 50")
    add("iou-threshold-list", type=int, nargs="+", default=[30, 50, 70], help="IoU thresholds in %% [30 50 70]")
    add("json", default=None, help="write the result as JSON here")
    add("workers", type=int, default=None, help="processes [every core]")
    args = parser.parse_args(list(argv))
    if not 0 < args.cam_curve_interval < 1:
        raise WSOLInputError(f"--cam-curve-interval={args.cam_curve_interval} must be in (0, 1)")
    if any(not 0 < k <= 100 for k in args.iou_threshold_list):
        raise WSOLInputError(f"--iou-threshold-list {args.iou_threshold_list}: values must be in (0, 100]")
    if args.workers is not None and args.workers < 1:
        raise WSOLInputError(f"--workers={args.workers} must be >= 1")
    return args


@exit_on_input_error
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``evaluate.py``; returns the exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.json:
        check_writable(args.json, "--json")
    metadata = load_metadata(args.metadata_root, args.dataset_name, args.split)
    with InterruptGuard() as guard:  # Ctrl-C, SIGTERM: one line, not a traceback; nothing is written before the end
        try:
            result = evaluate_scoremaps(args.scoremap_root, metadata, args.cam_curve_interval,
                                        args.multi_contour_eval, args.multi_iou_eval, args.iou_threshold_list,
                                        args.mask_root, args.workers)
        except KeyboardInterrupt:
            print(f"evaluate.py: interrupted by {guard.signal_name}; no result was written", file=sys.stderr)
            return guard.exit_status
    extra = unlisted_scoremaps(args.scoremap_root, metadata.image_ids)
    if extra:
        print(f"warning: {len(extra)} score maps under {args.scoremap_root} are not in {args.dataset_name}/"
              f"{args.split} and were ignored (e.g. {extra[0]})", file=sys.stderr)
    where = f"{args.dataset_name}/{args.split}, {result['num_images']} images, interval {args.cam_curve_interval}"
    if "pxap" in result:
        print(f"PxAP ({where}): {result['pxap']:.4f}")
    else:
        contours = "every contour" if args.multi_contour_eval else "largest contour"
        per_iou = ", ".join(f"IoU {k}: {v:.4f}" for k, v in result["max_box_acc"].items())
        print(f"MaxBoxAcc ({where}, {contours}): {per_iou}")
    print(f"localization: {result['localization']:.4f}")
    if args.json:
        write_text_atomically(args.json, json.dumps(result, indent=2) + "\n")
    return 0
