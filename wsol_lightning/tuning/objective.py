"""A trial = ``fit.py``'s run with the suggested values and one more callback.

:class:`TrialObjective` appends the search space's fixed arguments, the
suggested values (``--model.x=v`` / ``--data.y=v``) and ``--run_dir
<study dir>/trial-<number>`` to the user's fit.py arguments, builds the run with
:func:`wsol_lightning.cli.build_run` (the one training path) plus
``optuna_integration.PyTorchLightningPruningCallback(trial, monitor="val/localization")``,
trains it with :func:`wsol_lightning.cli.fit_and_test` (by default without the
test split and the figure) and returns the last epoch's ``val/localization``.

Outcomes: pruned by the pruner -> PRUNED (``pruned_epoch`` recorded);
non-finite loss -> PRUNED with the reason recorded (a diverged setting is a bad
setting, not a crash); any other exception (CUDA out of memory, ...) -> FAIL
with its message in the ``error`` user attribute, and the study goes on.

User attributes of a trial: every ``val/*`` metric of its last validated epoch,
``epochs`` (epochs run), ``checkpoint`` (its ``last.ckpt``), ``config`` (the
resolved config: ``fit.py --config`` reproduces the trial), ``run_dir``, and for
pruned trials ``pruned_epoch`` and ``reason``.
"""

from __future__ import annotations

import gc
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import optuna

from wsol_lightning.tuning import ddp
from wsol_lightning.tuning.space import SearchSpace, trial_args
from wsol_lightning.tuning.study import OVER_BUDGET_KEY, is_over_budget


class OverBudget(Exception):
    """Another worker started the study's last budgeted trial at the same instant."""


def trial_arguments(base_args: Sequence[str], space: SearchSpace, values: Dict[str, Any],
                    run_dir: Path) -> List[str]:
    """fit.py arguments of a trial: the user's, the space's fixed ones, the suggested ones, its run dir."""
    return [*base_args, *space.fixed_args(), *trial_args(values), "--run_dir", str(run_dir)]


class TrialObjective:
    """The objective given to ``study.optimize``.

    Args:
        base_args: fit.py arguments applied to every trial (tune defaults first, then the user's).
        space: the search space.
        study_dir: parent of the trials' run directories.
        storage_url: the study's storage URL (handed to plain-DDP ranks).
        study_name: the study's name (handed to plain-DDP ranks).
        n_trials: the study's budget (a trial past it is abandoned, see :class:`OverBudget`).
        test: evaluate the test split after each trial (with the best checkpoint).
        figure: draw each trial's CAM figure.
    """

    def __init__(self, base_args: Sequence[str], space: SearchSpace, study_dir: Path, storage_url: Optional[str],
                 study_name: str, n_trials: int, test: bool = False, figure: bool = False) -> None:
        self.base_args = list(base_args)
        self.space = space
        self.study_dir = Path(study_dir)
        self.storage_url = storage_url
        self.study_name = study_name
        self.n_trials = n_trials
        self.test = test
        self.figure = figure

    def __call__(self, trial: optuna.Trial) -> float:  # noqa: D102
        if is_over_budget(trial.study, trial.number, self.n_trials):
            trial.storage.set_trial_system_attr(trial._trial_id, OVER_BUDGET_KEY, True)
            trial.study.stop()
            raise OverBudget(f"the study already has its {self.n_trials} trials")
        values = self.space.suggest(trial)
        run_dir = self.study_dir / f"trial-{trial.number:04d}"
        args = trial_arguments(self.base_args, self.space, values, run_dir)
        trial.set_user_attr("run_dir", str(run_dir))
        try:
            return run_trial(trial, args, self.storage_url, self.study_name, self.test, self.figure)
        finally:
            gc.collect()


def run_trial(trial: optuna.Trial, args: Sequence[str], storage_url: Optional[str], study_name: str,
              test: bool = False, figure: bool = False) -> float:
    """Train one trial's run with the pruning callback; record what it did in user attributes."""
    from optuna_integration import PyTorchLightningPruningCallback

    from wsol_lightning.cli import build_run, fit_and_test
    from wsol_lightning.module import MONITOR, NonFiniteLossError

    pruning = PyTorchLightningPruningCallback(trial, monitor=MONITOR)
    run = build_run(args, callbacks=[pruning])
    handoff = ddp.make_handoff(storage_url or "", study_name, trial._trial_id, list(args), test)
    ddp.log_rank(0, trial._trial_id, list(args))
    try:
        with ddp.plain_ddp_trial(run.trainer, handoff):
            metrics = fit_and_test(run, test=test, figure=figure)
    except optuna.TrialPruned as pruned:
        _record(trial, run, {}, reason=str(pruned), pruned=True)
        raise
    except Exception as error:  # noqa: BLE001 - classified below, re-raised
        message = _describe(error, trial)
        if "NonFiniteLossError" in message or isinstance(error, NonFiniteLossError):
            reason = f"diverged: {message}"
            _record(trial, run, {}, reason=reason, pruned=True)
            raise optuna.TrialPruned(reason) from None
        _record(trial, run, {}, error=message)
        raise
    finally:
        _release(run)
    try:
        with warnings.catch_warnings():
            # Plain ddp: rank 0 is this process and already reported these epochs.
            warnings.filterwarnings("ignore", message=".*is already reported.*")
            pruning.check_pruned()
    except optuna.TrialPruned as pruned:
        _record(trial, run, metrics, reason=str(pruned), pruned=True)
        raise
    value = metrics.get(MONITOR)
    _record(trial, run, metrics)
    if value is None:
        raise RuntimeError(f"the run logged no {MONITOR} (validation disabled? see --trainer.limit_val_batches)")
    return float(value)


def _describe(error: BaseException, trial: optuna.Trial) -> str:
    """One line: the exception, or the error a DDP rank recorded when rank 0 only saw a broken collective."""
    message = f"{type(error).__name__}: {' '.join(str(error).split())}"
    try:
        ranks = ddp.rank_errors(trial)
    except Exception:  # noqa: BLE001 - the storage may be the problem
        ranks = []
    if ranks:
        message = f"{'; '.join(ranks)} (rank 0: {message})"
    # ddp_spawn wraps the worker's exception; keep the last line, which names it.
    if "ProcessRaisedException" in message or "Traceback" in message:
        lines = [line for line in str(error).splitlines() if line.strip()]
        if lines:
            message = f"{type(error).__name__}: {lines[-1].strip()}"
    return message[:1000]


def _epochs(trial: optuna.Trial, run) -> int:
    """Epochs run: reported epochs (works across DDP processes), else the trainer's count."""
    reported = trial.storage.get_trial(trial._trial_id).intermediate_values
    if reported:
        return int(max(reported)) + 1
    return int(run.trainer.current_epoch)


def _record(trial: optuna.Trial, run, metrics: Dict[str, Any], reason: Optional[str] = None,
            error: Optional[str] = None, pruned: bool = False) -> None:
    callback_metrics = {key: float(value) for key, value in run.trainer.callback_metrics.items()}
    callback_metrics.update({k: v for k, v in metrics.items() if isinstance(v, float)})
    for key, value in sorted(callback_metrics.items()):
        if key.startswith(("val/", "test/")):
            trial.set_user_attr(key, round(value, 4))
    epochs = _epochs(trial, run)
    trial.set_user_attr("epochs", epochs)
    checkpoints = sorted(Path(run.run_dir).glob("**/last.ckpt"))
    if checkpoints:
        trial.set_user_attr("checkpoint", str(checkpoints[-1]))
    configs = sorted(Path(run.run_dir).glob("**/config.yaml"))
    if configs:
        trial.set_user_attr("config", str(configs[-1]))
    if pruned:
        trial.set_user_attr("pruned_epoch", max(0, epochs - 1))
    if reason:
        trial.set_user_attr("reason", reason[:1000])
    if error:
        trial.set_user_attr("error", error[:1000])


def _release(run) -> None:
    """Drop what a finished trial holds (a worker fits many trials in one process)."""
    try:
        for logger in run.trainer.loggers:
            logger.finalize("success")
    except Exception:  # noqa: BLE001 - best effort
        pass
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass
