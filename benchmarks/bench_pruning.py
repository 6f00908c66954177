#!/usr/bin/env python
"""MedianPruner vs no pruner on the default data: epochs trained, wall time, best value.

Runs ``scripts/tune.py`` as a user would, twice per TPE seed (the same seed, search space and
``--n-trials`` budget; only ``--pruner`` differs), places each median study's best ``bg_grid_size`` on
``bench_sweep.py``'s curve, then trains plain CAM, the default run and every seed's best values with
plain ``fit.py`` (full epochs, val and test) and prints the tables in Markdown for the README. Finished
arms and fits are reused when it is run again. Not a timed test: one median arm took 3.7-4.6 min alone on
the 2-core machine; a no-pruner arm trains about twice its epochs.

Measured figures: README, "Tuning" > "Measured" (2026-12-02, synthetic data v6, fit.py's 8 epochs).

How the defaults were chosen: ``benchmarks/replay_pruners.py`` replays the learning curves of the
no-pruner arms under MedianPruner and PercentilePruner settings, with and without ``--patience``
(README, "Measured"). Slow learners (lr ~0.0013) end best but trail at epochs 1-2, so every setting
that prunes at epoch 1 or 2 can lose them (seed 0's best value falls 0.78 points to the next best,
bg_grid_size 0.23, as good on the sweep; 1.17 with two torch threads per process, whose sums round
differently); ``--patience 0`` (or startup 5 with warm-up 3) keeps every best exactly and saves 15-28 %. Of the median
settings startup 3 / warm-up 1 saved the most (50 % over the three seeds' curves), so tune.py
defaults to it. Run the arms with ``OMP_NUM_THREADS=1`` to run several at once (``--only``) and
compare epochs and CPU time: wall time grows with whatever else shares the cores.

Usage::

    python benchmarks/bench_pruning.py [--n-trials 20] [--seeds 0 1 2] [--out runs/bench-pruning] [--skip-fit | --fit-only] [tune.py flags]

Goal (issues #5, #10): at least 40% fewer epochs with the pruner (aim 50%), every seed's best value
within 1 point.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

import optuna

ROOT = Path(__file__).resolve().parents[1]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(command, log: Path):
    """Run ``command`` with its output in ``log``; returns (wall time, CPU time) in seconds.

    The CPU time (user + system of the process, all threads) does not grow when other
    jobs share the cores; on an idle 2-core machine the wall time is about CPU / 1.6.
    """
    started, cpu = time.perf_counter(), _children_cpu()
    with open(log, "w") as file:
        result = subprocess.run(command, stdout=file, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(map(str, command))} failed, see {log}")
    return wall, _children_cpu() - cpu


def load_arm(out: Path, name: str) -> optuna.Study:
    """The study of arm ``name`` (``median-seed0``, ...) that :func:`arm` ran under ``out``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=f"bench-{name}", storage=f"sqlite:///{out}/tune-{name}/optuna.db")


def arm(pruner: str, seed: int, out: Path, n_trials: int, extra) -> dict:
    """Run (or, when ``<out>/tune-<name>.json`` says it finished, reuse) one study of tune.py."""
    name = f"{pruner}-seed{seed}"
    study_dir = out / f"tune-{name}"
    finished = out / f"tune-{name}.json"
    if finished.is_file():
        wall, cpu = json.loads(finished.read_text())["wall_cpu"]
    else:
        command = [sys.executable, str(ROOT / "scripts" / "tune.py"), "--study-dir", str(study_dir), "--pruner",
                   pruner, "--n-trials", str(n_trials), "--study-name", f"bench-{name}", "--seed", str(seed), *extra]
        wall, cpu = run(command, out / f"tune-{name}.log")
        finished.write_text(json.dumps({"wall_cpu": [wall, cpu]}))
    study = load_arm(out, name)
    trials = study.trials
    return {"pruner": pruner, "seed": seed, "wall": wall, "cpu": cpu, "study": study,
            "epochs": sum(int(t.user_attrs.get("epochs", 0)) for t in trials),
            "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
            "best": study.best_value, "best_params": study.best_params, "best_number": study.best_trial.number}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="TPE seeds (one study pair each)")
    parser.add_argument("--out", default="runs/bench-pruning")
    parser.add_argument("--skip-fit", action="store_true", help="only the tuning arms")
    parser.add_argument("--fit-only", action="store_true",
                        help="only the fit.py runs, with the median studies already in --out")
    parser.add_argument("--sweep", default="runs/bench-sweep/results.jsonl",
                        help="bench_sweep.py's results, to place each best bg_grid_size on the sweep's curve")
    parser.add_argument("--only", choices=("median", "none"), default=None,
                        help="run only these arms (finished arms are reused by a later full run)")
    options, extra = parser.parse_known_args()
    out = Path(options.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if options.fit_only:
        medians = [{"seed": seed, "best_params": load_arm(out, f"median-seed{seed}").best_params}
                   for seed in options.seeds]
        return compare_fits(medians, out)

    if options.only:  # one arm kind (e.g. to run the arms of a seed in two processes); no tables
        for seed in options.seeds:
            arm(options.only, seed, out, options.n_trials, extra)
        return
    pairs = [(arm("median", seed, out, options.n_trials, extra), arm("none", seed, out, options.n_trials, extra))
             for seed in options.seeds]
    print(f"\n{options.n_trials} trials per study, default search space, tune.py defaults"
          + (f" + {' '.join(extra)}" if extra else "") + "\n")
    print("| TPE seed | pruner | epochs trained | pruned trials | wall time | CPU time | best val/localization "
          "(trial) | epochs saved | best difference |")
    print("|---|---|---|---|---|---|---|---|---|")
    for median, none in pairs:
        for a in (median, none):
            saved = f"{1 - median['epochs'] / none['epochs']:.0%}" if a is median else ""
            difference = f"{median['best'] - none['best']:+.2f}" if a is median else ""
            print(f"| {a['seed']} | {a['pruner']} | {a['epochs']} | {a['pruned']} | {a['wall'] / 60:.1f} min | "
                  f"{a['cpu'] / 60:.1f} min | {a['best']:.2f} (#{a['best_number']}) | {saved} | {difference} |")
    epochs = {p: sum(pair[i]["epochs"] for pair in pairs) for i, p in enumerate(("median", "none"))}
    worst = min(median["best"] - none["best"] for median, none in pairs)
    print(f"\nall seeds: {epochs['median']} vs {epochs['none']} epochs, {1 - epochs['median'] / epochs['none']:.0%} "
          f"saved by MedianPruner (goal >= 40%); worst best-value difference {worst:+.2f} points (goal within 1)")
    for median, none in pairs:
        for a in (median, none):
            print(f"best params (seed {a['seed']}, {a['pruner']}): {a['best_params']}")
    if options.sweep and Path(options.sweep).is_file():
        print_sweep_positions([pair[0] for pair in pairs], Path(options.sweep))
    if options.skip_fit:
        return
    compare_fits([pair[0] for pair in pairs], out)


def sweep_means(results: Path) -> Dict[float, float]:
    """Mean over seeds of the last epoch's val/localization per bg_grid_size, from bench_sweep.py's results."""
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    grid = sorted({row["bg"] for row in rows})
    return {bg: statistics.fmean(row["curve"][-1]["val/localization"] for row in rows if row["bg"] == bg)
            for bg in grid}


def print_sweep_positions(medians: List[dict], results: Path) -> None:
    """Where each study's best bg_grid_size lies on the sweep's curve (linear between its grid points)."""
    means = sweep_means(results)
    grid = sorted(means)
    top = max(means.values())
    print(f"\nbest bg_grid_size against the sweep ({results}; sweep maximum {top:.2f} at "
          f"{max(means, key=means.get):.1f}):")
    for median in medians:
        bg = median["best_params"].get("bg_grid_size")
        if bg is None:
            continue
        value = float(np.interp(bg, grid, [means[g] for g in grid]))
        print(f"  seed {median['seed']}: bg_grid_size {bg:.3f}, sweep value {value:.2f} ({value - top:+.2f} from the "
              f"maximum; goal within 2)")


def compare_fits(medians: List[dict], out: Path) -> None:
    """fit.py's default run, plain CAM, and each seed's tuned values, trained as fit.py does (its default 8 full epochs)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fit_runs import best_epoch, last_val, run_all

    jobs = [{"key": {"run": "plain CAM (--bg-grid-size 0)"}, "name": "fit-plain", "args": ["--bg-grid-size", "0"]},
            {"key": {"run": "default (bg_grid_size 0.25, lr 0.005)"}, "name": "fit-default", "args": []}]
    for median in medians:
        best = median["best_params"]
        jobs.append({"key": {"run": f"tuned, TPE seed {median['seed']} (bg_grid_size {best['bg_grid_size']:.3f}, "
                                    f"lr {best['lr']:.4f})"},
                     "name": f"fit-tuned-seed{median['seed']}",
                     "args": [f"--model.bg_grid_size={best['bg_grid_size']}", f"--model.lr={best['lr']}"]})
    rows = run_all(jobs, out / "fits", processes=2, threads=1)
    print("\nfit.py, default training (8 full epochs, seed 0); test with the best val checkpoint:\n")
    print("| run | val MaxBoxAccV2, best epoch (epoch) | val MaxBoxAccV2, last epoch | test MaxBoxAccV2 | test top1_loc |")
    print("|---|---|---|---|---|")
    for row in rows:
        epoch = best_epoch(row)
        print(f"| {row['run']} | {row['curve'][epoch]['val/localization']:.2f} ({epoch}) | {last_val(row):.2f} | "
              f"{row['test']['MaxBoxAccV2']:.2f} | {row['test']['top1_loc']:.2f} |")


if __name__ == "__main__":
    main()
