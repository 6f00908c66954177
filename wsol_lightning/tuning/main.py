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
import os
import sys
import time
import warnings
from typing import List, Optional, Sequence

from wsol_lightning.errors import WSOLInputError, exit_on_input_error


@exit_on_input_error
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``tune.py`` with ``argv``; returns the exit status."""
    from wsol_lightning.tuning import ddp

    handoff = ddp.handoff_from_env()
    if handoff is not None:  # a rank re-launched by plain ddp: join rank 0's trial, never start a study loop
        quiet()
        return ddp.run_rank(handoff)

    from wsol_lightning.tuning import interrupts, workers
    from wsol_lightning.tuning.options import parse_args

    argv = list(sys.argv[1:] if argv is None else argv)
    options, fit_args = parse_args(argv)
    quiet()
    supervisor = workers.supervisor_pid()
    with interrupts.handled(announce=not supervisor and launched_rank() == 0):
        if supervisor:  # one of --workers N: trial lines only; the supervisor checked, prints and reports
            workers.watch_supervisor(supervisor)
            return work(options, fit_args)
        return tune(options, fit_args, argv)


def tune(options: argparse.Namespace, fit_args: List[str], argv: List[str]) -> int:
    """Check, open the study, run its trials (here, or in ``--workers`` processes), print the results."""
    from wsol_lightning.tuning import interrupts, report, workers
    from wsol_lightning.tuning.checks import dry_build
    from wsol_lightning.tuning.plan import make_plan, open_study
    from wsol_lightning.tuning.study import budget

    plan = make_plan(options, fit_args)
    world = dry_build(plan.base_args, plan.space, plan.study_dir, plan.is_rdb, workers=options.workers)
    if world is not None:  # one of the ranks torchrun/SLURM/MPI started: rank 0 leads, the others follow
        from wsol_lightning.tuning import cluster

        plan.ranks = cluster.Ranks(world, options.dist_timeout)
        if not plan.ranks.leader:
            return cluster.follow(plan.ranks, plan.objective(), plan.url)
    try:
        study, created, existing = open_study(plan)
    except WSOLInputError as error:
        if plan.ranks is not None:  # the followers exit with the same line
            plan.ranks.exchange(("error", str(error)))
        raise
    print(plan.header(created, existing), flush=True)
    missed = interrupts.requeue_missed(study)
    if missed:
        print(f"queued again: trial {', '.join(map(str, missed))} (interrupted before its copy was queued)", flush=True)
    started = time.monotonic()
    if options.workers > 1:
        statuses = workers.run_workers(options.workers, argv)
    else:
        run_trials(plan, study)
    if plan.ranks is not None:
        if plan.ranks.broken:
            print("error: a rank failed alone and left the others in a collective (its error is in the trial); "
                  "rerun the same launch command to resume the study", file=sys.stderr, flush=True)
            return 1
        plan.ranks.stop_followers(interrupts.exit_status())
    if interrupts.requested() is not None:
        print(interrupts.stop_line(budget(study).done, plan.n_trials), file=sys.stderr, flush=True)
        return interrupts.exit_status()
    report.print_summary(study, plan.url, plan.study_dir / "plots" if options.plots else None,
                         time.monotonic() - started)
    if options.workers > 1 and any(statuses):
        print(f"error: worker exit statuses {statuses} (their output is above)", file=sys.stderr, flush=True)
        return 1
    return 0


def work(options: argparse.Namespace, fit_args: List[str]) -> int:
    """One worker of ``--workers N``: run trials until the study has its budget; exit 128 + signal if stopped."""
    from wsol_lightning.tuning import interrupts
    from wsol_lightning.tuning.plan import make_plan, open_study

    plan = make_plan(options, fit_args)
    study, _, _ = open_study(plan)
    run_trials(plan, study)
    return interrupts.exit_status()


def run_trials(plan, study) -> None:
    """This process's study loop, one line per trial, interrupted trials queued again."""
    from wsol_lightning.tuning import interrupts, loop, report

    options = plan.options
    stop = plan.ranks.leader_should_stop if plan.ranks else (lambda: interrupts.requested() is not None)
    loop.run_trials(study, plan.objective(), plan.n_trials, heartbeat=plan.is_rdb, timeout=options.timeout,
                    grace_period=options.grace_period, poll_seconds=min(5, options.heartbeat_interval),
                    callbacks=[report.TrialPrinter(), interrupts.requeue_interrupted], should_stop=stop)


def launched_rank() -> int:
    """The global rank a cluster launcher gave this process (0 when none did): only rank 0 talks to the user."""
    for name in ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
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
