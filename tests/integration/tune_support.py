"""Helpers of the tune.py integration tests (run tune.py as users do, read the study back)."""

import os
import subprocess
import sys
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[2]
#: Tiny default data and short trials: a trial trains in a few seconds on 2 cores.
TINY = ["--data.synthetic_num_train", "64", "--data.synthetic_num_val", "32", "--data.synthetic_num_test", "32",
        "--data.batch_size", "16", "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "1.0"]


def tune_command(*args: str, data_root: Path) -> list:
    return [sys.executable, str(ROOT / "scripts" / "tune.py"), *TINY, "--data.data_root", str(data_root), *args]


def run_tune(*args: str, cwd: Path, data_root: Path, env=None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(tune_command(*args, data_root=data_root), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def pythonpath(*paths: Path) -> str:
    """``PYTHONPATH`` with ``paths`` first, keeping the caller's (a worktree's package must stay first)."""
    return os.pathsep.join([*map(str, paths), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]])


def load(storage: str, name: str) -> optuna.Study:
    from wsol_lightning.tuning.study import normalize_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=normalize_url(storage))
