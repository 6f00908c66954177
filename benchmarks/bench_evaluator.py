#!/usr/bin/env python
"""Evaluator speed: ``scripts/evaluate.py`` vs one OpenCV contour search per map and threshold.

For each map family it generates N score maps with CUB-style metadata (split
``test``) in a temporary folder (in RAM where there is a tmpfs):

* ``smooth``: CAM-like maps (a few bumps on a 7x7 to 28x28 grid, resized
  bicubically to 224 and min-max normalized, as a trained network's CAMs);
* ``speckled``: the same with light pixel-level speckle (uniform noise of up to
  5-15 % of the range on every pixel): hundreds of small contours and holes
  around the blobs' slopes at every threshold;
* ``noisy``: early-epoch maps (a weak bump under blurred pixel noise):
  hundreds to thousands of small contours per threshold;
* ``mixed`` (not timed by default): half smooth, half noisy, the table of
  earlier versions of this benchmark.

Then it times, as whole processes (``python ...`` start to exit, imports and map
loading included), in the same run on the same maps:

* baseline: wsolevaluation's algorithm as published, in one process as
  ``evaluate_wsol`` runs it: per map (cast to float64 as ``t2n``) and per CAM
  threshold one ``cv2.threshold`` + ``cv2.findContours(RETR_TREE)``, a
  ``cv2.boundingRect`` per contour (V2) or the box of ``max(contours,
  key=cv2.contourArea)`` (V1), the IoU against the GT boxes with numpy. It is
  leaner than the reference itself (which re-slices one IoU matrix per
  threshold), so the speed-ups below are, if anything, understated;
* ``scripts/evaluate.py`` at intervals 0.01 and 0.001, with 2 workers (both
  cores) and 1.

Every process prints its ``localization``; the benchmark fails unless every
``evaluate.py`` row at interval 0.01 equals the baseline's, and the rows at
0.001 equal each other. Next to the wall-clock seconds it reports the CPU
seconds of each process (user + system, children included), which a loaded
machine disturbs less. Usage: ``python benchmarks/bench_evaluator.py`` (1000
maps of each family, MaxBoxAccV2; minutes, most of it the baselines of the
speckled and noisy maps); ``--num-maps 200`` for a quick table; ``--families
smooth noisy`` to choose; ``--v1`` to add the largest-contour (MaxBoxAcc) rows; ``--phases``
for the kernel's CPU time per map by phase instead (seconds).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZE = 224


def _cam_like(rng: np.random.Generator) -> np.ndarray:
    grid = int(rng.choice([7, 14, 28]))
    yy, xx = np.mgrid[0:grid, 0:grid].astype(np.float64)
    cam = np.zeros((grid, grid))
    for _ in range(rng.integers(1, 4)):
        cx, cy = rng.uniform(0, grid, 2)
        sigma = rng.uniform(0.05, 0.3) * grid
        cam += rng.uniform(0.3, 1.0) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2))
    cam += rng.uniform(0, 0.05, cam.shape)
    return cv2.resize(cam, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)


def _noisy(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    cx, cy = rng.uniform(40, 184, 2)
    bump = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * rng.uniform(20, 60) ** 2))
    noise = cv2.GaussianBlur(rng.random((SIZE, SIZE)), (0, 0), rng.uniform(0.6, 1.5))
    return rng.uniform(0.0, 0.3) * bump + noise


def _speckled(rng: np.random.Generator) -> np.ndarray:
    cam = _cam_like(rng)
    cam = (cam - cam.min()) / (cam.max() - cam.min())
    return cam + rng.uniform(0.0, rng.uniform(0.05, 0.15), cam.shape)


#: Map families: name -> generator of one map (any range; min-max normalized when saved).
FAMILIES: Dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "smooth": _cam_like, "speckled": _speckled, "noisy": _noisy}


def make_maps(directory: Path, count: int, seed: int = 0, family: str = "mixed") -> None:
    """Write ``count`` float32 maps of ``family`` and CUB-style metadata under ``directory``.

    ``mixed``: even index CAM-like (smooth), odd noisy.
    """
    rng = np.random.default_rng(seed)
    meta = directory / "metadata" / "CUB" / "test"
    meta.mkdir(parents=True)
    lines = {name: [] for name in ("image_ids", "class_labels", "image_sizes", "localization")}
    for index in range(count):
        image_id = f"bench/{index:05d}.jpg"
        if family == "mixed":
            scoremap = _noisy(rng) if index % 2 else _cam_like(rng)
        else:
            scoremap = FAMILIES[family](rng)
        scoremap = (scoremap - scoremap.min()) / (scoremap.max() - scoremap.min())
        path = directory / "scoremaps" / (image_id + ".npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, scoremap.astype(np.float32))
        width, height = int(rng.integers(300, 500)), int(rng.integers(300, 500))
        lines["image_ids"].append(image_id)
        lines["class_labels"].append(f"{image_id},{index % 7}")
        lines["image_sizes"].append(f"{image_id},{width},{height}")
        for _ in range(rng.integers(1, 3)):
            x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
            x1, y1 = int(rng.integers(x0 + 20, width)), int(rng.integers(y0 + 20, height))
            lines["localization"].append(f"{image_id},{x0},{y0},{x1},{y1}")
    for name, content in lines.items():
        (meta / f"{name}.txt").write_text("\n".join(content) + "\n")


# ----------------------------------------------------------------------------- the baseline
def _baseline_boxes(scoremap: np.ndarray, threshold: float, multi_contour_eval: bool) -> np.ndarray:
    height, width = scoremap.shape
    image = np.expand_dims((scoremap * 255).astype(np.uint8), 2)
    _, binary = cv2.threshold(image, int(threshold * np.max(image)), 255, cv2.THRESH_BINARY)
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    if len(contours) == 0:
        return np.zeros((1, 4), dtype=np.int64)
    if not multi_contour_eval:
        contours = [max(contours, key=cv2.contourArea)]
    boxes = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        boxes.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
    return np.asarray(boxes, dtype=np.int64)


def _baseline_best_iou(boxes: np.ndarray, gt: np.ndarray) -> float:
    a, b = boxes[:, None, :], gt[None, :, :]
    inter = (np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
             * np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1))
    union = ((a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
             + (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1) - inter)
    return float((inter / np.maximum(union, 1) * (union > 0)).max())


def baseline(directory: Path, interval: float, multi_contour_eval: bool, multi_iou_eval: bool) -> None:
    """One contour search per map and threshold, one process; prints ``localization: <value>``."""
    sys.path.insert(0, str(ROOT))
    from wsol_lightning.data.metadata import load_metadata

    metadata = load_metadata(directory / "metadata", "CUB", "test")
    thresholds = list(np.arange(0, 1, interval))
    ious = [30, 50, 70]
    correct = np.zeros((len(ious), len(thresholds)))
    for image_id in metadata.image_ids:
        scoremap = np.load(directory / "scoremaps" / (image_id + ".npy")).astype(np.float64)  # as t2n
        gt = metadata.resized_boxes(image_id)
        for index, threshold in enumerate(thresholds):
            best = _baseline_best_iou(_baseline_boxes(scoremap, threshold, multi_contour_eval), gt)
            for row, k in enumerate(ious):
                correct[row, index] += best >= k / 100
    per_iou = (correct * 100.0 / len(metadata.image_ids)).max(axis=1)
    print(f"localization: {per_iou.mean() if multi_iou_eval else per_iou[1]:.4f}")


# ----------------------------------------------------------------------------- the kernel's phases
def kernel_phases(family: str, count: int, interval: float = 0.01) -> Dict[str, float]:
    """CPU milliseconds per map of the V2 kernel and of its phases on ``count`` maps of ``family``.

    The phases are the numba functions of :mod:`wsol_lightning.metrics.sweeps` called one by one
    (just in time), each on every map after a warm-up, cumulatively, for each of the kernel's two ways
    forced (the kernel itself picks one per map): the sweeps (classes + neighbour masks, classes + class
    runs, everything but the hole sweep, everything) and the level runs (classes + the run count that picks
    the way, everything but the holes, everything). One GT box per map.
    """
    from wsol_lightning.metrics import boxes, compiled, sweeps
    from wsol_lightning.metrics.compiled import kernel

    rng = np.random.default_rng(0)
    maps = []
    for _ in range(count):
        scoremap = FAMILIES[family](rng)
        maps.append(((scoremap - scoremap.min()) / (scoremap.max() - scoremap.min())).astype(np.float32))
    gt = np.array([[20, 30, 150, 170]], np.int64)
    thresholds = np.arange(0, 1, interval)
    size = (SIZE + 2) * (SIZE + 2)
    workspace = compiled.workspace(SIZE, SIZE, columns=8 * size)  # forced level runs on noisy maps: wide
    ws_int, ws_info, ws_cls, ws_masks, _, _, ws_rows = workspace
    u8s = [boxes.scoremap_to_uint8(m) for m in maps]
    levels = np.unique((thresholds * 255).astype(np.int64))
    lut = np.searchsorted(levels, np.arange(256), side="left").astype(np.int16)  # class: levels below
    nclass = len(levels) + 1
    cstart = np.zeros(nclass + 1, np.int64)

    def masks(u8):
        sweeps._classes(u8, lut, ws_cls)
        sweeps._masks(ws_cls, ws_masks[:size], ws_masks[size:2 * size], SIZE, SIZE)

    def class_runs(u8):
        sweeps._classes(u8, lut, ws_cls)
        sweeps._runs(ws_cls, SIZE, SIZE, nclass, ws_int, ws_info, cstart)

    def rises(u8):
        sweeps._classes(u8, lut, ws_cls)
        sweeps.rises(ws_cls, SIZE, SIZE)

    def way(u8, number, holes):
        sweeps.level_sweeps(u8, levels, gt, holes, 0.3, number, *workspace)

    steps = {
        "kernel (ahead of time, from the float map)": lambda i: kernel().scoremap_best_ious_f4(
            maps[i], thresholds, gt, 0.3, *boxes._workspace(SIZE, SIZE)),
        "sweeps: classes + masks": lambda i: masks(u8s[i]),
        "sweeps: classes + class runs": lambda i: class_runs(u8s[i]),
        "sweeps: all but the hole sweep": lambda i: way(u8s[i], sweeps.WAY_SWEEPS, False),
        "sweeps: all": lambda i: way(u8s[i], sweeps.WAY_SWEEPS, True),
        "level runs: classes + run count": lambda i: rises(u8s[i]),
        "level runs: all but holes": lambda i: way(u8s[i], sweeps.WAY_RUNS, False),
        "level runs: all": lambda i: way(u8s[i], sweeps.WAY_RUNS, True),
    }
    result = {}
    for name, step in steps.items():
        for i in range(min(5, count)):
            step(i)
        started = time.process_time()
        for i in range(count):
            step(i)
        result[name] = (time.process_time() - started) / count * 1e3
    return result


# ----------------------------------------------------------------------------- timing
def _timed(command) -> Tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system of the process and its children) and localization."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, command))} failed:\n{result.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu, result.stdout.strip().splitlines()[-1].split()[-1]


def _contour_count(directory: Path) -> str:
    """Mean (max) number of RETR_TREE contours per threshold over the first 40 maps, every 5th level."""
    counts = []
    for path in sorted((directory / "scoremaps" / "bench").glob("*.npy"))[:40]:
        u8 = (np.load(path).astype(np.float64) * 255).astype(np.uint8)
        for level in range(0, 255, 5):
            binary = cv2.threshold(u8, level, 255, cv2.THRESH_BINARY)[1]
            counts.append(len(cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]))
    return f"{np.mean(counts):.0f} contours per threshold on average, up to {np.max(counts)}"


def _family_rows(directory: Path, family: str, v1: bool, repeat: int) -> List[tuple]:
    """Baseline and evaluate.py rows of one family (fails on any localization that differs)."""
    rows = []
    common = ["--scoremap-root", str(directory / "scoremaps"), "--metadata-root", str(directory / "metadata"),
              "--dataset-name", "CUB", "--split", "test", "--multi-iou-eval"]
    for v2 in ([True, False] if v1 else [True]):
        flags = ["--multi-contour-eval"] if v2 else []
        contours = "every (MaxBoxAccV2)" if v2 else "largest (MaxBoxAcc)"
        subprocess.run([sys.executable, "-c", "import cv2, numpy, wsol_lightning.data.metadata"], cwd=ROOT)
        base_seconds, base_cpu, base_value = _timed([sys.executable, __file__, "--baseline", str(directory),
                                                     "0.01", str(int(v2)), "1"])
        rows.append((family, "one findContours per map and threshold", contours, 0.01, 1, base_seconds, base_cpu,
                     base_value, base_seconds, base_cpu))
        fine_value = None
        for interval in (0.01, 0.001):
            for workers in ((2, 1) if interval == 0.01 else (2,)):
                command = [sys.executable, "scripts/evaluate.py", *common, *flags,
                           "--cam-curve-interval", str(interval), "--workers", str(workers)]
                _timed(command)  # untimed
                runs = [_timed(command) for _ in range(repeat)]
                seconds, cpu, value = sorted(runs)[len(runs) // 2]  # the median run
                values = {run[2] for run in runs}
                if interval == 0.01 and values != {base_value}:
                    raise SystemExit(f"{family}: result differs: baseline {base_value}, evaluate.py {values}")
                if interval == 0.001:
                    if len(values) != 1 or (fine_value is not None and value != fine_value):
                        raise SystemExit(f"{family}: evaluate.py results at 0.001 differ: {values}, {fine_value}")
                    fine_value = value
                rows.append((family, "scripts/evaluate.py", contours, interval, workers, seconds, cpu, value,
                             base_seconds, base_cpu))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-maps", type=int, default=1000, help="maps of each family")
    parser.add_argument("--families", nargs="+", default=["smooth", "speckled", "noisy"],
                        choices=[*FAMILIES, "mixed"])
    parser.add_argument("--v1", action="store_true", help="add the largest-contour (MaxBoxAcc) rows")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each evaluate.py row (median reported)")
    parser.add_argument("--phases", action="store_true",
                        help="only the kernel's CPU ms per map by phase (numba functions, in this process)")
    parser.add_argument("--baseline", nargs=4, metavar=("DIR", "INTERVAL", "MULTI_CONTOUR", "MULTI_IOU"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        directory, interval, multi_contour, multi_iou = args.baseline
        baseline(Path(directory), float(interval), multi_contour == "1", multi_iou == "1")
        return
    if args.phases:
        print(f"CPU ms per map, {args.num_maps} maps of each family, interval 0.01, one GT box")
        print()
        table = {family: kernel_phases(family, args.num_maps) for family in args.families}
        names = list(next(iter(table.values())))
        print("| maps | " + " | ".join(names) + " |")
        print("|---" * (len(names) + 1) + "|")
        for family, phases in table.items():
            print(f"| {family} | " + " | ".join(f"{value:.3f}" for value in phases.values()) + " |")
        return
    rows, described = [], []
    # Maps in RAM where there is a tmpfs, and one untimed run before each timed row: this machine's
    # virtual disk stalls at times (the first run after a while can take 10x, re-reading the venv's
    # libraries); both sides get the same treatment.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    for family in args.families:
        with tempfile.TemporaryDirectory(dir=shm) as tmp:
            directory = Path(tmp)
            make_maps(directory, args.num_maps, family=family)
            os.sync()  # the maps' write-back would otherwise land in the first timed runs as I/O wait
            described.append(f"{family}: {_contour_count(directory)}")
            # warm-up: the compiled kernel is built (or cached by numba) on disk on a fresh checkout's first run
            _timed([sys.executable, "scripts/evaluate.py", "--scoremap-root", str(directory / "scoremaps"),
                    "--metadata-root", str(directory / "metadata"), "--dataset-name", "CUB", "--split", "test",
                    "--multi-contour-eval"])
            rows += _family_rows(directory, family, args.v1, args.repeat)
            print(f"{family} done", file=sys.stderr, flush=True)
    load = os.getloadavg()
    print(f"{args.num_maps} maps 224x224 float32 per family ({'; '.join(described)}); {os.cpu_count()} CPU cores, "
          f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min); whole "
          f"processes, same run; localization = mean MaxBoxAcc over IoU 30/50/70")
    print()
    print(f"evaluate.py rows: median of {args.repeat} runs after an untimed one; baseline: one run; maps in "
          f"{shm or 'a temporary folder'}; CPU = user + system seconds of the process and its workers")
    print()
    print("| maps | evaluator | contours | interval | processes | seconds | speed-up | CPU seconds | CPU speed-up "
          "| localization |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for family, name, contours, interval, workers, seconds, cpu, value, base, base_cpu in rows:
        print(f"| {family} | {name} | {contours} | {interval} | {workers} | {seconds:.2f} | {base / seconds:.1f}x "
              f"| {cpu:.2f} | {base_cpu / cpu:.1f}x | {value} |")


if __name__ == "__main__":
    main()
