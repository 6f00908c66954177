"""The study loop of one worker: run trials until the study has its ``n_trials``.

Waiting trials (enqueued, or re-queued after a worker died) are run first.
When the budget is used up but other workers' trials are still running, an RDB
worker waits: a trial whose worker died goes stale after ``--grace-period``
and its retry is then run here, so the study still ends with exactly
``n_trials`` trials (see :class:`~wsol_lightning.tuning.study.Budget`).
"""

from __future__ import annotations

import time
import warnings
from typing import Callable, List, Optional

import optuna

from wsol_lightning.tuning.study import budget


def run_trials(study: optuna.Study, objective: Callable[[optuna.Trial], float], n_trials: int,
               heartbeat: bool, timeout: Optional[float] = None, grace_period: int = 60,
               poll_seconds: float = 5.0, callbacks: Optional[List[Callable]] = None,
               should_stop: Callable[[], bool] = lambda: False) -> None:
    """Run trials of ``study`` until it has ``n_trials`` (or ``timeout`` seconds have passed).

    Args:
        study: the study, with this worker's sampler and pruner.
        objective: what ``study.optimize`` calls for each trial.
        n_trials: the study's budget (all workers together).
        heartbeat: whether the storage runs heartbeats (RDB): then a worker waits for
            other workers' running trials, and retries those whose worker died.
        timeout: seconds after which no new trial is started.
        grace_period: ``--grace-period`` (only named in a message).
        poll_seconds: seconds between looks at the storage while waiting.
        callbacks: ``study.optimize`` callbacks (called after each trial).
        should_stop: asked before each trial and while waiting (an interrupt: stop).
    """
    started = time.monotonic()
    waiting_note = False
    while not should_stop():
        if timeout is not None and time.monotonic() - started >= timeout:
            print(f"--timeout {timeout:g} s reached: no new trial", flush=True)
            return
        if heartbeat:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                optuna.storages.fail_stale_trials(study)
        state = budget(study)
        if state.waiting > 0 or state.counted < n_trials:
            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=callbacks or [], gc_after_trial=True)
            continue
        if state.running > 0 and heartbeat:
            if not waiting_note:
                print(f"budget reached; waiting for {state.running} trial(s) running in other workers (a dead "
                      f"worker's trial is retried here after --grace-period {grace_period} s)", flush=True)
                waiting_note = True
            _sleep(poll_seconds, should_stop)
            continue
        if state.running > 0:
            print(f"{state.running} trial(s) still running in other workers", flush=True)
        return


def _sleep(seconds: float, should_stop: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while not should_stop() and time.monotonic() < deadline:
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
