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
#: Tiny default data and short trials: a trial trains in a few seconds on 2 cores. No pruning before 5 trials
#: completed (tune.py's default is 3): the tests count trials by state, and on tiny data a pruned 4th trial
#: would be chance; the tests of pruning prune on purpose (``prune_hook``, unit tests of the pruner).
TINY = ["--data.synthetic_num_train", "32", "--data.synthetic_num_val", "16", "--data.synthetic_num_test", "16",
        "--data.batch_size", "16", "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "1.0",
        "--n-startup-trials", "5"]


def tune_args(*args: str, data_root: Path) -> list:
    """tune.py's arguments in these tests: :data:`TINY`, the data root, then ``args``."""
    return [*TINY, "--data.data_root", str(data_root), *args]


def tune_command(*args: str, data_root: Path) -> list:
    return [sys.executable, str(ROOT / "scripts" / "tune.py"), *tune_args(*args, data_root=data_root)]


def tune_here(*args: str, data_root: Path) -> int:
    """:func:`run_tune`'s run through the ``main()`` tune.py calls, in this process; returns its exit status.

    For a step that tests no signal, exit status or output stream of a process of its own: a new interpreter
    costs ~5 s of CPU in imports. Read what it printed with pytest's ``capsys``.
    """
    from wsol_lightning.tuning.main import main

    return main(tune_args(*args, data_root=data_root))


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


#: One RDBStorage per URL for the life of the test process: opening one (engine, schema and version checks)
#: costs ~60 ms of CPU, reading a study through an open one ~10 ms; tests poll the storage 5 times a second.
_OPEN: dict = {}


def load(storage: str, name: str) -> optuna.Study:
    from wsol_lightning.tuning.study import normalize_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = normalize_url(storage)
    if url.startswith(("sqlite", "postgresql")):
        if url not in _OPEN:
            _OPEN[url] = optuna.storages.RDBStorage(url)
        return optuna.load_study(study_name=name, storage=_OPEN[url])
    return optuna.load_study(study_name=name, storage=url)


def trials_now(storage: str, name: str = "wsol-tune") -> list:
    """The study's trials, or [] while the study does not exist yet (any other storage error is raised at once:
    a test never spins on a storage it cannot read)."""
    try:
        return load(storage, name).trials
    except KeyError:  # optuna.load_study: "Record does not exist."
        return []


#: A ``sitecustomize`` for the DDP tests, loaded by every process they start (PYTHONPATH): each process that
#: trains appends what it trains to ``$WSOL_TEST_RANK_LOG`` itself, one line per epoch (pid, global rank, run
#: directory, epoch, seed, the module's and data module's hyperparameters as instantiated there).
#: ``WSOL_TEST_PRUNE_TRIAL=n``: the median pruner prunes trial n at its first report (the decision is rank
#: 0's; every rank must stop). ``WSOL_TEST_DIE=trial-0000:1:1``: that rank exits at once at that epoch.
RANK_HOOK = """
import json
import os
import sys

_HOOKED = not any("resource_tracker" in arg for arg in sys.orig_argv)  # not multiprocessing's helper: it trains
if _HOOKED:  # nothing, and importing torch there would cost it seconds
    import optuna
    import torch

    from wsol_lightning.module import WSOLModule

    _epoch_start = WSOLModule.on_train_epoch_start


def _logged(self):
    run = os.path.basename(str(self.trainer.default_root_dir))
    if os.environ.get("WSOL_TEST_DIE") == f"{run}:{self.current_epoch}:{self.global_rank}":
        os._exit(1)
    entry = {"pid": os.getpid(), "rank": self.global_rank, "world": self.trainer.world_size, "run": run,
             "epoch": self.current_epoch, "seed": torch.initial_seed(),
             "model": {k: repr(v) for k, v in sorted(self.hparams.items())},
             "data": {k: repr(v) for k, v in sorted(self.trainer.datamodule.hparams.items())}}
    with open(os.environ["WSOL_TEST_RANK_LOG"], "a") as file:
        file.write(json.dumps(entry) + "\\n")
    return _epoch_start(self)


if _HOOKED and os.environ.get("WSOL_TEST_RANK_LOG"):
    WSOLModule.on_train_epoch_start = _logged
if _HOOKED and os.environ.get("WSOL_TEST_PRUNE_TRIAL"):
    optuna.pruners.MedianPruner.prune = lambda self, study, trial: trial.number == int(
        os.environ["WSOL_TEST_PRUNE_TRIAL"])
"""


def rank_hook(tmp_path: Path, extra: str = "") -> Path:
    """A directory holding :data:`RANK_HOOK` (plus ``extra`` code) as ``sitecustomize.py``."""
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(RANK_HOOK + extra)
    return hook


#: From its second epoch on, a trial's training step waits (sleeping, no CPU) while ``{held}`` holds: the test
#: then surely stops or kills the process mid-trial, however fast the other processes are.
HOLD_TRAINING = """
import time

from wsol_lightning.module import WSOLModule
from wsol_lightning.tuning import interrupts

_step = WSOLModule.training_step


def _held(self, batch, batch_idx):
    while self.current_epoch >= 1 and ({held}):
        time.sleep(0.05)
    return _step(self, batch, batch_idx)


WSOLModule.training_step = _held
"""


def hold_hook(tmp_path: Path, held: str = "True") -> Path:
    """A directory holding :data:`HOLD_TRAINING` as ``sitecustomize.py`` (put it on a process's PYTHONPATH).

    Args:
        held: a Python condition, evaluated in the trial's process (``interrupts`` is imported): the trial
            waits while it holds; ``"True"``: until the process is killed.
    """
    hook = tmp_path / "hold-hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(HOLD_TRAINING.replace("{held}", held))
    return hook


def trained_by_rank(log: Path) -> dict:
    """``{run directory name: {rank: [entries by epoch]}}`` from a rank log."""
    import json

    runs: dict = {}
    for entry in (json.loads(line) for line in log.read_text().splitlines()):
        runs.setdefault(entry["run"], {}).setdefault(entry["rank"], []).append(entry)
    return runs


def check_same_trial_on_every_rank(log: Path, trials, ranks=(0, 1)) -> dict:
    """Each of ``trials`` was trained by every rank, each a process of its own, with the trial's values and one
    seed, for the same epochs.

    Returns:
        ``{trial number: epochs every rank trained}``.
    """
    epochs = {}
    runs = trained_by_rank(log)
    for trial in trials:
        if not trial.params or f"trial-{trial.number:04d}" not in runs:
            continue
        by_rank = runs[f"trial-{trial.number:04d}"]
        assert sorted(by_rank) == list(ranks), (trial.number, sorted(by_rank))
        assert len({entries[0]["pid"] for entries in by_rank.values()}) == len(ranks)  # one process per rank
        first = by_rank[ranks[0]][0]
        for entries in by_rank.values():
            for entry in entries:
                assert (entry["model"], entry["data"], entry["seed"]) == (first["model"], first["data"], first["seed"])
        for key, value in trial.params.items():  # the values the study recorded, exactly
            assert float(first["model"][key]) == value, (key, first["model"][key], value)
        trained = {rank: [e["epoch"] for e in entries] for rank, entries in by_rank.items()}
        assert len({tuple(e) for e in trained.values()}) == 1, trained  # every rank ran the same epochs
        epochs[trial.number] = trained[ranks[0]]
    return epochs
