"""tune.py --workers 2 on CPU: one SIGTERM stops both workers (each running trial FAIL interrupted), the same
command resumes and the two workers finish exactly --n-trials trials, two of them at the same time."""

import signal

import pytest
from optuna.trial import TrialState

from tune_support import load, output, run_tune, start_tune, trials_now, wait_until

pytestmark = pytest.mark.slow


def test_two_workers_share_the_budget_and_one_sigterm_stops_both(tmp_path):
    study_dir, data = tmp_path / "study", tmp_path / "data"
    storage = f"sqlite:///{study_dir}/optuna.db"
    args = ["--study-dir", str(study_dir), "--no-plots", "--workers", "2", "--n-trials", "4",
            "--trainer.max_epochs", "5", "--trainer.limit_train_batches", "1"]

    def both_mid_training() -> bool:
        return "study directory:" in output(first) and sum(
            t.state == TrialState.RUNNING and bool(t.intermediate_values) for t in trials_now(storage)) == 2

    first = start_tune(*args, cwd=tmp_path, data_root=data, log="first")
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
    # Each trial running at the signal was stopped (FAIL interrupted), unless it finished in the moment before
    # the signal landed (then its worker may have begun one more trial, which the signal stopped instead).
    assert all(study.trials[n].state in (TrialState.FAIL, TrialState.COMPLETE) for n in running), states
    assert {t.state for t in study.trials} <= {TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING}, states
    waiting = sorted(t.params["lr"] for t in study.trials if t.state == TrialState.WAITING)
    assert waiting == sorted(t.params["lr"] for t in interrupted)

    second = run_tune(*args, cwd=tmp_path, data_root=data)
    assert second.returncode == 0, second.stderr[-3000:]
    study = load(storage, "wsol-tune")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4 and len(study.trials) == 4 + len(interrupted)  # the interrupted ones re-ran as copies
    assert any(a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete
               for a in complete for b in complete if a.number < b.number)  # two ran at the same time
