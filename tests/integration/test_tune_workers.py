"""tune.py --workers 2 on CPU: one SIGTERM stops both workers (each running trial FAIL interrupted), the same
command resumes and the two workers finish exactly --n-trials trials, two of them at the same time."""

import signal

import pytest
from optuna.trial import TrialState

from tune_support import hold_hook, load, output, pythonpath, start_tune, trials_now, tune_here, wait_until

pytestmark = pytest.mark.slow


def test_two_workers_share_the_budget_and_one_sigterm_stops_both(tmp_path):
    study_dir, data = tmp_path / "study", tmp_path / "data"
    storage = f"sqlite:///{study_dir}/optuna.db"
    args = ["--study-dir", str(study_dir), "--no-plots", "--workers", "2", "--n-trials", "4",
            "--trainer.max_epochs", "3", "--trainer.limit_train_batches", "1"]
    # The first run's trials wait from their second epoch until tune.py is asked to stop, so both workers are
    # surely mid-trial when the signal lands.
    hook = hold_hook(tmp_path, held="interrupts.requested() is None")

    def both_mid_training() -> bool:
        return "study directory:" in output(first) and sum(
            t.state == TrialState.RUNNING and bool(t.intermediate_values) for t in trials_now(storage)) == 2

    first = start_tune(*args, cwd=tmp_path, data_root=data, log="first", env={"PYTHONPATH": pythonpath(hook)})
    wait_until(both_mid_training, first, "two trials mid-training")
    running = {t.number for t in trials_now(storage) if t.state == TrialState.RUNNING}
    first.send_signal(signal.SIGTERM)  # to the supervisor only: it passes it on
    assert first.wait(timeout=60) == 143, output(first)[-3000:]
    lines = output(first).strip().splitlines()
    assert lines[-1].startswith("interrupted by SIGTERM: ") and lines[-1].endswith(
        " of 4 trials done; rerun the same command to resume")
    study = load(storage, "wsol-tune")
    interrupted = [t for t in study.trials if t.state == TrialState.FAIL]
    states = [(t.number, t.state, t.user_attrs) for t in study.trials]
    assert interrupted and all(t.user_attrs["reason"] == "interrupted" for t in interrupted), states
    assert sorted(t.number for t in interrupted) == sorted(running), states  # both held trials stopped
    assert {t.state for t in study.trials} <= {TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING}, states
    waiting = sorted(t.params["lr"] for t in study.trials if t.state == TrialState.WAITING)
    assert waiting == sorted(t.params["lr"] for t in interrupted)

    # The same command again, its supervisor in this process; its two workers are processes of their own.
    assert tune_here(*args, data_root=data) == 0
    study = load(storage, "wsol-tune")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4 and len(study.trials) == 6  # 4 counted + the 2 interrupted, re-run as copies
    assert any(a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete
               for a in complete for b in complete if a.number < b.number)  # two ran at the same time
