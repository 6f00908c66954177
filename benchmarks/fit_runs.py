"""Many default fits in parallel processes, resumable: shared by the sweep and methods benchmarks.

Each run is fit.py's run (``wsol_lightning.cli.build_run`` + ``fit_and_test``, the path of
``scripts/fit.py``) with a few extra arguments, in a process of its own with a fixed number of torch
threads (two single-threaded processes use a 2-core machine better than one with two threads). A
finished run is appended to ``<out>/results.jsonl`` at once, so an interrupted benchmark resumes
where it stopped.
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence


def fit_one(job: Dict) -> Dict:
    """Train one run (``job["args"]`` are fit.py arguments); returns its per-epoch curve and test figures."""
    import torch

    torch.set_num_threads(job["threads"])
    from lightning.pytorch import Callback

    from wsol_lightning.cli import build_run, fit_and_test

    class Curve(Callback):
        """``val/localization`` and ``val/top1`` of every epoch (read after the module logged them)."""

        def __init__(self) -> None:
            self.epochs: List[Dict[str, float]] = []

        def on_validation_end(self, trainer, pl_module) -> None:
            if not trainer.sanity_checking:
                metrics = trainer.callback_metrics
                self.epochs.append({k: float(metrics[k]) for k in ("val/localization", "val/top1") if k in metrics})

    curve = Curve()
    args = [*job["args"], "--run_dir", job["run_dir"], "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false"]
    started = time.perf_counter()
    run = build_run(args, callbacks=[curve])
    metrics = fit_and_test(run, figure=False)
    return {**job["key"], "curve": curve.epochs, "seconds": round(time.perf_counter() - started, 1),
            "test": {k[len("test/"):]: v for k, v in metrics.items() if k.startswith("test/")}}


def run_all(jobs: Sequence[Dict], out: Path, processes: int = 2, threads: int = 1,
            on_result: Optional[Callable[[Dict], None]] = None) -> List[Dict]:
    """Run every job not yet in ``out/results.jsonl``; returns the results of all jobs, in job order.

    Args:
        jobs: dicts with ``key`` (what identifies the run, e.g. ``{"bg": 0.3, "seed": 1}``),
            ``args`` (fit.py arguments) and ``name`` (its run directory under ``out``).
        out: benchmark folder (run directories and ``results.jsonl``).
        processes: runs at a time.
        threads: torch threads per run.
        on_result: called with each new result as it arrives (progress lines).
    """
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.jsonl"
    done: Dict[str, Dict] = {}
    if results_file.exists():
        for line in results_file.read_text().splitlines():
            row = json.loads(line)
            done[json.dumps({k: row[k] for k in jobs[0]["key"]}, sort_keys=True)] = row
    todo = [{**job, "run_dir": str(out / job["name"]), "threads": threads} for job in jobs
            if json.dumps(job["key"], sort_keys=True) not in done]
    if todo:
        context = multiprocessing.get_context("spawn")
        with context.Pool(processes, maxtasksperchild=1) as pool:
            for row in pool.imap_unordered(fit_one, todo):
                done[json.dumps({k: row[k] for k in jobs[0]["key"]}, sort_keys=True)] = row
                with results_file.open("a") as file:
                    file.write(json.dumps(row) + "\n")
                if on_result is not None:
                    on_result(row)
    return [done[json.dumps(job["key"], sort_keys=True)] for job in jobs]


def last_val(row: Dict) -> float:
    """val/localization of the run's last epoch."""
    return row["curve"][-1]["val/localization"]


def best_epoch(row: Dict) -> int:
    """Epoch (0-based) of the run's best val/localization (first of ties, as the checkpoint keeps it)."""
    values = [epoch["val/localization"] for epoch in row["curve"]]
    return values.index(max(values))


def mean_std(values: Sequence[float]) -> str:
    """``mean ± sample standard deviation``."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {spread:.2f}"
