#!/usr/bin/env python
"""Which pruner setting would have paid on your study? Replays pruners over a no-pruner study's curves.

Give it studies run with ``--pruner none`` (e.g. the ``none`` arms of ``bench_pruning.py``). Their
complete trials, in trial order, are fed to a fresh in-memory study under each pruner setting, as
tune.py's objective feeds a real one: the ``val/localization`` of every epoch is reported at step =
epoch, the trial stops where ``should_prune()`` says so, and a finished trial's value is its last
epoch's. The pruners are optuna's own, built by tune.py's :func:`~wsol_lightning.tuning.study.make_pruner`
from the same flags. Per study it prints the share of epochs saved and how much the best value fell.

The replay does not let the sampler react to the pruned trials (a real pruned study draws different
trials after the first prune), so it ranks settings; ``bench_pruning.py`` measures the one you pick.

Usage::

    python benchmarks/replay_pruners.py runs/bench-pruning/tune-none-seed*/optuna.db
    python benchmarks/replay_pruners.py STORAGE_URL_OR_DB [...] [--study NAME] [--startup 3 5] [--warmup 1 2 3]
        [--percentiles 50 25]     # PercentilePruner's percentile (50 = MedianPruner; 25: keep the top quarter)
        [--patience off 0 1]      # tune.py's --patience (PatientPruner around it; off: none)
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import optuna
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wsol_lightning.tuning.options import patience_flag  # noqa: E402
from wsol_lightning.tuning.study import make_pruner  # noqa: E402

Curve = List[float]


def load_curves(storage: str, study_name: Optional[str]) -> Tuple[str, List[Curve], str]:
    """The per-epoch values of the complete trials (in trial order), the study's name and direction."""
    url = storage if "://" in storage else f"sqlite:///{storage}"
    names = optuna.get_all_study_names(storage=url)
    if study_name is None:
        if len(names) != 1:
            raise SystemExit(f"{storage}: holds studies {names}; choose one with --study")
        study_name = names[0]
    study = optuna.load_study(study_name=study_name, storage=url)
    curves = [[trial.intermediate_values[step] for step in sorted(trial.intermediate_values)]
              for trial in study.trials if trial.state == TrialState.COMPLETE and trial.intermediate_values]
    if not curves:
        raise SystemExit(f"{storage}: study {study_name} has no complete trial with reported epochs")
    return study_name, curves, study.direction.name.lower()


def replay(curves: Sequence[Curve], pruner: optuna.pruners.BasePruner, direction: str) -> Tuple[int, float]:
    """Epochs trained and best value when ``curves`` run in order under ``pruner``."""
    study = optuna.create_study(direction=direction, pruner=pruner)
    epochs = 0
    for curve in curves:
        trial = study.ask()
        for step, value in enumerate(curve):
            trial.report(value, step)
            epochs += 1
            if trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            study.tell(trial, curve[-1])
    return epochs, study.best_value


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("storages", nargs="+", help="storage URLs or SQLite files of no-pruner studies")
    parser.add_argument("--study", default=None, help="study name (default: the storage's only study)")
    parser.add_argument("--startup", type=int, nargs="+", default=[3, 5], help="n_startup_trials values")
    parser.add_argument("--warmup", type=int, nargs="+", default=[0, 1, 2, 3], help="n_warmup_steps values")
    parser.add_argument("--percentiles", type=float, nargs="+", default=[50.0],
                        help="PercentilePruner's percentile: a trial outside the top p %% of the others at an "
                             "epoch stops (tune.py's --percentile; 50 is MedianPruner, 25 keeps the top quarter)")
    parser.add_argument("--patience", type=patience_flag, nargs="+", default=[None],
                        help="tune.py's --patience values (off: no PatientPruner; N: judge a trial only once its "
                             "best epoch is more than N epochs old)")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies = [load_curves(storage, args.study) for storage in args.storages]
    # What each study trained and found without pruning: the reference of every setting below.
    unpruned = [replay(curves, optuna.pruners.NopPruner(), direction) for _, curves, direction in studies]
    for (name, curves, _), (epochs, _) in zip(studies, unpruned):
        print(f"{name}: {len(curves)} complete trials, {epochs} epochs")
    print("\n| pruner | n_startup_trials | n_warmup_steps | patience | epochs saved per study | all | "
          "best value change |")
    print("|---|---|---|---|---|---|---|")
    for percentile, startup, warmup, patience in itertools.product(args.percentiles, args.startup, args.warmup,
                                                                   args.patience):
        name = "median" if percentile == 50.0 else "percentile"
        rows = []
        for (_, curves, direction), (full, full_best) in zip(studies, unpruned):
            pruner = make_pruner(name, startup, warmup, 1, percentile=percentile, patience=patience)
            epochs, best = replay(curves, pruner, direction)
            rows.append((epochs, full, best - full_best))
        saved = " / ".join(f"{1 - e / f:.0%}" for e, f, _ in rows)
        overall = 1 - sum(e for e, _, _ in rows) / sum(f for _, f, _ in rows)
        change = " / ".join(f"{d:+.2f}" for _, _, d in rows)
        label = "median" if name == "median" else f"percentile {percentile:g}"
        print(f"| {label} | {startup} | {warmup} | {'off' if patience is None else patience} | {saved} | "
              f"{overall:.0%} | {change} |")


if __name__ == "__main__":
    main()
