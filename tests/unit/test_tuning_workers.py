"""--workers N without training: devices dealt round-robin, cores split, the workers' command line."""

import pytest

from wsol_lightning.tuning.workers import visible_gpus, worker_argv, worker_environments


def test_eight_workers_on_two_gpus_four_per_gpu_and_the_cores_split():
    envs = worker_environments(8, visible_gpus({}, device_count=2), cpus=16)
    assert [env["CUDA_VISIBLE_DEVICES"] for env in envs] == ["0", "1"] * 4
    assert {env["OMP_NUM_THREADS"] for env in envs} == {"2"} and envs[0]["MKL_NUM_THREADS"] == "2"


def test_only_the_visible_gpus_are_dealt():
    gpus = visible_gpus({"CUDA_VISIBLE_DEVICES": "2,5,MIG-abc"}, device_count=8)
    assert [env["CUDA_VISIBLE_DEVICES"] for env in worker_environments(4, gpus, cpus=4)] == ["2", "5", "MIG-abc", "2"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, device_count=8) == []


@pytest.mark.parametrize("workers, cpus, threads", [(2, 2, "1"), (3, 2, "1"), (2, 16, "8")])
def test_cpu_workers_split_the_cores(workers, cpus, threads):
    envs = worker_environments(workers, [], cpus)
    assert len(envs) == workers and all("CUDA_VISIBLE_DEVICES" not in env for env in envs)
    assert all(env["OMP_NUM_THREADS"] == threads for env in envs)


def test_workers_run_the_same_command_with_one_worker_each():
    assert worker_argv(["--n-trials", "4", "--workers", "2", "--model.lr", "0.1"]) == [
        "--n-trials", "4", "--model.lr", "0.1", "--workers", "1"]
    assert worker_argv(["--workers=3", "--seed", "1"]) == ["--seed", "1", "--workers", "1"]
