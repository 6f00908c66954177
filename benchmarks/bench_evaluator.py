#!/usr/bin/env python
"""Evaluator speed: scripts/evaluate.py vs one OpenCV contour search per map and threshold.

Generates N score maps (half smooth multimodal CAM-like maps, half noisy
early-epoch maps with thousands of small contours) with CUB-style metadata in a
temporary folder, then times, as whole processes in the same run:

* baseline: ``tests/reference_wsol_metrics.py`` (wsolevaluation's algorithm as
  published: ``cv2.threshold`` + ``cv2.findContours`` per map and threshold, a
  Python loop over contours), MaxBoxAccV2 at interval 0.01;
* ``scripts/evaluate.py --multi-contour-eval --multi-iou-eval`` at 0.01 and 0.001.

Both must print the same MaxBoxAccV2. Usage:
``python benchmarks/bench_evaluator.py --num-maps 1000`` (the baseline alone
takes many minutes on noisy maps; ``--num-maps 200`` for a quick table).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_maps(directory: Path, count: int, seed: int = 0) -> None:
    """Write ``count`` maps and CUB-style metadata (split ``test``) under ``directory``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:224, 0:224].astype(np.float64)
    meta = directory / "metadata" / "CUB" / "test"
    meta.mkdir(parents=True)
    lines = {name: [] for name in ("image_ids", "class_labels", "image_sizes", "localization")}
    for index in range(count):
        image_id = f"bench/{index:05d}.jpg"
        if index % 2:
            scoremap = cv2.GaussianBlur(rng.random((224, 224)), (0, 0), rng.uniform(0.6, 1.5))
        else:
            scoremap = np.zeros((224, 224))
            for _ in range(rng.integers(1, 4)):
                cx, cy = rng.uniform(20, 204, 2)
                sigma = rng.uniform(10, 50)
                scoremap += rng.uniform(0.3, 1) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2))
        scoremap = (scoremap - scoremap.min()) / (scoremap.max() - scoremap.min())
        path = directory / "scoremaps" / (image_id + ".npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, scoremap.astype(np.float32))
        width, height = int(rng.integers(300, 500)), int(rng.integers(300, 500))
        x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        x1, y1 = int(rng.integers(x0 + 20, width)), int(rng.integers(y0 + 20, height))
        lines["image_ids"].append(image_id)
        lines["class_labels"].append(f"{image_id},0")
        lines["image_sizes"].append(f"{image_id},{width},{height}")
        lines["localization"].append(f"{image_id},{x0},{y0},{x1},{y1}")
    for name, content in lines.items():
        (meta / f"{name}.txt").write_text("\n".join(content) + "\n")


def baseline(directory: Path, interval: float) -> None:
    """The published algorithm, one process (what the reference does)."""
    sys.path.insert(0, str(ROOT))
    from tests.reference_wsol_metrics import max_box_acc
    from wsol_lightning.data.metadata import load_metadata

    metadata = load_metadata(directory / "metadata", "CUB", "test")
    maps = [np.load(directory / "scoremaps" / (i + ".npy")) for i in metadata.image_ids]
    boxes = [metadata.resized_boxes(i) for i in metadata.image_ids]
    values = max_box_acc(maps, boxes, interval, True, [30, 50, 70])
    print(f"MaxBoxAccV2 {np.mean(values):.4f}")


def timed(command) -> tuple[float, str]:
    start = time.perf_counter()
    output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return time.perf_counter() - start, output.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-maps", type=int, default=1000)
    parser.add_argument("--baseline-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_dir:
        baseline(Path(args.baseline_dir), 0.01)
        return
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        make_maps(directory, args.num_maps)
        common = ["--scoremap-root", str(directory / "scoremaps"), "--metadata-root", str(directory / "metadata"),
                  "--dataset-name", "CUB", "--split", "test", "--multi-contour-eval", "--multi-iou-eval"]
        ours = {interval: timed([sys.executable, "scripts/evaluate.py", *common, "--cam-curve-interval",
                                 str(interval)]) for interval in (0.01, 0.001)}
        base_time, base_line = timed([sys.executable, __file__, "--baseline-dir", str(directory)])
    print(f"{args.num_maps} maps (half smooth, half noisy), {os.cpu_count()} cores, whole processes")
    print("| evaluator | interval | seconds | speed-up | result |")
    print("|---|---|---|---|---|")
    print(f"| contour search per map and threshold (reference algorithm) | 0.01 | {base_time:.1f} | 1x | {base_line} |")
    for interval, (seconds, line) in ours.items():
        print(f"| scripts/evaluate.py | {interval} | {seconds:.1f} | {base_time / seconds:.1f}x | {line} |")


if __name__ == "__main__":
    main()
