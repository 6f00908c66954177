#!/usr/bin/env python
"""Every WSOL method on the default data with fit.py's defaults, over several seeds.

Trains ``fit.py --model.wsol_method M --seed_everything S`` for every registered method and every
seed in ``--seeds`` (default 0 1 2), default knobs, and prints a Markdown table of the mean ±
standard deviation over seeds of val MaxBoxAccV2 of the last epoch and test MaxBoxAccV2 of the
checkpoint fit.py tests, with every seed's best val epoch. Runs ``--jobs`` fits at a time
(``benchmarks/fit_runs.py``), resumable from ``<out>/results.jsonl``; any other flag is a fit.py flag
applied to every run. Not a timed test: 18 fits of about a minute each on 2 cores.

Usage::

    python benchmarks/bench_methods.py [--seeds 0 1 2] [--methods base has ...] [--out runs/bench-methods]
        [--jobs 2] [--threads 1] [fit.py flags]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fit_runs import best_epoch, last_val, mean_std, run_all  # noqa: E402

from wsol_lightning.models.methods.registry import METHODS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--out", default="runs/bench-methods")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    options, extra = parser.parse_known_args()
    jobs = [{"key": {"method": method, "seed": seed}, "name": f"{method}-seed{seed}",
             "args": ["--model.wsol_method", method, "--seed_everything", str(seed), *extra]}
            for method in options.methods for seed in options.seeds]

    def progress(row):
        val = [round(epoch["val/localization"], 2) for epoch in row["curve"]]
        print(f"{row['method']} seed {row['seed']}: val by epoch {val}, test {row['test']['localization']:.2f} "
              f"({row['seconds']:.0f} s)", flush=True)

    rows = run_all(jobs, Path(options.out), options.jobs, options.threads, on_result=progress)
    print("\n| method | knobs (defaults) | val MaxBoxAccV2, last epoch | test MaxBoxAccV2, best checkpoint "
          "| test top-1 | best val epoch (per seed) |")
    print("|---|---|---|---|---|---|")
    for method in options.methods:
        group = [row for row in rows if row["method"] == method]
        knobs = ", ".join(f"`{name}` {spec.default}" for name, spec in METHODS[method].hyperparameters.items()) or "-"
        print(f"| `{method}` | {knobs} | {mean_std([last_val(r) for r in group])} | "
              f"{mean_std([r['test']['localization'] for r in group])} | "
              f"{mean_std([r['test']['top1'] for r in group])} | {', '.join(str(best_epoch(r)) for r in group)} |")


if __name__ == "__main__":
    sys.exit(main())
