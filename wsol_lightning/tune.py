"""``tune.py``: an Optuna study over fit.py runs, MedianPruner, per-epoch pruning.

``python scripts/tune.py`` (no arguments) runs the default study: 20 trials of
HaS on the default synthetic data, ``bg_grid_size ~ U(0, 1)`` and the learning
rate log-uniform, TPE (seeded), MedianPruner, SQLite storage in
``runs/tune-<study name>/``. Rerunning the same command resumes the study
(a larger ``--n-trials`` adds trials). Flags of tune.py are listed by
``--help``; every other flag is a fit.py flag (``--trainer.*``, ``--model.*``,
``--data.*``, ``--config``, ``--seed_everything``) applied to every trial.

Several processes (machines) on one ``--storage`` share the study and its
``--n-trials`` budget. See :mod:`wsol_lightning.tuning.study` (storage, budget,
heartbeats), :mod:`wsol_lightning.tuning.objective` (a trial) and
:mod:`wsol_lightning.tuning.ddp` (DDP trials).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from wsol_lightning.errors import WSOLInputError, exit_on_input_error

#: fit.py arguments every trial starts from (the user's flags, ``--config`` included, come after and
#: override them): 8 short epochs of 5 training batches each (the pruner decides every 5 batches),
#: validated on the first 4 validation batches (128 images of the default data), with the learning
#: rate falling to 0 on a cosine over the trial's 40 steps, so a trial's last epoch is not noisier
#: than its first (benchmarks/bench_pruning.py measured these choices; README, "Measured").
#: Pass --trainer.limit_train_batches 1.0 --trainer.limit_val_batches 1.0 to tune on full epochs.
TUNE_DEFAULT_ARGS = ["--trainer.max_epochs", "8", "--trainer.limit_train_batches", "5",
                     "--trainer.limit_val_batches", "4", "--model.lr_schedule", "cosine",
                     "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
DEFAULT_N_TRIALS = 20
DEFAULT_STUDY_NAME = "wsol-tune"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None/[] (those flags say what they default to)."""

    def _get_help_string(self, action):  # noqa: D102
        if action.default in (None, [], True) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """tune.py's own flags (the rest go to fit.py's parser)."""
    parser = argparse.ArgumentParser(
        prog="tune.py", allow_abbrev=False, formatter_class=_HelpFormatter,
        description="Tune WSOL hyperparameters with Optuna (TPE + MedianPruner, per-epoch pruning on "
                    "val/localization). Every other flag is a fit.py flag (--trainer.*, --model.*, --data.*, "
                    "--config, --seed_everything; see scripts/fit.py --help) applied to every trial. Trials start "
                    f"from: {' '.join(TUNE_DEFAULT_ARGS)}.")
    study = parser.add_argument_group("study")
    study.add_argument("--study-name", default=DEFAULT_STUDY_NAME, help="name of the study in the storage")
    study.add_argument("--study-dir", "--run_dir", "--run-dir", dest="study_dir", default=None,
                       help="directory of the study: trial-<n>/ run directories, plots, default storage "
                            "[runs/tune-<study name>]")
    study.add_argument("--storage", default=None,
                       help="Optuna storage: an SQLAlchemy URL (sqlite:///x.db, postgresql://user:pw@host/db) or a "
                            "journal file (*.log, *.journal) [sqlite:///<study dir>/optuna.db]")
    study.add_argument("--n-trials", type=int, default=DEFAULT_N_TRIALS,
                       help="the study's total number of trials, across all workers")
    study.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds "
                                                                  "[no limit]")
    study.add_argument("--direction", default="maximize", choices=("maximize", "minimize"))
    study.add_argument("--seed", type=int, default=0, help="sampler seed")
    study.add_argument("--search-space", default=None,
                       help="YAML search space (configs/search/*.yaml format) [bg_grid_size ~ U(0, 1), "
                            "lr ~ LogU(2e-4, 0.2)]")
    study.add_argument("--enqueue", action="append", default=[], metavar="NAME=VALUE[,NAME=VALUE]",
                       help="evaluate these values first (repeatable)")
    algo = parser.add_argument_group("sampler and pruner")
    algo.add_argument("--sampler", default="tpe", choices=("tpe", "random", "grid"))
    algo.add_argument("--grid-points", type=int, default=5, help="grid sampler: values per continuous parameter")
    algo.add_argument("--pruner", default="median",
                      choices=("median", "none", "percentile", "successive_halving", "hyperband"))
    algo.add_argument("--n-startup-trials", type=int, default=5,
                      help="median/percentile pruner: trials before any pruning")
    algo.add_argument("--n-warmup-steps", type=int, default=1,
                      help="median/percentile pruner: epochs of a trial before it can be pruned")
    algo.add_argument("--interval-steps", type=int, default=1, help="median/percentile pruner: epochs between checks")
    algo.add_argument("--percentile", type=float, default=25.0, help="percentile pruner: keep trials above this")
    trials = parser.add_argument_group("trials")
    trials.add_argument("--test", action="store_true", help="evaluate each trial on the test split")
    trials.add_argument("--figure", action="store_true", help="draw each trial's CAM figure")
    trials.add_argument("--no-plots", dest="plots", action="store_false", help="do not write the study's plots")
    workers = parser.add_argument_group("workers (RDB storages)")
    workers.add_argument("--heartbeat-interval", type=int, default=10, help="seconds between a trial's heartbeats")
    workers.add_argument("--grace-period", type=int, default=60,
                         help="seconds without heartbeat after which a running trial is failed and retried")
    workers.add_argument("--max-retry", type=int, default=3, help="retries of a trial whose worker died")
    return parser


def _quiet() -> None:
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


def _check_options(options: argparse.Namespace) -> None:
    if options.n_trials < 1:
        raise WSOLInputError(f"--n-trials={options.n_trials} must be >= 1")
    if options.timeout is not None and not options.timeout > 0:
        raise WSOLInputError(f"--timeout={options.timeout} must be > 0")
    if options.grid_points < 1:
        raise WSOLInputError(f"--grid-points={options.grid_points} must be >= 1")
    if options.heartbeat_interval < 1 or options.grace_period <= options.heartbeat_interval:
        raise WSOLInputError(f"--heartbeat-interval={options.heartbeat_interval} must be >= 1 and "
                             f"--grace-period={options.grace_period} larger than it")


def check_trainer(trainer, storage_is_rdb: bool) -> None:
    """Refuse settings a pruned trial cannot honour, before any trial runs.

    * ``val_check_interval`` other than once per epoch: the pruning callback
      reports with step = epoch, so a second validation in an epoch would be
      dropped (Optuna ignores a step reported twice);
    * DDP without an RDB storage: optuna-integration's callback needs one.
    """
    from wsol_lightning.tuning import ddp

    interval = trainer.val_check_interval
    if not (isinstance(interval, float) and interval == 1.0):
        raise WSOLInputError(
            f"--trainer.val_check_interval={interval}: tune.py reports val/localization once per epoch (step = "
            f"epoch) and would drop the other validations; use 1.0 (--trainer.check_val_every_n_epoch N validates "
            f"every N epochs)")
    if ddp.is_distributed(trainer) and not storage_is_rdb:
        raise WSOLInputError(f"--trainer.strategy {ddp.strategy_name(trainer)}: DDP trials need an RDB --storage "
                             f"(sqlite:///..., postgresql://...), not a journal file")


def dry_build(args: Sequence[str], space, study_dir: Path, storage_is_rdb: bool) -> None:
    """Build (not train) a run with every parameter at its low end, then its high end, then each choice.

    Catches what only the module or data module knows (``--data.batch_size 0``,
    unknown flags, ...) before any trial; the one-line error is theirs.
    """
    from wsol_lightning.cli import build_run
    from wsol_lightning.tuning.space import trial_args

    corners: List[Dict[str, Any]] = []
    for end in ("low", "high"):
        corners.append({p.name: (getattr(p, end) if p.type != "categorical" else p.choices[0])
                        for p in space.parameters})
    for param in space.parameters:
        for choice in param.choices[1:]:
            corners.append({**corners[0], param.name: choice})
    for values in corners:
        run = build_run([*args, *space.fixed_args(), *trial_args(values), "--run_dir", str(study_dir / "_check")])
        check_trainer(run.trainer, storage_is_rdb)
        del run


@exit_on_input_error
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``tune.py`` with ``argv``; returns the exit status."""
    from wsol_lightning.tuning import ddp

    handoff = ddp.handoff_from_env()
    if handoff is not None:  # a rank re-launched by plain ddp: join rank 0's trial, never start a study loop
        _quiet()
        return ddp.run_rank(handoff)

    argv = list(sys.argv[1:] if argv is None else argv)
    options, fit_args = build_parser().parse_known_args(argv)
    _check_options(options)
    _quiet()

    import optuna

    from wsol_lightning.tuning import report
    from wsol_lightning.tuning.objective import TrialObjective
    from wsol_lightning.tuning.space import default_search_space, load_search_space, parse_enqueue
    from wsol_lightning.tuning.study import (attach, budget, create_or_load_study, enqueue_once, is_journal,
                                             make_pruner, make_sampler, normalize_url, open_storage, redact,
                                             worker_seed)

    study_dir = Path(options.study_dir or Path("runs") / f"tune-{options.study_name}").resolve()
    storage_url = options.storage or f"sqlite:///{study_dir / 'optuna.db'}"
    space = load_search_space(options.search_space) if options.search_space else default_search_space()
    enqueued = parse_enqueue(options.enqueue, space)
    base_args = [*TUNE_DEFAULT_ARGS, *fit_args]
    pruner = make_pruner(options.pruner, options.n_startup_trials, options.n_warmup_steps, options.interval_steps,
                         options.percentile)
    dry_build(base_args, space, study_dir, storage_is_rdb=not is_journal(storage_url))

    storage = open_storage(storage_url, options.heartbeat_interval, options.grace_period, options.max_retry)
    storage_url = normalize_url(storage_url)
    study, created = create_or_load_study(storage, options.study_name, options.direction)
    existing = len(study.get_trials(deepcopy=False))
    sampler = make_sampler(options.sampler, worker_seed(options.seed, created, existing), space, options.grid_points)
    attach(study, sampler, pruner)
    n_trials = options.n_trials
    if options.sampler == "grid":
        grid_size = math.prod(len(values) for values in space.grid(options.grid_points).values())
        if grid_size < n_trials:
            print(f"grid of {grid_size} points: --n-trials {n_trials} lowered to {grid_size}")
            n_trials = grid_size
    for params in enqueued:
        enqueue_once(study, params)

    print(f"study {options.study_name} ({'new' if created else f'resumed, {existing} trials'}) in "
          f"{redact(storage_url)}\nstudy directory: {study_dir}\nsearch space: {space.describe()}"
          + (f" (fixed: {' '.join(space.fixed_args())})" if space.fixed else "")
          + f"\n{n_trials} trials, {options.sampler} sampler, {options.pruner} pruner", flush=True)

    objective = TrialObjective(base_args, space, study_dir, storage_url if not is_journal(storage_url) else None,
                               options.study_name, n_trials, test=options.test, figure=options.figure)
    started = time.monotonic()
    _run_worker(study, objective, n_trials, options, heartbeat=not is_journal(storage_url),
                started=started, printer=report.TrialPrinter())
    elapsed = time.monotonic() - started

    print(f"\nfinished in {elapsed:.0f} s; {report.epochs_trained(study)} epochs trained in the study")
    print("\n".join(report.classic_summary(study)))
    print("\n".join(report.summary_table(study)))
    complete = [t for t in report.visible_trials(study) if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        if "bg_grid_size" in best.params:
            print(f"best bg_grid_size: {best.params['bg_grid_size']:.4f} (val/localization {best.value:.2f}, "
                  f"trial {best.number})")
        if "config" in best.user_attrs:
            print(f"reproduce the best trial: python scripts/fit.py --config {best.user_attrs['config']}")
    if options.plots:
        for name, path in report.save_plots(study, study_dir / "plots").items():
            print(f"plot {name}: {path}")
    print(f"dashboard: optuna-dashboard {redact(storage_url) if not is_journal(storage_url) else storage_url}")
    return 0


def _run_worker(study, objective, n_trials: int, options, heartbeat: bool, started: float, printer) -> None:
    """Run trials until the study has ``n_trials`` (see :class:`~wsol_lightning.tuning.study.Budget`).

    Waiting trials (enqueued, or re-queued after a worker died) are run first.
    When the budget is used up but other workers' trials are still running,
    an RDB worker waits: a trial whose worker died goes stale after
    ``--grace-period`` and its retry is then run here, so the study still ends
    with exactly ``n_trials`` trials.
    """
    import optuna

    from wsol_lightning.tuning.study import budget

    waiting_note = False
    while True:
        if options.timeout is not None and time.monotonic() - started >= options.timeout:
            print(f"--timeout {options.timeout:g} s reached: no new trial", flush=True)
            return
        if heartbeat:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                optuna.storages.fail_stale_trials(study)
        state = budget(study)
        if state.waiting > 0 or state.counted < n_trials:
            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[printer], gc_after_trial=True)
            continue
        if state.running > 0 and heartbeat:
            if not waiting_note:
                print(f"budget reached; waiting for {state.running} trial(s) running in other workers (a dead "
                      f"worker's trial is retried here after --grace-period {options.grace_period} s)", flush=True)
                waiting_note = True
            time.sleep(min(5, options.heartbeat_interval))
            continue
        if state.running > 0:
            print(f"{state.running} trial(s) still running in other workers", flush=True)
        return
