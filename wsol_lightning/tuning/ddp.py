"""DDP trials whose ranks Lightning starts: one trial, the same values on every rank, one report per epoch.

(Ranks started by torchrun, SLURM or MPI: :mod:`wsol_lightning.tuning.cluster`.)

``ddp_spawn``: Lightning pickles the trainer (with the pruning callback and its
trial) into worker processes that import this script without running its
``main``; the spawned rank 0 reports to the storage, the others only take part in
the broadcast of the decision. Nothing extra is needed besides
``check_pruned()`` in the parent after ``fit`` (optuna-integration keeps the
DDP intermediate values and the pruning decision in the trial's system
attributes). RDB storage is required (the callback refuses others).

``ddp`` (plain): Lightning re-launches ``sys.argv`` once per extra rank when the
first ``fit`` starts, so every re-launched process would run ``tune.py`` from the
top and start its own study loop with other suggested values (optuna#4835,
optuna-integration#59). Here the parent is rank 0 and runs the trial; just
before ``fit`` it puts a *handoff* (storage URL, study name, trial id, the
trial's complete fit.py argument list) in the environment, which the
re-launched ranks inherit. ``tune.py`` checks :func:`handoff_from_env` first:
a re-launched rank joins that very trial (:func:`run_rank`) with the identical
arguments (hence identical values and seed), trains it, and exits; it never
asks the study for a trial and never reports (only global rank 0 reports).

Lightning's launcher was written for one ``fit`` per process; a tuning worker
runs many. :func:`plain_ddp_trial` makes each trial start from a clean slate:

* the rank variables Lightning writes into the parent's environment
  (``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_PORT``...) are restored after the
  trial, otherwise the next trial would believe its ranks already exist;
* the process group is destroyed after the trial (the next one makes a new one
  with its new ranks on a new port);
* Lightning's child-process observer, which SIGKILLs the *parent* when a rank
  exits non-zero, is replaced for the trial by a no-op: a failed rank must fail
  the trial, not the worker. The parent waits for its ranks after ``fit`` and
  kills them if ``fit`` raised on rank 0 (they would wait in a collective).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from typing import Any, Dict, Iterator, List, Optional

#: Environment variable through which rank 0 hands its trial to re-launched ranks.
HANDOFF_ENV = "WSOL_TUNE_DDP_TRIAL"
#: Environment variables Lightning's subprocess launcher sets in the parent.
_LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "OMP_NUM_THREADS")
#: System attribute prefix under which a re-launched rank records the exception that stopped it.
RANK_ERROR_PREFIX = "wsol:rank_error:"
#: Seconds the parent waits for its ranks to exit after a successful fit.
RANK_EXIT_TIMEOUT = 300


def strategy_name(trainer) -> str:
    """``ddp``, ``ddp_spawn``, ... or ``single`` for the trainer's strategy."""
    from lightning.pytorch.strategies import DDPStrategy

    strategy = trainer.strategy
    if isinstance(strategy, DDPStrategy):
        return "ddp_spawn" if getattr(strategy, "_start_method", "popen") in ("spawn", "fork", "forkserver") \
            else "ddp"
    return type(strategy).__name__


def is_distributed(trainer) -> bool:
    """Whether the trainer runs several processes."""
    return trainer._accelerator_connector.is_distributed


def uses_relaunch(trainer) -> bool:
    """Whether ``fit`` re-launches this script for the other ranks (plain ``ddp``)."""
    from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

    launcher = trainer.strategy.launcher
    return isinstance(launcher, _SubprocessScriptLauncher) and not launcher.cluster_environment.\
        creates_processes_externally


def handoff_from_env() -> Optional[Dict[str, Any]]:
    """The handoff when this process is a rank re-launched by plain ``ddp`` for a trial, else None."""
    text = os.environ.get(HANDOFF_ENV)
    if not text:
        return None
    rank = int(os.environ.get("LOCAL_RANK", "0")) + int(os.environ.get("NODE_RANK", "0"))
    if rank == 0:
        return None
    return json.loads(text)


def make_handoff(storage_url: str, study_name: str, trial_id: int, args: List[str], test: bool) -> Dict[str, Any]:
    """What a re-launched rank needs to join a trial."""
    return {"storage": storage_url, "study": study_name, "trial_id": trial_id, "args": list(args), "test": test}


@contextlib.contextmanager
def plain_ddp_trial(trainer, handoff: Dict[str, Any]) -> Iterator[None]:
    """Run one plain-``ddp`` trial's ``fit`` in the parent (see module docstring)."""
    import torch
    from lightning.pytorch.strategies.launchers import subprocess_script

    if not uses_relaunch(trainer):
        yield
        return
    saved_env = {key: os.environ.get(key) for key in (*_LAUNCHER_ENV, HANDOFF_ENV)}
    saved_threads = torch.get_num_threads()
    saved_observer = subprocess_script._launch_process_observer
    os.environ[HANDOFF_ENV] = json.dumps(handoff)
    subprocess_script._launch_process_observer = lambda procs: None
    failed = True
    try:
        yield
        failed = False
    finally:
        subprocess_script._launch_process_observer = saved_observer
        procs: List[subprocess.Popen] = list(getattr(trainer.strategy.launcher, "procs", []))
        _reap(procs, kill=failed)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.set_num_threads(saved_threads)


def _reap(procs: List[subprocess.Popen], kill: bool) -> None:
    for proc in procs:
        if kill and proc.poll() is None:
            proc.kill()
        try:
            proc.wait(timeout=RANK_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_rank(handoff: Dict[str, Any]) -> int:
    """A re-launched rank: join rank 0's trial with its arguments, train, exit (status 0 unless it crashed)."""
    import warnings

    import optuna
    from optuna_integration import PyTorchLightningPruningCallback

    from wsol_lightning.cli import build_run, fit_and_test
    from wsol_lightning.module import MONITOR
    from wsol_lightning.tuning.study import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(handoff["storage"], heartbeat_interval=None)
    study = optuna.load_study(study_name=handoff["study"], storage=storage,
                              sampler=optuna.samplers.RandomSampler())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trial = optuna.trial.Trial(study, handoff["trial_id"])
    callback = PyTorchLightningPruningCallback(trial, monitor=MONITOR)
    try:
        run = build_run(handoff["args"], callbacks=[callback])
        fit_and_test(run, test=handoff["test"], figure=False)
    except BaseException as error:
        # Rank 0 sees only a broken collective: leave it the real reason.
        rank = os.environ.get("LOCAL_RANK", "?")
        storage.set_trial_system_attr(handoff["trial_id"], f"{RANK_ERROR_PREFIX}{rank}",
                                      f"{type(error).__name__}: {error}"[:1000])
        raise
    return 0


def rank_errors(trial) -> List[str]:
    """Errors that re-launched ranks recorded on ``trial`` (see :func:`run_rank`)."""
    attrs = trial.storage.get_trial_system_attrs(trial._trial_id)
    return [f"rank {key[len(RANK_ERROR_PREFIX):]}: {value}" for key, value in sorted(attrs.items())
            if key.startswith(RANK_ERROR_PREFIX)]
