"""Ctrl-C and SIGTERM in tune.py: the running trial ends FAIL ``interrupted`` and is queued again.

The first SIGINT or SIGTERM only asks to stop (:func:`requested`): the handler
raises nothing, so no storage write is cut in half. The running trial stops at
its next batch (:class:`StopOnInterrupt` raises :class:`TrialInterrupted`
there), Optuna records it FAIL with the user attribute ``reason:
interrupted``, and :func:`requeue_interrupted` queues a WAITING copy with the
same parameters, marked as a retry of it (``failed_trial`` / ``retry_history``,
the system attributes Optuna's ``RetryHeartbeatStaleTrialCallback`` writes), so
the budget counts the copy and not the FAIL. Rerunning the same command runs
the copy first, at once, and ends with exactly ``--n-trials`` trials. The
worker prints one line (:func:`stop_line`) and exits with 128 + the signal
number (130 for SIGINT, 143 for SIGTERM).

A second signal exits at once (``os._exit``): every finished trial is already
committed. The running one is left RUNNING (failed and retried once its
heartbeat expires), or, when the second signal lands between Optuna's FAIL and
the callback's copy, FAIL without a copy: the next run of the same command
queues the copies such trials lack (:func:`requeue_missed`) before any trial.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Callable, Iterator, List, Optional

import optuna
from lightning.pytorch import Callback
from optuna.trial import FrozenTrial, TrialState

#: The ``reason`` user attribute of a trial stopped by SIGINT/SIGTERM.
INTERRUPTED = "interrupted"
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrialInterrupted(Exception):
    """Raised inside a trial after SIGINT/SIGTERM; Optuna records the trial FAIL."""


_signum: Optional[int] = None
_announce = True
_hooks: List[Callable[[], None]] = []
_forwards: List[Callable[[int], None]] = []


def requested() -> Optional[int]:
    """The signal that asked tune.py to stop, or None."""
    return _signum


def request(signum: int) -> None:
    """Ask to stop as if ``signum`` had been received (a peer rank's or the supervisor's interrupt)."""
    global _signum
    if _signum is None:
        _signum = int(signum)
        for hook in list(_hooks):
            try:
                hook()
            except Exception:  # noqa: BLE001 - a hook never stops the shutdown
                pass


def exit_status() -> int:
    """128 + the signal number (130 for SIGINT, 143 for SIGTERM); 0 when no signal came."""
    return 128 + _signum if _signum is not None else 0


def signal_name() -> str:
    """``SIGINT`` / ``SIGTERM``."""
    return signal.Signals(_signum).name if _signum is not None else ""


def check() -> None:
    """Raise :class:`TrialInterrupted` if a stop was asked."""
    if _signum is not None:
        raise TrialInterrupted(f"{INTERRUPTED} by {signal_name()}")


def check_trial(trial: optuna.Trial) -> None:
    """:func:`check` for a trial not yet training: it is marked ``reason: interrupted`` first."""
    if _signum is not None:
        trial.set_user_attr("reason", INTERRUPTED)
        check()


def _handle(signum: int, frame) -> None:
    name = signal.Signals(signum).name
    for forward in list(_forwards):
        forward(signum)
    if _signum is not None:
        if _announce:
            os.write(2, f"\nsecond {name}: exiting at once\n".encode())
        os._exit(128 + signum)
    if _announce:
        os.write(2, f"\n{name}: stopping the running trial (again to exit at once)\n".encode())
    request(signum)


@contextlib.contextmanager
def handled(announce: bool = True) -> Iterator[None]:
    """SIGINT and SIGTERM ask tune.py to stop while the block runs (main thread only); then the old handlers.

    Args:
        announce: print a line when a signal comes (a ``--workers`` worker leaves that to its supervisor).
    """
    global _signum, _announce
    _signum, _announce = None, announce
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        try:
            yield
        finally:
            _signum = None
        return
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    for sig in SIGNALS:
        signal.signal(sig, _handle)
    quiet = _QuietInterruptedTrials()
    handlers = logging.getLogger("optuna").handlers
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for handler in handlers:
            handler.removeFilter(quiet)
        _signum = None  # a later study in this process starts afresh


@contextlib.contextmanager
def on_interrupt(hook: Callable[[], None]) -> Iterator[None]:
    """Call ``hook`` (from the signal handler: keep it tiny, e.g. ``os.kill``) when a stop is asked in the block."""
    _hooks.append(hook)
    try:
        if _signum is not None:
            hook()
        yield
    finally:
        _hooks.remove(hook)


@contextlib.contextmanager
def on_signal(forward: Callable[[int], None]) -> Iterator[None]:
    """Call ``forward(signum)`` (from the signal handler) for every SIGINT/SIGTERM received in the block,
    the second one included; the ``--workers`` supervisor passes them on."""
    _forwards.append(forward)
    try:
        yield
    finally:
        _forwards.remove(forward)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends (they are handled then), e.g. while starting workers."""
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


def unblock() -> None:
    """``preexec_fn`` of a process started inside :func:`deferred` (it would inherit the blocked signals)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


class _QuietInterruptedTrials(logging.Filter):
    """Optuna logs a failed trial in two warnings (the error with its traceback, then its value); an
    interrupted trial gets tune.py's line instead."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped: Optional[str] = None

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D102
        message = record.getMessage()
        if record.exc_info and isinstance(record.exc_info[1], TrialInterrupted):
            self.dropped = message.split(" failed with parameters")[0]  # "Trial 3"
            return False
        if self.dropped and message.startswith(f"{self.dropped} failed with value"):
            self.dropped = None
            return False
        return True


class StopOnInterrupt(Callback):
    """Stops a trial at the start of its next batch once a stop was asked (:func:`check`)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: D102
        check()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: D102
        check()

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: D102
        check()


def _no_signal_handlers() -> None:
    """Stands in for ``_SignalConnector.register_signal_handlers`` (module level: trainers are pickled)."""


def keep_signals_here(trainer) -> None:
    """Stop ``trainer`` from installing Lightning's SIGTERM handler; tune.py handles SIGTERM itself.

    Lightning's handler makes its loops raise ``SIGTERMException`` (a
    ``SystemExit``, which Optuna does not catch: the trial would stay RUNNING)
    and, under DDP, broadcasts from inside the signal handler. Lightning has no
    switch for it, hence the private ``_signal_connector``.
    """
    trainer._signal_connector.register_signal_handlers = _no_signal_handlers


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a WAITING copy of ``trial`` (same parameters) that counts instead of it (see module docstring)."""
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    system_attrs = {"failed_trial": history[0], "retry_history": history}
    if "fixed_params" in trial.system_attrs:
        system_attrs["fixed_params"] = trial.system_attrs["fixed_params"]
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, params=trial.params,
                                              distributions=trial.distributions, system_attrs=system_attrs))


def ended_interrupted(trial: FrozenTrial) -> bool:
    """Whether ``trial`` ended FAIL because of an interrupt (the user attribute ``reason: interrupted``)."""
    return trial.state == TrialState.FAIL and trial.user_attrs.get("reason") == INTERRUPTED


def requeue_interrupted(study: optuna.Study, trial: FrozenTrial) -> None:
    """``study.optimize`` callback: :func:`requeue` a trial that ended FAIL because of an interrupt."""
    if ended_interrupted(trial):
        requeue(study, trial)


def requeue_missed(study: optuna.Study) -> List[int]:
    """:func:`requeue` every trial that ended FAIL ``interrupted`` but has no copy (a second signal cut tune.py
    off between the FAIL and :func:`requeue_interrupted`); returns their numbers.

    Called once when tune.py opens the study, before its workers start: a copy queued twice would run twice.
    """
    from wsol_lightning.tuning.study import retried_numbers

    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    missed = [t for t in trials if ended_interrupted(t) and t.number not in retried]
    for trial in missed:
        requeue(study, trial)
    return [t.number for t in missed]


def stop_line(done: int, n_trials: int) -> str:
    """The one line an interrupted tune.py prints."""
    return (f"{INTERRUPTED} by {signal_name()}: {done} of {n_trials} trials done; "
            f"rerun the same command to resume")
