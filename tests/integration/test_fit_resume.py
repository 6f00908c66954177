"""fit.py interrupted by a real signal, then resumed with the command it prints, equals the uninterrupted run.

Oracle: the shared uninterrupted run (``fitted_run``: 3 epochs, cosine learning rate). With deterministic
CPU ops and the random states restored, the resumed run is expected to be the same run exactly: same
weights and optimizer state bit for bit, same learning rate, the same epochs validated with the same
values, the same best checkpoint and the same printed metrics.
"""

import shlex
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from tests.integration.fit_support import RUN_ARGS, TINY, logged_scalars, metric_lines, script
from tests.one_line import one_line_error
from wsol_lightning.checkpoint_io import AtomicCheckpointIO
from wsol_lightning.cli import build_run, fit_and_test
from wsol_lightning.fit import main as fit_main


def _interrupt(run_dir: Path, data_root: Path, signum: int, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    """Start fit.py on the shared run's settings (+ ``extra``), send ``signum`` once the first last.ckpt exists."""
    command = [*script("fit.py"), *RUN_ARGS, *extra, "--data.data_root", str(data_root), "--run_dir", str(run_dir)]
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = run_dir / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_sigint_then_the_printed_command_resumes_to_the_uninterrupted_run(fitted_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    interrupted = _interrupt(run_dir, fitted_run.data_root, signal.SIGINT, tmp_path)
    assert interrupted.returncode == 130, interrupted.stderr[-3000:]
    lines = interrupted.stderr.strip().splitlines()
    last = run_dir / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    epochs_done = _load(last)["epoch"] + 1
    assert epochs_done < 3, "the interrupt came after the last epoch: nothing left to resume"
    # last.ckpt's copy of the ModelCheckpoint state (restored on resume) knows the best of its own epochs.
    scores = [value for _, value in sorted(logged_scalars(fitted_run.version_dir, "val/localization").items())]
    best = max(range(epochs_done), key=lambda epoch: (scores[epoch], -epoch))  # the first of ties is kept
    (state,) = [v for k, v in _load(last)["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert Path(state["best_model_path"]).name == f"best-epoch{best:02d}.ckpt"
    assert lines[-2] == f"interrupted (SIGINT); {last} holds the run after {epochs_done} completed epochs; resume with:"
    command = shlex.split(lines[-1])
    assert command[:2] == [sys.executable, str(script("fit.py")[1])] and command[-2:] == ["--ckpt_path", str(last)]

    # The printed command, run through the main() fit.py calls, in this process (a new interpreter costs ~5 s of
    # imports; the interrupted run tested the script).
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert fit_main(command[2:]) == 0
    resumed = capsys.readouterr().out
    assert not [w for w in caught if "exists and is not empty" in str(w.message)]  # resuming is no cause to warn
    assert f"run directory: {run_dir} (resuming {last})" in resumed
    assert metric_lines(resumed, "") == metric_lines(fitted_run.stdout, "")  # val (last epoch) and test

    ours, theirs = _load(last), _load(fitted_run.checkpoints / "last.ckpt")
    assert (ours["epoch"], ours["global_step"]) == (theirs["epoch"], theirs["global_step"]) == (2, 12)
    assert ours["state_dict"].keys() == theirs["state_dict"].keys()
    for key, tensor in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][key], tensor), key
    assert [g["lr"] for g in ours["optimizer_states"][0]["param_groups"]] == \
        [g["lr"] for g in theirs["optimizer_states"][0]["param_groups"]]
    assert ours["lr_schedulers"] == theirs["lr_schedulers"]  # cosine: T_max, step count, last lr
    for index, state in theirs["optimizer_states"][0]["state"].items():
        assert torch.equal(ours["optimizer_states"][0]["state"][index]["momentum_buffer"], state["momentum_buffer"])

    # The resumed epochs continue the same logger version: every epoch validated once, the same values.
    assert sorted(p.name for p in (run_dir / "lightning_logs").iterdir()) == ["version_0"]
    uninterrupted = logged_scalars(fitted_run.version_dir, "val/localization")
    assert len(uninterrupted) == 3
    assert logged_scalars(run_dir / "lightning_logs" / "version_0", "val/localization") == uninterrupted
    assert sorted(p.name for p in last.parent.iterdir()) == sorted(p.name for p in fitted_run.checkpoints.iterdir())
    assert "ckpt_path: null" in (run_dir / "lightning_logs" / "version_0" / "config.yaml").read_text()


@pytest.mark.slow
def test_sigterm_keeps_last_ckpt_and_exits_143(fitted_run, tmp_path):
    run_dir = tmp_path / "run"  # epochs of one batch: the first last.ckpt comes soon, the signal lands mid-run
    interrupted = _interrupt(run_dir, fitted_run.data_root, signal.SIGTERM, tmp_path, "--trainer.max_epochs", "50",
                             "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1")
    assert interrupted.returncode == 143, interrupted.stderr[-3000:]
    last = run_dir / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint = _load(last)
    assert checkpoint["epoch"] < 49 and checkpoint["optimizer_states"] and checkpoint["loops"]
    lines = interrupted.stderr.strip().splitlines()
    assert lines[-2] == (f"interrupted (SIGTERM); {last} holds the run after {checkpoint['epoch'] + 1} completed "
                         f"epochs; resume with:")
    assert lines[-1].endswith(f"--run_dir {run_dir} --ckpt_path {last}")
    assert "Traceback" not in interrupted.stderr


@pytest.fixture
def tiny_args(fitted_run, tmp_path):
    return [*TINY, "--data.data_root", str(fitted_run.data_root), "--trainer.max_epochs", "1",
            "--trainer.log_every_n_steps", "1"]  # 4 batches an epoch: Lightning warns below its logging interval


_CLI_WARNINGS = pytest.mark.filterwarnings("ignore::DeprecationWarning:lightning.pytorch.cli")  # jsonargparse 4.53


@_CLI_WARNINGS
def test_a_checkpoint_of_another_method_or_backbone_is_refused(fitted_run, tiny_args):
    last = fitted_run.checkpoints / "last.ckpt"
    message = one_line_error(build_run, [*tiny_args, "--model.wsol_method", "base", "--ckpt_path", str(last)])
    assert message == (f"{last}: a checkpoint of --model.backbone small --model.wsol_method has (5 classes), but this "
                       f"run builds --model.backbone small --model.wsol_method base (5 classes); resume with the "
                       f"run's own flags (its config.yaml: --config)")


@_CLI_WARNINGS
def test_ckpt_path_last_needs_a_run_dir_with_a_last_ckpt(tiny_args, tmp_path):
    assert one_line_error(build_run, [*tiny_args, "--ckpt_path", "last"]) == \
        "--ckpt_path last: needs --run_dir (the run whose newest last.ckpt to resume)"
    assert one_line_error(build_run, [*tiny_args, "--ckpt_path", "last", "--run_dir", str(tmp_path)]) == \
        f"--ckpt_path last: no last.ckpt under --run_dir={tmp_path}"


@_CLI_WARNINGS
def test_ckpt_path_last_is_the_newest_last_ckpt_and_continues_its_run(fitted_run, tiny_args):
    run = build_run([*tiny_args, *RUN_ARGS[-4:], "--trainer.max_epochs", "3", "--ckpt_path", "last",
                     "--run_dir", str(fitted_run.run_dir)])
    assert run.ckpt_path == str(fitted_run.checkpoints / "last.ckpt")
    assert run.run_dir == fitted_run.run_dir and run.trainer.logger.version == 0
    assert isinstance(run.trainer.strategy.checkpoint_io, AtomicCheckpointIO)  # what every run saves with


@_CLI_WARNINGS
def test_without_validation_the_test_uses_the_trained_weights(tiny_args, tmp_path):
    run = build_run([*tiny_args, "--trainer.limit_val_batches", "0", "--run_dir", str(tmp_path / "run")])
    metrics = fit_and_test(run, figure=False)
    assert run.trainer.checkpoint_callback.best_model_path == ""
    assert 0 <= metrics["test/localization"] <= 100 and "val/localization" not in metrics
    checkpoints = tmp_path / "run" / "lightning_logs" / "version_0" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt"]  # written at train epoch end without val
