"""Storage, sampler, pruner, study and trial budget: the Optuna side of ``tune.py``.

* Storage: an SQLite file in the study directory by default; any SQLAlchemy
  URL (``postgresql://user:pw@host/db``: several machines share it); or a journal
  file (a path ending in ``.log`` / ``.journal``, or ``journal:<path>``). RDB
  storages get heartbeats (a trial whose worker stops beating, e.g. killed with
  SIGKILL, is marked failed by the next worker that asks for a trial) and
  ``RetryHeartbeatStaleTrialCallback``, which queues a copy of it (same params)
  for any worker. A storage that cannot be opened is a one-line
  :class:`WSOLInputError` before any training.
* Budget: ``n_trials`` is the study's total across all workers. A trial counts
  when it is complete, pruned, failed (unless it was re-queued by the heartbeat
  retry, whose copy counts instead), running or waiting; see :class:`Budget`.
"""

from __future__ import annotations

import os
import re
import socket
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from wsol_lightning.errors import WSOLInputError
from wsol_lightning.tuning.space import SearchSpace

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "none", "percentile", "successive_halving", "hyperband")
#: Seconds between heartbeats of a running trial (RDB storages).
HEARTBEAT_INTERVAL = 10
#: Seconds without heartbeat after which a running trial is failed and re-queued.
GRACE_PERIOD = 60
#: Seconds an SQLite writer waits for the file's lock before "database is locked".
SQLITE_BUSY_TIMEOUT = 60
#: System attribute of a trial abandoned because two workers started the last budgeted trial at once.
OVER_BUDGET_KEY = "wsol:over_budget"


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages and logs)."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", url)


def normalize_url(url: str) -> str:
    """``postgresql://`` -> ``postgresql+psycopg2://`` when only psycopg2 is installed.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to the psycopg 3 driver; the
    project installs ``psycopg2-binary``, so the bare form would fail to import.
    """
    import importlib.util

    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme) and importlib.util.find_spec("psycopg") is None \
                and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url[len(scheme):]
    return url


def is_journal(url: str) -> bool:
    """Whether ``url`` names a journal file rather than an SQLAlchemy URL."""
    return url.startswith("journal:") or ("://" not in url and url.endswith((".log", ".journal")))


def open_storage(url: str, heartbeat_interval: Optional[int] = HEARTBEAT_INTERVAL,
                 grace_period: Optional[int] = GRACE_PERIOD, max_retry: Optional[int] = 3):
    """Open an Optuna storage; RDB ones with heartbeats and stale-trial retry.

    Args:
        url: ``sqlite:///path.db``, ``postgresql://user:pw@host:port/db`` (any
            SQLAlchemy URL Optuna supports), or a journal file path.
        heartbeat_interval: seconds between heartbeats (None: no heartbeat).
        grace_period: seconds of silence after which a running trial is stale.
        max_retry: re-queues of one stale trial at most.

    Returns:
        An ``RDBStorage`` or a ``JournalStorage``.

    Raises:
        WSOLInputError: the storage cannot be opened (one line, password redacted).
    """
    shown = redact(url)
    if not url:
        raise WSOLInputError("--storage: empty URL")
    try:
        if is_journal(url):
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            path = Path(url[len("journal:"):] if url.startswith("journal:") else url)
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        if "://" not in url:
            raise ValueError("not an SQLAlchemy URL (e.g. sqlite:///study.db, postgresql://user:pw@host/db) "
                             "nor a journal file (*.log, *.journal)")
        url = normalize_url(url)
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs: Dict[str, Any] = {}
        if url.startswith(("postgresql", "mysql")):
            engine_kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
        elif url.startswith("sqlite"):
            # Workers (--workers N) and their heartbeat threads write to one file: a writer that finds it
            # locked waits up to SQLITE_BUSY_TIMEOUT s for the lock (sqlite3's default: 5 s).
            engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT}}
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=(RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
                                                if heartbeat_interval else None),
            )
    except WSOLInputError:
        raise
    except Exception as error:  # noqa: BLE001 - any driver/URL error becomes one line
        text = " ".join(str(error).split())
        if error.__cause__ is not None:
            text += f" ({type(error.__cause__).__name__}: {' '.join(str(error.__cause__).split())})"
        text = re.sub(r"\(Background on this error at: [^)]*\)", "", text).strip()
        reason = redact(text)[:300] or type(error).__name__
        raise WSOLInputError(f"--storage {shown}: cannot open the storage ({type(error).__name__}: {reason})") \
            from None


def worker_seed(seed: Optional[int], study_created: bool, existing_trials: int) -> Optional[int]:
    """Seed of this worker's sampler.

    The worker that created the study uses ``seed`` (a single-worker study is
    reproducible). A worker joining or resuming an existing study gets a seed
    derived from ``seed``, the number of trials already there, the host and the
    process id: workers with one seed would otherwise draw the same random
    start-up values.
    """
    if seed is None or study_created:
        return seed
    salt = f"{seed}:{existing_trials}:{socket.gethostname()}:{os.getpid()}".encode()
    return zlib.crc32(salt) % (2**31)


def make_sampler(name: str, seed: Optional[int], space: SearchSpace, grid_points: int = 5):
    """TPE (default, seeded), random or grid (continuous floats: ``grid_points`` values each)."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(space.grid(grid_points), seed=seed)
    raise WSOLInputError(f"--sampler {name}: choose one of {', '.join(SAMPLERS)}")


def make_pruner(name: str, n_startup_trials: int = 3, n_warmup_steps: int = 1, interval_steps: int = 1,
                percentile: float = 25.0, patience: Optional[int] = None):
    """The pruner by name; ``median`` (default), ``percentile``, ``successive_halving``, ``hyperband``, ``none``.

    Args:
        patience: wrap the pruner in optuna's ``PatientPruner``: a trial is judged only once its best
            value is at least ``patience + 1`` epochs old, i.e. it stopped improving (0: it fell at its
            last epoch). A slow learner still rising is never pruned, however far it trails. None: no
            wrapping.
    """
    for flag, value, low in (("--n-startup-trials", n_startup_trials, 0), ("--n-warmup-steps", n_warmup_steps, 0),
                             ("--interval-steps", interval_steps, 1), ("--patience", patience, 0)):
        if value is not None and value < low:
            raise WSOLInputError(f"{flag}={value} must be >= {low}")
    pruner = _base_pruner(name, n_startup_trials, n_warmup_steps, interval_steps, percentile)
    if patience is None or name == "none":
        return pruner
    with warnings.catch_warnings():  # "experimental" since optuna 2.8, unchanged since; not the user's concern
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        return optuna.pruners.PatientPruner(pruner, patience=patience)


def _base_pruner(name: str, n_startup_trials: int, n_warmup_steps: int, interval_steps: int, percentile: float):
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps,
                                           interval_steps=interval_steps)
    if name == "percentile":
        if not 0.0 <= percentile <= 100.0:
            raise WSOLInputError(f"--percentile={percentile} must be in [0, 100]")
        return optuna.pruners.PercentilePruner(percentile, n_startup_trials=n_startup_trials,
                                               n_warmup_steps=n_warmup_steps, interval_steps=interval_steps)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise WSOLInputError(f"--pruner {name}: choose one of {', '.join(PRUNERS)}")


def create_or_load_study(storage, study_name: str, direction: str) -> Tuple[optuna.Study, bool]:
    """Create the study, or load it when it exists (same command again, or another worker).

    Returns:
        The study (default sampler and pruner: :func:`attach` sets this worker's)
        and whether this call created it. A study that exists with the other
        direction is refused.
    """
    if direction not in ("maximize", "minimize"):
        raise WSOLInputError(f"--direction {direction}: choose maximize or minimize")
    try:
        study = optuna.create_study(storage=storage, study_name=study_name, direction=direction)
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=study_name, storage=storage)
    existing = study.direction.name.lower()
    if existing != direction:
        raise WSOLInputError(f"--study-name {study_name}: the study exists with --direction {existing}, "
                             f"not {direction} (choose another --study-name)")
    return study, False


def attach(study: optuna.Study, sampler, pruner) -> optuna.Study:
    """This worker's sampler and pruner on ``study`` (they live in the process, not the storage)."""
    study.sampler = sampler
    study.pruner = pruner
    return study


@dataclass
class Budget:
    """Where a study stands against its ``n_trials`` budget.

    ``counted``: trials that use the budget (complete, pruned, failed and not
    re-queued, running, waiting); ``done``: finished ones among them (complete,
    pruned, failed and not re-queued); ``running``/``waiting``: those not done.
    """

    counted: int
    done: int
    running: int
    waiting: int


def retried_numbers(trials: List[FrozenTrial]) -> set:
    """Numbers of failed trials that the heartbeat retry re-queued (their copy counts instead)."""
    import warnings

    numbers = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for trial in trials:
            numbers.update(RetryHeartbeatStaleTrialCallback.retry_history(trial))
    return numbers


def counts_toward_budget(trial: FrozenTrial, retried: set) -> bool:
    """Whether ``trial`` uses one unit of the ``n_trials`` budget."""
    if trial.system_attrs.get(OVER_BUDGET_KEY):
        return False
    if trial.state == TrialState.FAIL:
        return trial.number not in retried
    return True


def budget(study: optuna.Study) -> Budget:
    """The study's :class:`Budget` now (reads the storage)."""
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    counted = [t for t in trials if counts_toward_budget(t, retried)]
    running = sum(t.state == TrialState.RUNNING for t in counted)
    waiting = sum(t.state == TrialState.WAITING for t in counted)
    return Budget(counted=len(counted), done=len(counted) - running - waiting, running=running, waiting=waiting)


def is_over_budget(study: optuna.Study, trial_number: int, n_trials: int) -> bool:
    """Whether ``n_trials`` counted trials precede ``trial_number`` (it lost a start race)."""
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    before = [t for t in trials if t.number < trial_number and counts_toward_budget(t, retried)]
    return len(before) >= n_trials


def enqueue_once(study: optuna.Study, params: Dict[str, Any]) -> bool:
    """Enqueue ``params`` unless a trial with these values exists or waits (rerun-safe)."""
    for trial in study.get_trials(deepcopy=False):
        if trial.params == params or trial.system_attrs.get("fixed_params") == params:
            return False
    study.enqueue_trial(params, skip_if_exists=True)
    return True
