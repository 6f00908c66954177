"""Helpers of the tune.py integration tests (run tune.py as users do, read the study back)."""

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import optuna

ROOT = Path(__file__).resolve().parents[2]
#: Processes started by :func:`start` (conftest kills those still running after each test).
STARTED: list = []
#: Tiny default data and short trials: a trial trains in a few seconds on 2 cores.
TINY = ["--data.synthetic_num_train", "32", "--data.synthetic_num_val", "16", "--data.synthetic_num_test", "16",
        "--data.batch_size", "16", "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "1.0"]


def tune_command(*args: str, data_root: Path) -> list:
    return [sys.executable, str(ROOT / "scripts" / "tune.py"), *TINY, "--data.data_root", str(data_root), *args]


def run_tune(*args: str, cwd: Path, data_root: Path, env=None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(tune_command(*args, data_root=data_root), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def start_tune(*args: str, cwd: Path, data_root: Path, env=None, log: str = "tune") -> subprocess.Popen:
    """tune.py in the background, its stdout and stderr in ``cwd/<log>.out`` / ``.err`` (read them with :func:`output`)."""
    return start(tune_command(*args, data_root=data_root), cwd=cwd, env=env, log=log)


def start(command: list, cwd: Path, env=None, log: str = "tune") -> subprocess.Popen:
    """``command`` in the background with its output in ``cwd/<log>.out`` / ``.err``; killed after the test if
    still running (conftest)."""
    with open(cwd / f"{log}.out", "w") as out, open(cwd / f"{log}.err", "w") as err:
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=err, text=True,
                                   env={**os.environ, **(env or {})})
    process.logs = (cwd / f"{log}.out", cwd / f"{log}.err")
    STARTED.append(process)
    return process


def output(process: subprocess.Popen) -> str:
    """What a :func:`start` process printed so far (stdout, then stderr)."""
    return "\n".join(path.read_text() for path in process.logs)


def wait_until(condition: Callable[[], bool], process: subprocess.Popen, what: str, timeout: float = 240) -> None:
    """Poll ``condition`` until it holds; fail at once (with its output) if ``process`` exits before."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"tune.py exited ({process.returncode}) before {what}:\n{output(process)[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{what}: not within {timeout:.0f} s:\n{output(process)[-3000:]}")
        time.sleep(0.2)


def pythonpath(*paths: Path) -> str:
    """``PYTHONPATH`` with ``paths`` first, keeping the caller's (a worktree's package must stay first)."""
    return os.pathsep.join([*map(str, paths), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]])


def load(storage: str, name: str) -> optuna.Study:
    from wsol_lightning.tuning.study import normalize_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=normalize_url(storage))


def trials_now(storage: str, name: str = "wsol-tune") -> list:
    """The study's trials, or [] while the study does not exist yet (any other storage error is raised)."""
    try:
        return load(storage, name).trials
    except KeyError:  # optuna.load_study: "Record does not exist."
        return []
