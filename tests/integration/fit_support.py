"""One short fit.py run shared by the resume and predict tests, and helpers to read runs back.

The run (3 epochs of the tiny default data, cosine learning rate, lr 0.05, ``--bg-grid-size 0.4`` as the
README's first command spells it) is chosen so that its best epoch (0) is not its last (2): a test of "the best
checkpoint" and one of "the last weights" differ.
"""

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--data.synthetic_num_train", "64", "--data.synthetic_num_val", "32", "--data.synthetic_num_test", "32",
        "--data.batch_size", "16", "--trainer.enable_progress_bar", "false"]
#: The shared run's settings (besides --data.data_root and --run_dir).
RUN_ARGS = [*TINY, "--trainer.max_epochs", "3", "--model.lr_schedule", "cosine", "--model.lr", "0.05",
            "--bg-grid-size", "0.4"]


def script(name: str) -> List[str]:
    return [sys.executable, str(ROOT / "scripts" / name)]


def run_script(name: str, *args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*script(name), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def metric_lines(stdout: str, prefix: str) -> List[str]:
    """The ``  <prefix>name  value`` lines fit.py and predict.py print."""
    return [line for line in stdout.splitlines() if line.startswith(f"  {prefix}")]


def logged_scalars(version_dir: Path, tag: str) -> Dict[int, float]:
    """step -> value of ``tag`` over every TensorBoard event file of a logger version (later files win)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: Dict[int, float] = {}
    for path in sorted(version_dir.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        accumulator = EventAccumulator(str(path))
        accumulator.Reload()
        if tag in accumulator.Tags()["scalars"]:
            values.update({event.step: event.value for event in accumulator.Scalars(tag)})
    return values


@dataclass
class FittedRun:
    """The shared run: its directory, data root, checkpoints and what fit.py printed."""

    run_dir: Path
    data_root: Path
    stdout: str

    @property
    def version_dir(self) -> Path:
        return self.run_dir / "lightning_logs" / "version_0"

    @property
    def checkpoints(self) -> Path:
        return self.version_dir / "checkpoints"


@pytest.fixture(scope="session")
def fitted_run(tmp_path_factory) -> FittedRun:
    """fit.py, uninterrupted: 3 epochs, then the test of the best checkpoint and the figure."""
    root = tmp_path_factory.mktemp("fitted")
    data_root, run_dir = root / "data", root / "run"
    result = run_script("fit.py", *RUN_ARGS, "--data.data_root", str(data_root), "--run_dir", str(run_dir), cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return FittedRun(run_dir, data_root, result.stdout)
