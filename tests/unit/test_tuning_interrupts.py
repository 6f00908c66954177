"""Interrupts and the study loop without training: signals asked to stop, the re-queued copy keeps the budget
exact, the loop stops when asked and after --timeout."""

import os
import signal
import time

import optuna
import pytest
from optuna.trial import TrialState

from wsol_lightning.tuning import interrupts
from wsol_lightning.tuning.loop import run_trials
from wsol_lightning.tuning.study import budget


def test_first_signal_asks_to_stop_then_the_old_handlers_return():
    before = signal.getsignal(signal.SIGTERM)
    calls = []
    with interrupts.handled():
        with interrupts.on_interrupt(lambda: calls.append("hook")):
            assert interrupts.requested() is None and interrupts.exit_status() == 0
            interrupts.check()  # nothing asked yet
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # the handler runs in this thread between bytecodes
            assert interrupts.requested() == signal.SIGTERM and interrupts.exit_status() == 143
            assert calls == ["hook"]
            with pytest.raises(interrupts.TrialInterrupted, match="interrupted by SIGTERM"):
                interrupts.check()
            assert interrupts.stop_line(2, 5) == (
                "interrupted by SIGTERM: 2 of 5 trials done; rerun the same command to resume")
    assert signal.getsignal(signal.SIGTERM) is before
    assert interrupts.requested() is None  # a later study in this process starts afresh


def make_trial(study, state, x, **attrs):
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    study.add_trial(optuna.create_trial(state=state, params={"x": x}, distributions=dist,
                                        value=1.0 if state == TrialState.COMPLETE else None, **attrs))
    return study.trials[-1]


def test_an_interrupted_trial_is_queued_again_and_counted_once():
    study = optuna.create_study()
    make_trial(study, TrialState.COMPLETE, 0.1)
    interrupted = make_trial(study, TrialState.FAIL, 0.2, user_attrs={"reason": "interrupted"},
                             system_attrs={"fixed_params": {"x": 0.2}})
    failed = make_trial(study, TrialState.FAIL, 0.3, user_attrs={"error": "RuntimeError: out of memory"})
    for trial in (interrupted, failed):
        interrupts.requeue_interrupted(study, trial)
    copy = study.trials[-1]
    assert len(study.trials) == 4  # the genuine failure is not re-queued
    assert copy.state == TrialState.WAITING and copy.params == {"x": 0.2}
    assert copy.system_attrs["retry_history"] == [1] and copy.system_attrs["fixed_params"] == {"x": 0.2}
    state = budget(study)
    assert (state.counted, state.done, state.waiting) == (3, 2, 1)  # the interrupted FAIL counts through its copy

    # Interrupted again: the copy's copy carries the whole history, the budget is unchanged.
    copy_run = study.ask()  # the WAITING copy runs, and is interrupted too
    assert copy_run.number == 3 and copy_run.params == {"x": 0.2}
    copy_run.set_user_attr("reason", "interrupted")
    study.tell(copy_run, state=TrialState.FAIL)
    interrupts.requeue_interrupted(study, study.trials[3])
    assert study.trials[-1].system_attrs["retry_history"] == [1, 3] and study.trials[-1].params == {"x": 0.2}
    assert budget(study).counted == 3


def test_an_interrupted_trial_left_without_its_copy_is_queued_again_once():
    study = optuna.create_study()  # a second Ctrl-C exited between Optuna's FAIL and the copy
    make_trial(study, TrialState.COMPLETE, 0.1)
    make_trial(study, TrialState.FAIL, 0.2, user_attrs={"reason": "interrupted"})
    make_trial(study, TrialState.FAIL, 0.3, user_attrs={"reason": "interrupted"})
    interrupts.requeue_interrupted(study, study.trials[2])  # this one got its copy
    make_trial(study, TrialState.FAIL, 0.4, user_attrs={"error": "RuntimeError: out of memory"})
    assert budget(study).counted == 4  # the copy-less FAIL would use a unit of the budget
    assert interrupts.requeue_missed(study) == [1]
    copy = study.trials[-1]
    assert copy.state == TrialState.WAITING and copy.params == {"x": 0.2} and copy.system_attrs["retry_history"] == [1]
    assert budget(study).counted == 4 and budget(study).waiting == 2  # counted through the two copies now
    assert interrupts.requeue_missed(study) == [] and len(study.trials) == 6  # a rerun adds nothing


def test_loop_stops_when_asked_and_after_timeout():
    study = optuna.create_study()
    ran = []

    def objective(trial):
        ran.append(trial.number)
        time.sleep(0.05)
        return trial.suggest_float("x", 0, 1)

    run_trials(study, objective, n_trials=5, heartbeat=False, should_stop=lambda: len(ran) >= 2)
    assert ran == [0, 1]
    run_trials(study, objective, n_trials=5, heartbeat=False, timeout=0.01)  # the first trial outlasts it
    assert ran == [0, 1, 2]
    run_trials(study, objective, n_trials=5, heartbeat=False)
    assert ran == [0, 1, 2, 3, 4] and len(study.trials) == 5  # the budget counts every worker's trials
