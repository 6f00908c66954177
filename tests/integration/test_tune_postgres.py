"""Several tune.py workers on one PostgreSQL study: exact budget, SIGKILL mid-trial, resume.

The server is the real one ``scripts/start_postgres.sh`` installs and starts on 127.0.0.1
(see the ``postgres_url`` fixture).
"""

import os
import re
import signal
import subprocess

import pytest
from optuna.trial import TrialState

from tune_support import TINY, load, output, run_tune, start_tune, trials_now, tune_command, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # two workers on two cores


def counted(study):
    from wsol_lightning.tuning.study import budget

    return budget(study)


def test_two_workers_share_the_budget_exactly(tmp_path, postgres_url, study_name):
    args = ["--storage", postgres_url, "--study-name", study_name, "--n-trials", "4", "--no-plots",
            "--study-dir", str(tmp_path / "study")]
    workers = [subprocess.Popen(tune_command(*args, data_root=tmp_path / "data"), cwd=tmp_path, env=ONE_THREAD,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    study = load(postgres_url, study_name)
    assert len(study.trials) == 4 and all(t.state == TrialState.COMPLETE for t in study.trials)
    ran = [re.findall(r"^trial +(\d+) ", out, re.M) for out, _ in outputs]
    assert all(ran), ran  # both workers trained
    assert sorted(int(n) for numbers in ran for n in numbers) == [0, 1, 2, 3]


def test_sigkilled_worker_trial_is_failed_and_retried_by_another(tmp_path, postgres_url, study_name, capsys):
    args = ["--storage", postgres_url, "--study-name", study_name, "--n-trials", "3", "--no-plots",
            "--heartbeat-interval", "1", "--grace-period", "4", "--study-dir", str(tmp_path / "study")]
    victim = start_tune(*args, "--trainer.max_epochs", "4", cwd=tmp_path, data_root=tmp_path / "data", env=ONE_THREAD,
                        log="victim")

    def mid_first_trial() -> bool:  # a storage error other than "no such study yet" is raised at once
        trials = trials_now(postgres_url, study_name) if "study directory:" in output(victim) else []
        return bool(trials) and trials[0].state == TrialState.RUNNING and bool(trials[0].intermediate_values)

    wait_until(mid_first_trial, victim, "the middle of the first trial")  # fails at once if the worker exits
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert load(postgres_url, study_name).trials[0].state == TrialState.RUNNING

    survivor = run_tune(*args, cwd=tmp_path, data_root=tmp_path / "data", env={"OMP_NUM_THREADS": "2"})
    assert survivor.returncode == 0, survivor.stderr[-3000:]
    study = load(postgres_url, study_name)
    killed = study.trials[0]
    assert killed.state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params  # the same values, run by the other worker
    state = counted(study)
    assert (state.done, state.running, state.waiting) == (3, 0, 0)
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 3

    # Rerunning the same command resumes the study: it is complete, nothing is lost or added (run through the
    # main() tune.py calls, in this process: a new interpreter costs ~5 s of imports).
    from wsol_lightning.tuning.main import main as tune_main

    capsys.readouterr()
    assert tune_main([*TINY, "--data.data_root", str(tmp_path / "data"), *args]) == 0
    assert "Number of finished trials: 4" in capsys.readouterr().out
    assert len(load(postgres_url, study_name).trials) == len(study.trials)
