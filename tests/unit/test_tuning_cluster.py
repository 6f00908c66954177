"""Which ranks a cluster launcher started, as tune.py reads them from Lightning (no process group is made)."""

import pytest
from lightning.pytorch import Trainer

from tests.one_line import one_line_error
from wsol_lightning.tuning.cluster import external_world

TORCHRUN = {"TORCHELASTIC_RUN_ID": "t", "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "GROUP_RANK": "0",
            "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29511"}
SLURM = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1", "SLURM_NODEID": "0",
         "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "SLURM_JOB_NAME": "tune", "MASTER_ADDR": "10.0.0.7",
         "MASTER_PORT": "29512"}


def trainer(**kwargs):
    return Trainer(logger=False, enable_checkpointing=False, accelerator="cpu", **kwargs)


@pytest.mark.parametrize("env, name", [(TORCHRUN, "TorchElasticEnvironment"), (SLURM, "SLURMEnvironment")])
def test_ranks_started_by_torchrun_or_srun(monkeypatch, env, name):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    world = external_world(trainer(strategy="ddp", devices=2))
    assert (world.rank, world.size, world.environment, world.backend) == (1, 2, name, "gloo")
    assert (world.main_address, world.main_port) == (env["MASTER_ADDR"], int(env["MASTER_PORT"]))
    message = one_line_error(external_world, trainer(devices=1))
    assert message.startswith(f"tune.py runs as rank 1 of 2 ({name}) but the trainer is one process")


def test_ranks_started_by_lightning_or_one_process_are_not_external():
    assert external_world(trainer(devices=1)) is None
    assert external_world(trainer(strategy="ddp", devices=2)) is None  # plain ddp: Lightning re-launches
