"""Ranks launched from outside on CPU with gloo (issue 14): torchrun, and a simulated SLURM ``srun``.

Every rank runs tune.py with the same command; rank 0 alone asks the study for trials, every rank trains each
trial with its values and seed (each rank writes what it trains itself: the ``RANK_HOOK`` of tune_support),
rank 0's pruning decision stops every rank, and a rank that dies fails its trial without hanging the others.
"""

import socket
import sys

import pytest
from optuna.trial import TrialState

from tune_support import (ROOT, TINY, check_same_trial_on_every_rank, load, output, pythonpath, rank_hook, start,
                          trained_by_rank, trials_now)

pytestmark = pytest.mark.slow
DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu", "--no-plots"]


def tune_args(tmp_path, *args):
    return [str(ROOT / "scripts" / "tune.py"), *TINY, "--data.data_root", str(tmp_path / "data"), *DDP,
            "--study-dir", str(tmp_path / "study"), *args]


def test_torchrun_ranks_train_each_trial_together_one_after_the_other_with_pruning(tmp_path):
    rank_log = tmp_path / "ranks.jsonl"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               *tune_args(tmp_path, "--n-trials", "2")]
    env = {"PYTHONPATH": pythonpath(rank_hook(tmp_path)), "WSOL_TEST_RANK_LOG": str(rank_log),
           "WSOL_TEST_PRUNE_TRIAL": "1", "OMP_NUM_THREADS": "1"}
    torchrun = start(command, cwd=tmp_path, env=env, log="torchrun")
    assert torchrun.wait(timeout=600) == 0, output(torchrun)[-4000:]
    study = load(f"sqlite:///{tmp_path}/study/optuna.db", "wsol-tune")
    assert len(study.trials) == 2  # rank 1 asked the study for nothing
    first, second = study.trials
    assert first.state == TrialState.COMPLETE and sorted(first.intermediate_values) == [0, 1]
    assert second.state == TrialState.PRUNED and sorted(second.intermediate_values) == [0]
    assert first.datetime_complete <= second.datetime_start  # one after the other
    # Both ranks trained both trials with the recorded values and stopped trial 1 where rank 0's pruner did.
    assert check_same_trial_on_every_rank(rank_log, study.trials) == {0: [0, 1], 1: [0]}
    assert output(torchrun).count("study wsol-tune (new)") == 1 and output(torchrun).count("trial   1  PRUNED") == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def srun(tmp_path, log: str, env: dict) -> list:
    """What ``srun --ntasks-per-node 2 python scripts/tune.py ...`` starts: two processes, SLURM's variables."""
    port = str(free_port())
    ranks = []
    for rank in (0, 1):
        slurm = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1", "SLURM_NODEID": "0",
                 "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "SLURM_JOB_NAME": "tune",
                 "SLURM_JOB_ID": "4242", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        ranks.append(start([sys.executable, *tune_args(tmp_path, "--n-trials", "2")], cwd=tmp_path,
                           env={**env, **slurm}, log=f"{log}-rank{rank}"))
    return ranks


def test_simulated_slurm_ranks_take_the_same_path_and_a_dead_rank_fails_only_its_trial(tmp_path):
    rank_log = tmp_path / "ranks.jsonl"
    storage = f"sqlite:///{tmp_path}/study/optuna.db"
    env = {"PYTHONPATH": pythonpath(rank_hook(tmp_path)), "WSOL_TEST_RANK_LOG": str(rank_log),
           "OMP_NUM_THREADS": "1"}
    # Rank 1 dies at the start of trial 0's second epoch; rank 0 must not wait for it forever.
    leader, follower = srun(tmp_path, "first", {**env, "WSOL_TEST_DIE": "trial-0000:1:1"})
    assert follower.wait(timeout=600) == 1
    assert leader.wait(timeout=120) == 1, output(leader)[-3000:]
    assert "error: a rank failed alone" in output(leader)
    (trial,) = trials_now(storage)
    assert trial.state == TrialState.FAIL and "error" in trial.user_attrs, trial.user_attrs

    # The same launch again: the study goes on and ends with its 2 trials (the failed one counts).
    leader, follower = srun(tmp_path, "second", env)
    assert leader.wait(timeout=600) == 0, output(leader)[-3000:]
    assert follower.wait(timeout=60) == 0, output(follower)[-3000:]
    study = load(storage, "wsol-tune")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert check_same_trial_on_every_rank(rank_log, study.trials[1:]) == {1: [0, 1]}
    assert sorted(trained_by_rank(rank_log)["trial-0000"]) == [0, 1]  # trial 0 too, until rank 1 died
    assert "trial   1  COMPLETE" in output(leader) and "trial" not in output(follower)
