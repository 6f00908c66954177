"""DDP trials on CPU with 2 processes (gloo): one trial, the same values on every rank, one report per epoch.

Plain ``ddp`` re-launches tune.py on rank 1 (optuna#4835, optuna-integration#59): the re-launched
process must join rank 0's trial instead of starting its own study loop. Every rank process writes what it
trains itself (the ``RANK_HOOK`` of tune_support), so "the same values on every rank" is read from each rank.
"""

import pytest
from optuna.trial import TrialState

from tune_support import check_same_trial_on_every_rank, load, pythonpath, rank_hook, run_tune

pytestmark = pytest.mark.slow
DDP = ["--trainer.devices", "2", "--trainer.accelerator", "cpu", "--no-plots"]


def test_ddp_spawn_trial(tmp_path):
    rank_log, study_dir = tmp_path / "ranks.jsonl", tmp_path / "study"
    env = {"PYTHONPATH": pythonpath(rank_hook(tmp_path)), "WSOL_TEST_RANK_LOG": str(rank_log), "OMP_NUM_THREADS": "1"}
    result = run_tune("--trainer.strategy", "ddp_spawn", *DDP, "--n-trials", "1", "--study-dir", str(study_dir),
                      cwd=tmp_path, data_root=tmp_path / "data", env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    study = load(f"sqlite:///{study_dir}/optuna.db", "wsol-tune")
    (trial,) = study.trials  # no study loop on rank 1
    assert trial.state == TrialState.COMPLETE, trial.user_attrs
    assert sorted(trial.intermediate_values) == [0, 1]  # one report per epoch
    assert sorted(trial.system_attrs["ddp_pl:intermediate_value"]) == ["0", "1"]
    assert trial.value == pytest.approx(trial.intermediate_values[1], abs=1e-4)
    # Each spawned rank wrote what it trained itself: the trial's values, one seed, both epochs.
    assert check_same_trial_on_every_rank(rank_log, study.trials) == {0: [0, 1]}


#: Loaded by every process of the test (PYTHONPATH), re-launched ranks included: two sentinel learning
#: rates make training fail at epoch 1, on every rank (divergence) or on rank 1 only (out of memory).
FAILING = """
from wsol_lightning.module import NonFiniteLossError, WSOLModule

_original = WSOLModule.training_step


def _failing(self, batch, batch_idx):
    if self.current_epoch == 1 and abs(self.hparams.lr - 0.0123) < 1e-9:
        raise NonFiniteLossError("training loss is nan at epoch 1 (diverged): lower --model.lr")
    if self.current_epoch == 1 and abs(self.hparams.lr - 0.0124) < 1e-9 and self.global_rank == 1:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    return _original(self, batch, batch_idx)


WSOLModule.training_step = _failing
"""


def test_plain_ddp_one_trial_same_values_on_every_rank_failures_stay_in_their_trial(tmp_path):
    hook = rank_hook(tmp_path, FAILING)
    study_dir, rank_log = tmp_path / "study", tmp_path / "ranks.jsonl"
    result = run_tune("--trainer.strategy", "ddp", *DDP, "--n-trials", "3",
                      "--study-dir", str(study_dir), "--enqueue", "lr=0.0123", "--enqueue", "lr=0.0124",
                      cwd=tmp_path, data_root=tmp_path / "data",
                      env={"OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath(hook), "WSOL_TEST_RANK_LOG": str(rank_log)})
    assert result.returncode == 0, result.stderr[-4000:]
    study = load(f"sqlite:///{study_dir}/optuna.db", "wsol-tune")
    assert len(study.trials) == 3  # no study loop on rank 1
    diverged, oom, fine = study.trials
    # Divergence on every rank: pruned with the reason. Out of memory on rank 1 only: rank 0 sees a broken
    # collective, the trial fails with rank 1's message, and the worker goes on with fresh ranks.
    assert diverged.state == TrialState.PRUNED and "NonFiniteLossError" in diverged.user_attrs["reason"]
    assert oom.state == TrialState.FAIL and "rank 1: RuntimeError: CUDA out of memory" in oom.user_attrs["error"]
    assert fine.state == TrialState.COMPLETE, fine.user_attrs
    assert sorted(fine.intermediate_values) == [0, 1]  # one report per epoch
    assert sorted(fine.system_attrs["ddp_pl:intermediate_value"]) == ["0", "1"]
    assert fine.value == pytest.approx(fine.intermediate_values[1], abs=1e-4)
    # Each re-launched rank wrote what it trained itself: every trial on both ranks with the same values and seed
    # (the diverged and the failed ones up to epoch 1, where they stopped).
    assert check_same_trial_on_every_rank(rank_log, study.trials) == {0: [0, 1], 1: [0, 1], 2: [0, 1]}
