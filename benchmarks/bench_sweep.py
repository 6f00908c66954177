#!/usr/bin/env python
"""``bg_grid_size`` sweep on the default data: where Hide-and-Seek's optimum lies, with seed spread.

Trains fit.py's default run for every ``bg_grid_size`` in ``--grid`` (default 0, 0.1, ..., 0.9) and
every training seed in ``--seeds`` (``--seed_everything``; default 0 1 2; the data stay the same),
then prints a Markdown table of, per value, the mean ± standard deviation over seeds of

* val MaxBoxAccV2 of the last epoch (a tuning trial's value),
* test MaxBoxAccV2 of the checkpoint fit.py tests (its best val epoch),
* val top-1 after the second epoch; and every seed's best val epoch (0-based),

and the margins that say whether the optimum is real: best value minus plain CAM (0) and minus the
largest cells, each against twice the larger seed spread of the two, and the same margin per seed
(same seed, same initialization and batch order: a paired difference) against twice the spread of
those per-seed differences. It writes the curve with error
bars to ``--png``. Runs ``--jobs`` fits at a time (``benchmarks/fit_runs.py``); an interrupted sweep
resumes from ``<out>/results.jsonl``. Any other flag is a fit.py flag applied to every run. Not a
timed test: 30 fits of about a minute each on 2 cores.

Usage::

    python benchmarks/bench_sweep.py [--seeds 0 1 2] [--grid 0 0.1 ... 0.9] [--out runs/bench-sweep]
        [--png docs/bg_grid_size_sweep.png] [--jobs 2] [--threads 1] [fit.py flags]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fit_runs import best_epoch, last_val, mean_std, run_all  # noqa: E402

DEFAULT_GRID = [round(0.1 * k, 1) for k in range(10)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--grid", type=float, nargs="+", default=DEFAULT_GRID)
    parser.add_argument("--out", default="runs/bench-sweep")
    parser.add_argument("--png", default=None, help="curve with error bars [<out>/sweep.png]")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    options, extra = parser.parse_known_args()
    out = Path(options.out)
    jobs = [{"key": {"bg": bg, "seed": seed}, "name": f"bg{bg:.2f}-seed{seed}",
             "args": ["--bg-grid-size", str(bg), "--seed_everything", str(seed), *extra]}
            for bg in options.grid for seed in options.seeds]

    def progress(row: Dict) -> None:
        val = [round(epoch["val/localization"], 2) for epoch in row["curve"]]
        print(f"bg {row['bg']:.2f} seed {row['seed']}: val by epoch {val}, test "
              f"{row['test']['localization']:.2f} ({row['seconds']:.0f} s)", flush=True)

    rows = run_all(jobs, out, options.jobs, options.threads, on_result=progress)
    print_table(rows, options.grid)
    save_curve(rows, options.grid, Path(options.png) if options.png else out / "sweep.png")


def _group(rows: List[Dict], bg: float) -> List[Dict]:
    return [row for row in rows if row["bg"] == bg]


def print_table(rows: List[Dict], grid: Sequence[float]) -> None:
    """Markdown table per bg_grid_size, then the optimum's margins."""
    print("\n| bg_grid_size | val MaxBoxAccV2, last epoch | test MaxBoxAccV2, best checkpoint | best val epoch "
          "(per seed) | val top-1 after epoch 2 |")
    print("|---|---|---|---|---|")
    for bg in grid:
        group = _group(rows, bg)
        top1 = [row["curve"][min(1, len(row["curve"]) - 1)]["val/top1"] for row in group]
        print(f"| {bg:.1f} | {mean_std([last_val(r) for r in group])} | "
              f"{mean_std([r['test']['localization'] for r in group])} | "
              f"{', '.join(str(best_epoch(r)) for r in group)} | {mean_std(top1)} |")
    for name, value in (("val, last epoch", last_val), ("test, best checkpoint", lambda r: r["test"]["localization"])):
        stats = {bg: [value(r) for r in _group(rows, bg)] for bg in grid}
        means = {bg: statistics.fmean(v) for bg, v in stats.items()}
        spread = {bg: statistics.stdev(v) if len(v) > 1 else 0.0 for bg, v in stats.items()}
        top = max(grid, key=lambda bg: means[bg])
        lines = [f"{name}: optimum at bg_grid_size {top:.1f} ({means[top]:.2f})"]
        for other in (min(grid), max(grid)):
            if other != top:
                margin = means[top] - means[other]
                bound = 2 * max(spread[top], spread[other])
                paired = {r["seed"]: value(r) for r in _group(rows, top)}
                differences = [paired[r["seed"]] - value(r) for r in _group(rows, other) if r["seed"] in paired]
                paired_spread = statistics.stdev(differences) if len(differences) > 1 else 0.0
                lines.append(f"{margin:+.2f} over {other:.1f} (twice the larger seed spread: {bound:.2f}; "
                             f"per seed {', '.join(f'{d:+.2f}' for d in differences)}, twice their spread: "
                             f"{2 * paired_spread:.2f})")
        print("; ".join(lines))


def save_curve(rows: List[Dict], grid: Sequence[float], path: Path) -> None:
    """Mean ± std over seeds of val (last epoch) and test MaxBoxAccV2 against bg_grid_size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.6), dpi=120)
    for label, value in (("val, last epoch", last_val), ("test, best checkpoint",
                                                          lambda r: r["test"]["localization"])):
        values = [[value(r) for r in _group(rows, bg)] for bg in grid]
        axis.errorbar(grid, [statistics.fmean(v) for v in values],
                      yerr=[statistics.stdev(v) if len(v) > 1 else 0.0 for v in values],
                      marker="o", capsize=3, label=label)
    axis.set_xlabel("bg_grid_size (HaS cell side / crop side)")
    axis.set_ylabel("MaxBoxAccV2 (%)")
    axis.set_title("Hide-and-Seek on the default data (mean ± std over seeds)", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    print(f"curve: {path}")


if __name__ == "__main__":
    sys.exit(main())
