#!/usr/bin/env python
"""Throughput of the input pipeline, the training step, fit.py and a bare PyTorch loop, on a CUB-like set.

Measures, in images per second over an epoch of ``--steps`` batches (after one warm-up epoch, the
fastest of ``--repeats`` timed epochs, which filters out bursts of other load):

(a) ``loader``: the train loader alone (the data module's, with its worker rule),
    batches moved to the device and cropped/flipped/normalized there;
(b) ``step``: the training step alone on batches already on the device
    (augmentation, forward, loss, backward, optimizer step);
(c) ``fit``: fit.py's run (:func:`wsol_lightning.cli.build_run`, the one training
    path; progress bar and model summary off, as in tune.py's trials), timed by a
    callback over each epoch's training batches;
(d) ``bare``: a hand-written PyTorch loop doing (c)'s work (same data module,
    loader, device transform, model, optimizer and precision; no hooks, no logging),
    timed the same way;

and, from (c), an epoch's validation wall time (the whole val split:
forward, score maps, metrics) next to a full training epoch's (train split size /
the (c) rate). Derived: Lightning overhead = (d) rate / (c) rate - 1 (goal
<= 5 %), data stall = 1 - (c) rate / (b) rate (goal <= 10 %: the device busy at
least 90 % of the time), evaluation share = val time / training epoch time (goal
<= 10 %). Rows with ``--cache on`` and ``off`` (decoded-image cache, or decoding
every JPEG at every read). ``--clock cpu`` times with this process's CPU time
instead of wall time: on a CPU shared with other jobs it counts the work done
rather than the waiting (use it with ``--threads 1``, so no idle thread spins, and
with 0 loader workers, the CPU default, whose work it would not see). On CUDA, ``busy %`` is the device utilization NVML
reports (sampled every 50 ms) during the timed part, when ``pynvml`` is there.

The data: ``--num-train/--num-val/--num-test`` JPEGs of about 500x375 (CUB's
sizes: width 500, height 280-500, some portrait) in the wsolevaluation layout
(``CUB/<class>/<name>.jpg``, ``metadata/CUB/{train,val,test}/`` with labels,
sizes and boxes), generated once under ``--data-root`` (smooth textures with an
ellipse, JPEG quality 90, about 35 KB a file).

Usage::

    python benchmarks/bench_throughput.py                                  # small backbone, CPU
    python benchmarks/bench_throughput.py --backbone resnet50 --steps 3 --batch-size 8
    python benchmarks/bench_throughput.py --device cuda --backbone resnet50 --precision bf16-mixed \\
        --num-train 2000 --steps 40 --json out.json

Prints a markdown table (and the load average: figures taken under load say so).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from wsol_lightning.data.datamodule import WSOLDataModule  # noqa: E402
from wsol_lightning.module import WSOLModule  # noqa: E402


# ------------------------------------------------------------------ CUB-like data
def _cub_like_image(rng: np.random.Generator, width: int, height: int, label: int, num_classes: int
                    ) -> Tuple[Image.Image, Tuple[int, int, int, int]]:
    """A smooth textured background with one ellipse ("bird") of a class-dependent colour, and its box."""
    low = rng.uniform(40, 215, (max(2, height // 40), max(2, width // 40), 3)).astype(np.uint8)
    image = Image.fromarray(low).resize((width, height), Image.BICUBIC)
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, (height, width, 3), dtype=np.int16)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))
    box_w, box_h = int(width * rng.uniform(0.3, 0.7)), int(height * rng.uniform(0.3, 0.7))
    x0, y0 = int(rng.integers(0, width - box_w)), int(rng.integers(0, height - box_h))
    hue = np.array([np.cos(2 * np.pi * label / num_classes), np.sin(2 * np.pi * label / num_classes), 0.3])
    colour = tuple(int(c) for c in np.clip(128 + 100 * hue, 0, 255))
    ImageDraw.Draw(image).ellipse((x0, y0, x0 + box_w, y0 + box_h), fill=colour)
    return image, (x0, y0, x0 + box_w, y0 + box_h)


def make_cub_like(data_root: Path, num_train: int, num_val: int, num_test: int, num_classes: int = 20,
                  seed: int = 0) -> Path:
    """Generate (once) a CUB-like set; returns its root (``<root>/CUB``, ``<root>/metadata/CUB``)."""
    root = Path(data_root) / f"cub-like-{num_train}-{num_val}-{num_test}-{num_classes}-{seed}"
    done = root / "done"
    if done.is_file():
        return root
    rng = np.random.default_rng(seed)
    splits = {"train": num_train, "val": num_val, "test": num_test}
    jobs = []
    for split, count in splits.items():
        for index in range(count):
            label = index % num_classes
            width, height = (500, int(rng.integers(280, 501))) if rng.uniform() < 0.8 else \
                (int(rng.integers(280, 501)), 500)
            image_id = f"{label:03d}.class_{label:03d}/{split}_{index:05d}.jpg"
            jobs.append((split, image_id, label, width, height, int(rng.integers(2**31))))

    def write(job) -> Tuple[str, str, int, int, int, Tuple[int, int, int, int]]:
        split, image_id, label, width, height, image_seed = job
        image, box = _cub_like_image(np.random.default_rng(image_seed), width, height, label, num_classes)
        path = root / "CUB" / image_id
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=90)
        return split, image_id, label, width, height, box

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        rows = list(pool.map(write, jobs))
    for split in splits:
        folder = root / "metadata" / "CUB" / split
        folder.mkdir(parents=True, exist_ok=True)
        mine = [row for row in rows if row[0] == split]
        (folder / "image_ids.txt").write_text("".join(f"{r[1]}\n" for r in mine))
        (folder / "class_labels.txt").write_text("".join(f"{r[1]},{r[2]}\n" for r in mine))
        (folder / "image_sizes.txt").write_text("".join(f"{r[1]},{r[3]},{r[4]}\n" for r in mine))
        (folder / "localization.txt").write_text("".join(f"{r[1]},{','.join(map(str, r[5]))}\n" for r in mine))
    done.write_text("ok\n")
    return root


# ---------------------------------------------------------------------- helpers
#: The clock of the timed parts (``--clock``): wall time, or this process's CPU time.
CLOCK: Callable[[], float] = time.perf_counter


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class BusySampler:
    """Mean NVML utilization (% of time a kernel ran) of a CUDA device while active; None without pynvml."""

    def __init__(self, device: torch.device) -> None:
        self.samples: List[int] = []
        self._stop = threading.Event()
        self._handle = None
        if device.type == "cuda":
            try:
                import pynvml

                pynvml.nvmlInit()
                self._nvml = pynvml
                self._handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
            except Exception:  # no NVML here: report n/a
                self._handle = None

    def __enter__(self) -> "BusySampler":
        if self._handle is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._handle is not None:
            self._thread.join()

    @property
    def busy(self) -> Optional[float]:
        return float(np.mean(self.samples)) if self.samples else None


def _autocast(device: torch.device, precision: str):
    if precision == "bf16-mixed":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return torch.autocast(device_type=device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def _datamodule(args: argparse.Namespace, root: Path, cache: str) -> WSOLDataModule:
    return WSOLDataModule(dataset_name="CUB", data_root=str(root), batch_size=args.batch_size,
                          num_workers=args.num_workers, resize_size=args.resize_size, crop_size=args.image_size,
                          eval_size=args.image_size, cache=cache, cache_dir=str(root / "decoded-cache"))


def _module(args: argparse.Namespace, num_classes: int, device: torch.device) -> WSOLModule:
    torch.manual_seed(0)
    module = WSOLModule(num_classes=num_classes, backbone=args.backbone, wsol_method=args.method,
                        lr=args.lr, channels_last=_channels_last(args, device))
    module.setup("fit")
    return module.to(device)


def _channels_last(args: argparse.Namespace, device: torch.device) -> bool:
    return device.type == "cuda" if args.channels_last == "auto" else args.channels_last == "true"


class _Stepper:
    """One training step as WSOLModule.training_step computes it, without Lightning (for (b) and (d))."""

    def __init__(self, module: WSOLModule, device: torch.device, precision: str) -> None:
        self.module, self.device, self.precision = module, device, precision
        self.optimizer = module.build_optimizer()  # the schedule needs a Trainer; one step of it costs nothing
        self.scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
        module.train()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        module = self.module
        with _autocast(self.device, self.precision):
            batch = module.method.augment(module.model_input(images), labels)
            outputs = module.method(module.model_input(batch.images), batch.labels)
            loss = module.method.loss(outputs, batch)
            (outputs["logits"].argmax(1) == labels).float().mean()  # train/top1, as the module computes it
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()


def _device_batches(loader: Iterable, datamodule: WSOLDataModule, device: torch.device):
    for batch in loader:
        batch = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        yield datamodule.on_after_batch_transfer(batch, 0)


def _timed_epochs(step: Callable[[Dict[str, Any]], None], batches: Callable[[], Iterable], device: torch.device,
                  repeats: int) -> Tuple[float, int, Optional[float]]:
    """One warm-up pass, then ``repeats`` timed passes; the fastest one (seconds, images, busy %)."""
    for batch in batches():
        step(batch)
    best: Optional[Tuple[float, int, Optional[float]]] = None
    for _ in range(repeats):
        _sync(device)
        images = 0
        with BusySampler(device) as sampler:
            start = CLOCK()
            for batch in batches():
                step(batch)
                images += len(batch["label"])
            _sync(device)
            seconds = CLOCK() - start
        if best is None or seconds / images < best[0] / best[1]:
            best = (seconds, images, sampler.busy)
    return best


def _limited(loader: Iterable, count: int):
    for index, batch in enumerate(loader):
        if index >= count:
            return
        yield batch


# ----------------------------------------------------------------------- parts
def measure_loader(args, root, cache, device) -> Dict[str, Any]:
    """(a) the train loader and the device transform alone."""
    datamodule = _datamodule(args, root, cache)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    seconds, images, busy = _timed_epochs(lambda batch: None,
                                          lambda: _device_batches(_limited(loader, args.steps), datamodule, device),
                                          device, args.repeats)
    return {"part": "a loader", "cache": cache, "workers": loader.num_workers, "img_s": images / seconds,
            "seconds": seconds, "images": images, "busy": busy}


def measure_step(args, root, device) -> Dict[str, Any]:
    """(b) the training step alone on batches already on the device."""
    datamodule = _datamodule(args, root, "on")
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    resident = list(_device_batches(_limited(loader, min(args.steps, 8)), datamodule, device))
    module = _module(args, datamodule.num_classes, device)
    stepper = _Stepper(module, device, args.precision)
    cycle = [resident[i % len(resident)] for i in range(args.steps)]
    seconds, images, busy = _timed_epochs(lambda batch: stepper(batch["image"], batch["label"]), lambda: cycle,
                                          device, args.repeats)
    return {"part": "b step", "cache": "-", "workers": 0, "img_s": images / seconds, "seconds": seconds,
            "images": images, "busy": busy}


def measure_bare(args, root, cache, device) -> Dict[str, Any]:
    """(d) a hand-written loop over (c)'s loader, device transform, model and optimizer."""
    datamodule = _datamodule(args, root, cache)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    module = _module(args, datamodule.num_classes, device)
    stepper = _Stepper(module, device, args.precision)
    seconds, images, busy = _timed_epochs(lambda batch: stepper(batch["image"], batch["label"]),
                                          lambda: _device_batches(_limited(loader, args.steps), datamodule, device),
                                          device, args.repeats)
    return {"part": "d bare", "cache": cache, "workers": loader.num_workers, "img_s": images / seconds,
            "seconds": seconds, "images": images, "busy": busy}


def measure_fit(args, root, cache, device, run_dir: Path) -> Dict[str, Any]:
    """(c) fit.py's run: epochs of ``steps`` batches and the whole val split; the fastest epoch after the first."""
    from lightning.pytorch import Callback

    from wsol_lightning.cli import build_run

    class Timer(Callback):
        """Per epoch after the first: training seconds, images, busy %; validation seconds."""

        def __init__(self) -> None:
            self.train: List[Tuple[float, int, Optional[float]]] = []
            self.val: List[float] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if trainer.current_epoch >= 1:
                _sync(device)
                self._sampler = BusySampler(device).__enter__()
                self._images = 0
                self._start = CLOCK()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.current_epoch >= 1:
                self._images += len(batch["label"])
                if batch_idx == trainer.num_training_batches - 1:
                    _sync(device)
                    seconds = CLOCK() - self._start
                    self._sampler.__exit__()
                    self.train.append((seconds, self._images, self._sampler.busy))

        def on_validation_start(self, trainer, pl_module) -> None:
            _sync(device)
            self._val_start = CLOCK()

        def on_validation_end(self, trainer, pl_module) -> None:
            _sync(device)
            if trainer.current_epoch >= 1:
                self.val.append(CLOCK() - self._val_start)

    timer = Timer()
    fit_args = [
        "--data.dataset_name", "CUB", "--data.data_root", str(root), "--data.batch_size", str(args.batch_size),
        "--data.num_workers", str(args.num_workers), "--data.resize_size", str(args.resize_size),
        "--data.crop_size", str(args.image_size), "--data.eval_size", str(args.image_size), "--data.cache", cache,
        "--data.cache_dir", str(root / "decoded-cache"),
        "--model.backbone", args.backbone, "--model.wsol_method", args.method, "--model.lr", str(args.lr),
        "--model.channels_last", args.channels_last,
        "--trainer.accelerator", "gpu" if device.type == "cuda" else "cpu", "--trainer.devices", "1",
        "--trainer.precision", args.precision, "--trainer.max_epochs", str(1 + args.repeats),
        "--trainer.limit_train_batches", str(args.steps), "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--run_dir", str(run_dir),
    ]
    if device.type == "cuda":
        fit_args += ["--trainer.benchmark", "true"]
    run = build_run(fit_args, callbacks=[timer])
    run.trainer.fit(run.model, datamodule=run.datamodule)
    seconds, images, busy = min(timer.train, key=lambda t: t[0] / t[1])
    rate = images / seconds
    val_images = len(run.datamodule.datasets["val"])
    epoch_seconds = len(run.datamodule.datasets["train"]) / rate
    return {"part": "c fit", "cache": cache, "workers": run.datamodule.loader_workers("train"), "img_s": rate,
            "seconds": seconds, "images": images, "busy": busy,
            "val_seconds": min(timer.val), "val_images": val_images, "train_epoch_seconds": epoch_seconds}


# ------------------------------------------------------------------------ main
def _load() -> str:
    try:
        return "/".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _percent(value: Optional[float]) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.0f}"


def summarize(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per cache mode: Lightning overhead, data stall, evaluation share (fractions)."""
    step = next((r for r in rows if r["part"] == "b step"), None)
    out = []
    for cache in ("on", "off"):
        fit = next((r for r in rows if r["part"] == "c fit" and r["cache"] == cache), None)
        bare = next((r for r in rows if r["part"] == "d bare" and r["cache"] == cache), None)
        if fit is None:
            continue
        out.append({
            "cache": cache,
            "lightning_overhead": bare["img_s"] / fit["img_s"] - 1 if bare else None,
            "data_stall": 1 - fit["img_s"] / step["img_s"] if step else None,
            "eval_share": fit["val_seconds"] / fit["train_epoch_seconds"],
            "val_seconds": fit["val_seconds"], "train_epoch_seconds": fit["train_epoch_seconds"],
        })
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="small", choices=["small", "resnet50", "vgg16", "inception_v3"])
    parser.add_argument("--method", default="base")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="32", choices=["32", "bf16-mixed", "16-mixed"])
    parser.add_argument("--channels-last", default="auto", choices=["auto", "true", "false"])
    parser.add_argument("--image-size", type=int, default=224, help="crop and evaluation size")
    parser.add_argument("--resize-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", default="auto", help="--data.num_workers (default: the automatic rule)")
    parser.add_argument("--steps", type=int, default=10, help="batches per epoch")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed epochs after the warm-up one; the fastest counts (robust to other load)")
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--num-train", type=int, default=600)
    parser.add_argument("--num-val", type=int, default=100, help="CUB's train:val ratio is 6:1")
    parser.add_argument("--num-test", type=int, default=20)
    parser.add_argument("--data-root", default="data/bench-throughput")
    parser.add_argument("--cache", default="both", choices=["on", "off", "both"])
    parser.add_argument("--parts", default="loader,step,fit,bare", help="comma-separated subset of loader,step,fit,bare")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                        help="time parts by wall clock or by this process's CPU time (shared CPUs)")
    parser.add_argument("--json", default=None, help="also write the rows and summary here")
    args = parser.parse_args(argv)
    if args.num_workers != "auto":
        args.num_workers = int(args.num_workers)
    if args.threads:
        torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    parts = set(args.parts.split(","))
    started = time.perf_counter()
    root = make_cub_like(Path(args.data_root), args.num_train, args.num_val, args.num_test)
    caches = ["on", "off"] if args.cache == "both" else [args.cache]
    cache_build = None
    if "on" in caches:  # build the cache once, outside every timed part
        datamodule = _datamodule(args, root, "on")
        begin = time.perf_counter()
        datamodule.setup("fit")
        cache_build = time.perf_counter() - begin
    rows: List[Dict[str, Any]] = []
    if "step" in parts:
        rows.append(measure_step(args, root, device))
    for cache in caches:
        if "loader" in parts:
            rows.append(measure_loader(args, root, cache, device))
        if "fit" in parts:
            rows.append(measure_fit(args, root, cache, device, Path(args.data_root) / f"runs-{os.getpid()}-{cache}"))
        if "bare" in parts:
            rows.append(measure_bare(args, root, cache, device))
    summary = summarize(rows)

    precision = args.precision + (" + channels-last" if _channels_last(args, device) else "")
    print(f"\n{args.backbone} ({args.method}), {args.device}, {precision}, batch {args.batch_size}, "
          f"{args.resize_size}->{args.image_size} px, {args.steps} batches x best of {args.repeats} epoch(s) after one "
          f"warm-up; {args.clock} clock; data {root.name}; "
          f"torch threads {torch.get_num_threads()}; load average {_load()}"
          + (f"; cache built in {cache_build:.1f} s" if cache_build is not None else ""))
    print(f"\n| part | cache | workers | images/s ({args.clock} clock) | busy % |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['part']} | {row['cache']} | {row['workers']} | {row['img_s']:.3g} | {_percent(row['busy'])} |")
    print("\n| cache | Lightning overhead (d/c - 1) | data stall (1 - c/b) | val epoch s | train epoch s | "
          "evaluation share |\n|---|---|---|---|---|---|")
    for item in summary:
        overhead = "n/a" if item["lightning_overhead"] is None else f"{100 * item['lightning_overhead']:+.1f} %"
        stall = "n/a" if item["data_stall"] is None else f"{100 * item['data_stall']:.1f} %"
        print(f"| {item['cache']} | {overhead} | {stall} | {item['val_seconds']:.2f} | "
              f"{item['train_epoch_seconds']:.1f} | {100 * item['eval_share']:.1f} % |")
    print(f"\nwall time {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": vars(args) | {"device": args.device, "precision": precision},
                                               "load_average": _load(), "cache_build_seconds": cache_build,
                                               "rows": rows, "summary": summary}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
