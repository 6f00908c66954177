"""Two tune.py workers on one PostgreSQL study: exact budget, SIGKILL mid-trial, resume.

The server is the real one ``scripts/start_postgres.sh`` installs and starts on 127.0.0.1
(see the ``postgres_url`` fixture).
"""

import datetime
import re
import signal

import pytest
from optuna.trial import TrialState

from tune_support import hold_hook, load, output, pythonpath, start_tune, trials_now, tune_here, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def counted(study):
    from wsol_lightning.tuning.study import budget

    return budget(study)


def test_two_workers_share_the_budget_and_a_sigkilled_one_s_trial_is_retried(tmp_path, postgres_url, study_name,
                                                                              capsys):
    """Two tune.py processes on one study: one is SIGKILLed mid-trial while the other trains; the other fails
    the dead worker's trial once its heartbeat is stale, retries it with the same values and ends the budget
    exactly; rerunning the command adds nothing."""
    args = ["--storage", postgres_url, "--study-name", study_name, "--n-trials", "4", "--no-plots",
            "--heartbeat-interval", "1", "--grace-period", "4", "--study-dir", str(tmp_path / "study")]
    hook = hold_hook(tmp_path)  # the victim's trial waits from its second epoch until the kill
    victim = start_tune(*args, cwd=tmp_path, data_root=tmp_path / "data", log="victim",
                        env={"OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath(hook)})

    def victim_mid_trial() -> bool:  # a storage error other than "no such study yet" is raised at once
        trials = trials_now(postgres_url, study_name) if "study directory:" in output(victim) else []
        return bool(trials) and trials[0].state == TrialState.RUNNING and bool(trials[0].intermediate_values)

    wait_until(victim_mid_trial, victim, "the victim mid-trial")  # fails at once if the worker exits
    survivor = start_tune(*args, cwd=tmp_path, data_root=tmp_path / "data", log="survivor",
                          env={"OMP_NUM_THREADS": "1"})
    wait_until(lambda: any(t.state == TrialState.COMPLETE for t in trials_now(postgres_url, study_name)), survivor,
               "a trial of the survivor completed while the victim's ran")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = datetime.datetime.now()
    assert load(postgres_url, study_name).trials[0].state == TrialState.RUNNING  # nobody has failed it yet
    assert survivor.wait(timeout=300) == 0, output(survivor)[-3000:]

    study = load(postgres_url, study_name)
    killed = study.trials[0]
    assert killed.state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params  # the same values, run by the other worker
    state = counted(study)
    assert (state.done, state.running, state.waiting) == (4, 0, 0)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4 and len(study.trials) == 5  # the budget exactly: 4 counted + the killed one
    assert min(t.datetime_complete for t in complete) < killed_at  # the two workers trained at the same time
    assert sorted(int(n) for n in re.findall(r"^trial +(\d+) ", output(survivor), re.M)) == \
        sorted(t.number for t in complete)  # the survivor printed each trial it finished, and only those

    # Rerunning the same command resumes the study: it is complete, nothing is lost or added (in this process).
    capsys.readouterr()
    assert tune_here(*args, data_root=tmp_path / "data") == 0
    assert "Number of finished trials: 5" in capsys.readouterr().out
    assert len(load(postgres_url, study_name).trials) == len(study.trials)
