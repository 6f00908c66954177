"""``tune.py``: an Optuna study over fit.py runs, MedianPruner, per-epoch pruning.

``python scripts/tune.py`` (no arguments) runs the default study: 20 trials of
HaS on the default synthetic data, ``bg_grid_size ~ U(0, 1)`` and the learning
rate log-uniform, TPE (seeded), MedianPruner, SQLite storage in
``runs/tune-<study name>/``. Rerunning the same command resumes the study
(a larger ``--n-trials`` adds trials). Flags of tune.py are listed by
``--help``; every other flag is a fit.py flag (``--trainer.*``, ``--model.*``,
``--data.*``, ``--config``, ``--seed_everything``) applied to every trial.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from typing import List, Optional, Sequence

from wsol_lightning.errors import exit_on_input_error


@exit_on_input_error
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``tune.py`` with ``argv``; returns the exit status."""
    from wsol_lightning.tuning import ddp

    handoff = ddp.handoff_from_env()
    if handoff is not None:  # a rank re-launched by plain ddp: join rank 0's trial, never start a study loop
        quiet()
        return ddp.run_rank(handoff)

    from wsol_lightning.tuning import interrupts
    from wsol_lightning.tuning.options import parse_args

    options, fit_args = parse_args(sys.argv[1:] if argv is None else argv)
    quiet()
    with interrupts.handled():
        return tune(options, fit_args)


def tune(options: argparse.Namespace, fit_args: List[str]) -> int:
    """Check, open the study, run trials until the budget is used (or a signal came), print the results."""
    from wsol_lightning.tuning import interrupts, report
    from wsol_lightning.tuning.checks import dry_build
    from wsol_lightning.tuning.loop import run_trials
    from wsol_lightning.tuning.plan import make_plan, open_study
    from wsol_lightning.tuning.study import budget

    plan = make_plan(options, fit_args)
    dry_build(plan.base_args, plan.space, plan.study_dir, plan.is_rdb)
    study, created, existing = open_study(plan)
    print(plan.header(created, existing), flush=True)
    started = time.monotonic()
    run_trials(study, plan.objective(), plan.n_trials, heartbeat=plan.is_rdb, timeout=options.timeout,
               grace_period=options.grace_period, poll_seconds=min(5, options.heartbeat_interval),
               callbacks=[report.TrialPrinter(), interrupts.requeue_interrupted],
               should_stop=lambda: interrupts.requested() is not None)
    if interrupts.requested() is not None:
        print(interrupts.stop_line(budget(study).done, plan.n_trials), file=sys.stderr, flush=True)
        return interrupts.exit_status()
    report.print_summary(study, plan.url, plan.study_dir / "plots" if options.plots else None,
                         time.monotonic() - started)
    return 0


def quiet() -> None:
    """Lightning and Optuna stay quiet; tune.py prints a line per trial instead."""
    import lightning.fabric  # noqa: F401 - both set their loggers to INFO on import
    import lightning.pytorch  # noqa: F401
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*GPU available but not used.*")
    warnings.filterwarnings("ignore", ".*is deprecated.*")
    warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", ".*when logging on epoch level in distributed setting.*")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
