"""The objective: a trial is ``fit.py``'s run with the suggested values and one more callback.

As in optuna-examples' ``pytorch_lightning_simple.py``: suggest, build the run,
add ``PyTorchLightningPruningCallback(trial, monitor="val/localization")``, fit,
return the monitored metric. The run is built by
:func:`wsol_lightning.cli.build_run` (the one training path) from the user's
fit.py arguments, the search space's fixed arguments, the suggested values
(``--model.x=v`` / ``--data.y=v``) and ``--run_dir <study dir>/trial-<number>``;
:mod:`~wsol_lightning.tuning.record` records what the trial did.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import optuna

from wsol_lightning.tuning import ddp, interrupts
from wsol_lightning.tuning.record import recorded
from wsol_lightning.tuning.space import SearchSpace, trial_args
from wsol_lightning.tuning.study import OVER_BUDGET_KEY, is_over_budget


class OverBudget(Exception):
    """Another worker started the study's last budgeted trial at the same instant."""


def trial_arguments(base_args: Sequence[str], space: SearchSpace, values: Dict[str, Any],
                    run_dir: Path) -> List[str]:
    """fit.py arguments of a trial: the user's, the space's fixed ones, the suggested ones, its run dir."""
    return [*base_args, *space.fixed_args(), *trial_args(values), "--run_dir", str(run_dir)]


@dataclass
class Objective:
    """The function given to ``study.optimize``.

    Args:
        base_args: fit.py arguments applied to every trial (tune defaults first, then the user's).
        space: the search space.
        study_dir: parent of the trials' run directories.
        n_trials: the study's budget (a trial past it is abandoned, see :class:`OverBudget`).
        storage_url: the study's storage URL (handed to plain-DDP ranks).
        study_name: the study's name (handed to plain-DDP ranks).
        test: evaluate the test split after each trial (with the best checkpoint).
        figure: draw each trial's CAM figure.
    """

    base_args: List[str]
    space: SearchSpace
    study_dir: Path
    n_trials: int
    storage_url: Optional[str] = None
    study_name: str = ""
    test: bool = False
    figure: bool = False

    def __call__(self, trial: optuna.Trial) -> float:
        """Train one trial; returns its last epoch's ``val/localization``."""
        from wsol_lightning.cli import build_run, fit_and_test

        self.claim(trial)
        interrupts.check_trial(trial)
        shared = self.share(trial)
        args = self.arguments(shared)
        trial.set_user_attr("run_dir", args[-1])
        pruning, *others = self.callbacks(shared)
        run = build_run(args, callbacks=[pruning, *others])
        interrupts.keep_signals_here(run.trainer)
        with recorded(trial, run) as record, interrupts.on_interrupt(lambda: _kill_ranks(run.trainer)):
            handoff = ddp.make_handoff(self.storage_url or "", self.study_name, trial._trial_id, args, self.test)
            with ddp.plain_ddp_trial(run.trainer, handoff):
                record.metrics = fit_and_test(run, test=self.test, figure=self.figure)
            with warnings.catch_warnings():
                # DDP: rank 0 is this process (or its spawned copy) and already reported these epochs.
                warnings.filterwarnings("ignore", message=".*is already reported.*")
                pruning.check_pruned()
        return record.value()

    def share(self, trial: optuna.Trial):
        """The trial the run draws its values from (ranks launched from outside share it, see ``cluster``)."""
        return trial

    def arguments(self, trial) -> List[str]:
        """Suggest the trial's values; its fit.py arguments (the run directory last)."""
        values = self.space.suggest(trial)
        return trial_arguments(self.base_args, self.space, values, Path(self.study_dir) / f"trial-{trial.number:04d}")

    def callbacks(self, trial) -> list:
        """The pruning callback (first, with ``check_pruned``) and the interrupt check of a trial's run."""
        from optuna_integration import PyTorchLightningPruningCallback

        from wsol_lightning.module import MONITOR

        return [PyTorchLightningPruningCallback(trial, monitor=MONITOR), interrupts.StopOnInterrupt()]

    def claim(self, trial: optuna.Trial) -> None:
        """Abandon ``trial`` if the budget was used up while it started (another worker won the race)."""
        if is_over_budget(trial.study, trial.number, self.n_trials):
            trial.storage.set_trial_system_attr(trial._trial_id, OVER_BUDGET_KEY, True)
            trial.study.stop()
            raise OverBudget(f"the study already has its {self.n_trials} trials")


def _kill_ranks(trainer) -> None:
    """DDP ranks Lightning started (spawned, or re-launched by plain ddp) stop with their trial at once."""
    import signal

    launcher = trainer.strategy.launcher
    if launcher is not None and hasattr(launcher, "kill"):
        launcher.kill(signal.SIGKILL)
