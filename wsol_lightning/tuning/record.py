"""What a trial leaves in the storage: its outcome, and user attributes that say what it did.

Outcomes: pruned by the pruner -> PRUNED (``pruned_epoch`` recorded);
non-finite loss -> PRUNED with the reason recorded (a diverged setting is a bad
setting, not a crash); SIGINT/SIGTERM -> FAIL with ``reason: interrupted``
(:mod:`~wsol_lightning.tuning.interrupts`); any other exception (CUDA out of
memory, ...) -> FAIL with its message in the ``error`` user attribute, and the
study goes on.

User attributes: every ``val/*`` (and ``test/*``) metric of the trial's last
validated epoch, ``epochs`` (epochs run), ``checkpoint`` (its ``last.ckpt``),
``config`` (the resolved config: ``fit.py --config`` reproduces the trial),
``run_dir``, and for pruned trials ``pruned_epoch`` and ``reason``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import optuna

from wsol_lightning.tuning import ddp, interrupts


class TrialRecord:
    """The metrics a trial's run returned (set by the objective inside :func:`recorded`)."""

    def __init__(self) -> None:
        self.metrics: Dict[str, Any] = {}

    def value(self) -> float:
        """The trial's value: the monitored metric of its last epoch."""
        from wsol_lightning.module import MONITOR

        if self.metrics.get(MONITOR) is None:
            raise RuntimeError(f"the run logged no {MONITOR} (validation disabled? see --trainer.limit_val_batches)")
        return float(self.metrics[MONITOR])


@contextlib.contextmanager
def recorded(trial: optuna.Trial, run) -> Iterator[TrialRecord]:
    """Record the outcome of the run trained inside the block, classify its exception, release the run."""
    from wsol_lightning.module import NonFiniteLossError

    record = TrialRecord()
    try:
        yield record
    except optuna.TrialPruned as pruned:
        write(trial, run, record.metrics, reason=str(pruned), pruned=True)
        raise
    except Exception as error:  # noqa: BLE001 - classified here, re-raised
        rank_errors = _rank_errors(trial)
        message = describe(error, rank_errors)
        if isinstance(error, NonFiniteLossError) or "NonFiniteLossError" in message:
            reason = f"diverged: {message}"
            write(trial, run, {}, reason=reason, pruned=True)
            raise optuna.TrialPruned(reason) from None
        if interrupts.requested() is not None and not rank_errors:
            # Whatever broke after the signal (the batch check, a DataLoader worker that got the Ctrl-C
            # too, a killed DDP rank) broke because of it.
            write(trial, run, {}, reason=interrupts.INTERRUPTED)
            raise interrupts.TrialInterrupted(f"{interrupts.INTERRUPTED} by {interrupts.signal_name()}") from None
        write(trial, run, {}, error=message)
        raise
    else:
        write(trial, run, record.metrics)
    finally:
        release(run)


def _rank_errors(trial: optuna.Trial) -> List[str]:
    try:
        return ddp.rank_errors(trial)
    except Exception:  # noqa: BLE001 - the storage may be the problem
        return []


def describe(error: BaseException, ranks: List[str]) -> str:
    """One line: the exception, or the errors DDP ranks recorded when rank 0 only saw a broken collective."""
    message = f"{type(error).__name__}: {' '.join(str(error).split())}"
    if ranks:
        message = f"{'; '.join(ranks)} (rank 0: {message})"
    # ddp_spawn wraps the worker's exception; keep the last line, which names it.
    if "ProcessRaisedException" in message or "Traceback" in message:
        lines = [line for line in str(error).splitlines() if line.strip()]
        if lines:
            message = f"{type(error).__name__}: {lines[-1].strip()}"
    return message[:1000]


def epochs_run(trial: optuna.Trial, run) -> int:
    """Epochs run: reported epochs (works across DDP processes), else the trainer's count."""
    reported = trial.storage.get_trial(trial._trial_id).intermediate_values
    if reported:
        return int(max(reported)) + 1
    return int(run.trainer.current_epoch)


def write(trial: optuna.Trial, run, metrics: Dict[str, Any], reason: Optional[str] = None,
          error: Optional[str] = None, pruned: bool = False) -> None:
    """Set the trial's user attributes (see module docstring)."""
    callback_metrics = {key: float(value) for key, value in run.trainer.callback_metrics.items()}
    callback_metrics.update({k: v for k, v in metrics.items() if isinstance(v, float)})
    for key, value in sorted(callback_metrics.items()):
        if key.startswith(("val/", "test/")):
            trial.set_user_attr(key, round(value, 4))
    epochs = epochs_run(trial, run)
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


def release(run) -> None:
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
