"""Ctrl-C on tune.py, with real signals: the running trial ends FAIL ``interrupted``, nothing else changes,
the same command resumes at once and finishes the budget exactly; a second Ctrl-C exits at once."""

import signal

import pytest
from optuna.trial import TrialState

from tune_support import load, output, pythonpath, start_tune, trials_now, tune_here, wait_until

pytestmark = pytest.mark.slow
#: Loaded by the second run (PYTHONPATH): recording an interrupted trial takes a minute, as on a storage that
#: hangs; the second Ctrl-C must not wait for it.
SLOW_SHUTDOWN = """
import time

from wsol_lightning.tuning import interrupts, record

_write = record.write


def _slow_write(*args, **kwargs):
    if interrupts.requested() is not None:
        time.sleep(60)
    return _write(*args, **kwargs)


record.write = _slow_write
"""


def reporting(process, storage: str, number: int):
    """Condition: trial ``number`` is RUNNING and has reported an epoch (it is mid-training)."""
    def condition() -> bool:
        if "study directory:" not in output(process):  # the study exists (the test never creates it)
            return False
        return any(t.number == number and t.state == TrialState.RUNNING and t.intermediate_values
                   for t in trials_now(storage))
    return condition


def finished(study) -> dict:
    return {t.number: (t.state, t.value, t.params, t.datetime_complete) for t in study.trials if t.state.is_finished()}


def test_ctrl_c_fails_the_running_trial_and_the_same_command_resumes(tmp_path, capsys):
    study_dir, data = tmp_path / "study", tmp_path / "data"
    storage = f"sqlite:///{study_dir}/optuna.db"
    args = ["--study-dir", str(study_dir), "--no-plots", "--trainer.max_epochs", "5",
            "--trainer.limit_train_batches", "1"]

    first = start_tune(*args, "--n-trials", "3", cwd=tmp_path, data_root=data, log="first")
    wait_until(reporting(first, storage, 1), first, "trial 1 mid-training")
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=60) == 130, output(first)[-3000:]
    assert output(first).strip().splitlines()[-1] == (
        "interrupted by SIGINT: 1 of 3 trials done; rerun the same command to resume")
    study = load(storage, "wsol-tune")
    complete, interrupted, queued = study.trials  # nothing left RUNNING
    assert complete.state == TrialState.COMPLETE and complete.user_attrs["epochs"] == 5
    assert interrupted.state == TrialState.FAIL and interrupted.user_attrs["reason"] == "interrupted"
    assert queued.state == TrialState.WAITING and queued.params == interrupted.params
    kept = finished(study)

    # The same command resumes at once with the interrupted values and finishes the budget exactly (in this process).
    capsys.readouterr()
    assert tune_here(*args, "--n-trials", "3", data_root=data) == 0
    second = capsys.readouterr().out
    study = load(storage, "wsol-tune")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE,
                                               TrialState.COMPLETE]
    assert study.trials[2].params == interrupted.params and "waiting for" not in second
    assert {n: v for n, v in finished(study).items() if n < 2} == kept  # completed trials untouched
    assert "Number of finished trials: 4" in second and "failed: 1 (1 of them re-queued" in second
    kept = finished(study)

    # A second Ctrl-C during shutdown (made slow by the hook) exits at once, losing no completed trial.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_SHUTDOWN)
    third = start_tune(*args, "--n-trials", "5", cwd=tmp_path, data_root=data, log="third",
                       env={"PYTHONPATH": pythonpath(hook)})
    wait_until(reporting(third, storage, 4), third, "trial 4 mid-training")
    third.send_signal(signal.SIGINT)
    wait_until(lambda: "SIGINT: stopping the running trial" in output(third), third, "the first SIGINT handled")
    third.send_signal(signal.SIGINT)
    assert third.wait(timeout=30) == 130, output(third)[-3000:]
    assert "second SIGINT: exiting at once" in output(third)
    study = load(storage, "wsol-tune")
    assert finished(study) == kept and study.trials[4].state == TrialState.RUNNING  # left to its heartbeat
