"""tune.py's own flags, their defaults and their checks (every other flag is a fit.py flag).

:func:`parse_args` splits a command line into tune.py's options and the fit.py
arguments that every trial starts from (:data:`TUNE_DEFAULT_ARGS` first, then
the user's, which override them).
"""

from __future__ import annotations

import argparse
from typing import List, Sequence, Tuple

from wsol_lightning.errors import WSOLInputError
from wsol_lightning.tuning.study import PRUNERS, SAMPLERS

#: fit.py arguments every trial starts from (the user's flags, ``--config`` included, come after and
#: override them): 8 short epochs of 19 training batches each (half a pass over the default data, so
#: 4 passes in all; the pruner decides every 19 batches), validated on the first 8 validation batches
#: (256 images of the default data), with the learning rate falling to 0 on a cosine over the trial's
#: 152 steps, so a trial's last epoch is not noisier than its first (benchmarks/bench_pruning.py
#: measured these choices; README, "Measured").
#: Pass --trainer.limit_train_batches 1.0 --trainer.limit_val_batches 1.0 to tune on full epochs.
TUNE_DEFAULT_ARGS = ["--trainer.max_epochs", "8", "--trainer.limit_train_batches", "19",
                     "--trainer.limit_val_batches", "8", "--model.lr_schedule", "cosine",
                     "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
DEFAULT_N_TRIALS = 20
DEFAULT_STUDY_NAME = "wsol-tune"


def patience_flag(value: str):
    """``--patience``: a number of epochs >= 0, or ``off`` (None: no PatientPruner)."""
    if value.lower() in ("off", "none"):
        return None
    try:
        epochs = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of epochs or 'off', got {value!r}") from None
    if epochs < 0:
        raise argparse.ArgumentTypeError(f"{epochs} must be >= 0 (or 'off')")
    return epochs


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a refused flag is one line (``error: tune.py: argument --n-trials: ...``), exit status 2."""

    def error(self, message: str):
        raise WSOLInputError(f"{self.prog}: {message}")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None/[] (those flags say what they default to)."""

    def _get_help_string(self, action):  # noqa: D102
        default = action.default  # by identity: 1 == True, and a default of 1 is worth showing
        if default is None or default is True or default is argparse.SUPPRESS or (isinstance(default, list)
                                                                                 and not default):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """tune.py's own flags (the rest go to fit.py's parser)."""
    parser = _OneLineParser(
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
    algo.add_argument("--sampler", default="tpe", choices=SAMPLERS)
    algo.add_argument("--grid-points", type=int, default=5, help="grid sampler: values per continuous parameter")
    algo.add_argument("--pruner", default="median", choices=PRUNERS)
    algo.add_argument("--n-startup-trials", type=int, default=3,
                      help="median/percentile pruner: trials before any pruning")
    algo.add_argument("--n-warmup-steps", type=int, default=1,
                      help="median/percentile pruner: epochs of a trial before it can be pruned")
    algo.add_argument("--interval-steps", type=int, default=1, help="median/percentile pruner: epochs between checks")
    algo.add_argument("--percentile", type=float, default=25.0, help="percentile pruner: keep trials above this")
    algo.add_argument("--patience", type=patience_flag, default=None, metavar="N|off",
                      help="prune only trials whose best epoch is more than N epochs old (optuna's PatientPruner "
                           "around the pruner: a slow learner still rising is kept); off: judge every epoch")
    trials = parser.add_argument_group("trials")
    trials.add_argument("--test", action="store_true", help="evaluate each trial on the test split")
    trials.add_argument("--figure", action="store_true", help="draw each trial's CAM figure")
    trials.add_argument("--no-plots", dest="plots", action="store_false", help="do not write the study's plots")
    workers = parser.add_argument_group("workers")
    workers.add_argument("--workers", type=int, default=1,
                         help="worker processes on this machine running trials at the same time (GPUs are dealt "
                              "round-robin, CPU cores split between them); more machines: start tune.py on each "
                              "with one --storage")
    workers.add_argument("--heartbeat-interval", type=int, default=10, help="seconds between a trial's heartbeats")
    workers.add_argument("--grace-period", type=int, default=60,
                         help="seconds without heartbeat after which a running trial is failed and retried")
    workers.add_argument("--max-retry", type=int, default=3, help="retries of a trial whose worker died")
    workers.add_argument("--dist-timeout", type=float, default=1800.0,
                         help="ranks launched by torchrun/SLURM/MPI: seconds a collective waits for the other "
                              "ranks before the trial fails")
    return parser


def check_options(options: argparse.Namespace) -> None:
    """Refuse values no study can use (one line each); the rest is checked where it is used."""
    if options.n_trials < 1:
        raise WSOLInputError(f"--n-trials={options.n_trials} must be >= 1")
    if options.timeout is not None and not options.timeout > 0:
        raise WSOLInputError(f"--timeout={options.timeout} must be > 0")
    if options.grid_points < 1:
        raise WSOLInputError(f"--grid-points={options.grid_points} must be >= 1")
    if options.heartbeat_interval < 1 or options.grace_period <= options.heartbeat_interval:
        raise WSOLInputError(f"--heartbeat-interval={options.heartbeat_interval} must be >= 1 and "
                             f"--grace-period={options.grace_period} larger than it")
    if options.workers < 1:
        raise WSOLInputError(f"--workers={options.workers} must be >= 1")
    if not options.dist_timeout > 0:
        raise WSOLInputError(f"--dist-timeout={options.dist_timeout} must be > 0")
    if options.max_retry < 0:
        raise WSOLInputError(f"--max-retry={options.max_retry} must be >= 0")


def parse_args(argv: Sequence[str]) -> Tuple[argparse.Namespace, List[str]]:
    """tune.py's checked options, and the fit.py arguments it does not know (passed to every trial)."""
    options, fit_args = build_parser().parse_known_args(list(argv))
    check_options(options)
    return options, fit_args
