"""Shared test set-up: CPU threads, quiet Lightning, deterministic seeds, and the plan of a parallel run.

The README's ``python -m pytest -q`` runs the suite on 2 pytest-xdist workers (``addopts`` in
pyproject.toml; ``-n 0`` runs it in one process). Then each worker, and every process a test
starts, uses one CPU thread, so that two workers do not oversubscribe two cores; the slow tests
start first, longest first, so that no worker is left alone with a long test at the end.
"""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

os.environ.setdefault("PYTHONHASHSEED", "0")
torch.set_num_threads(2)
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*GPU available but not used.*")

ROOT = Path(__file__).resolve().parents[1]
#: Modules of slow tests, longest first (CPU seconds of the whole module, measured on 2 cores): a parallel run
#: starts them in this order (longest-processing-time-first). Slow tests of modules not listed come after them.
LONGEST_FIRST = (
    "test_tune_ddp", "test_tune_cluster", "test_tune_interrupts", "test_tune_script", "test_tune_workers",
    "test_tune_postgres", "test_fit_resume", "test_ddp_metrics", "test_fit_script", "test_predict_script",
    "test_tuning_objective",
)


def in_xdist_worker(config) -> bool:
    return hasattr(config, "workerinput")


def _use_memory_for_tmp_path(config) -> None:
    """Put this run's ``tmp_path`` folders on ``/dev/shm`` (memory) when it has room: the tests write SQLite
    studies (a sync per commit), checkpoints and data there, and a disk's syncs slow them down. pytest keeps
    its last three runs there, as under /tmp. An explicit ``--basetemp`` or ``PYTEST_DEBUG_TEMPROOT`` wins."""
    shm = Path("/dev/shm")
    if in_xdist_worker(config) or config.option.basetemp or os.environ.get("PYTEST_DEBUG_TEMPROOT"):
        return
    try:
        usage = os.statvfs(shm)
    except OSError:
        return
    if os.access(shm, os.W_OK) and usage.f_bavail * usage.f_frsize > 4 * 2**30:
        os.environ["PYTEST_DEBUG_TEMPROOT"] = str(shm)  # inherited by the xdist workers


def pytest_configure(config):
    """One CPU thread in each xdist worker and the scripts its tests start; the package's narrow third-party
    warning filters in every test (pytest resets the filters for each test); tmp_path in memory."""
    from wsol_lightning.quiet import THIRD_PARTY_WARNINGS

    _use_memory_for_tmp_path(config)

    if in_xdist_worker(config):
        torch.set_num_threads(1)
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # inherited by the processes the tests start
            os.environ[variable] = "1"
    for message, category, module in THIRD_PARTY_WARNINGS:
        config.addinivalue_line("filterwarnings", f"ignore:{message}:{category.__name__}:{module}")


_warm_up = None


def pytest_sessionstart(session):
    """Compile the box-metric kernel in the background while the workers start (once per run; the processes
    that need it meanwhile wait for it instead of compiling it too: see wsol_lightning.metrics.compiled).
    A no-op in a warm checkout (numba's cache and the ahead-of-time module are there)."""
    global _warm_up
    if in_xdist_worker(session.config):
        return
    code = "from wsol_lightning.metrics import compiled; compiled.just_in_time(); compiled.ahead_of_time()"
    _warm_up = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                    [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])})


def pytest_sessionfinish(session):
    if _warm_up is not None and _warm_up.poll() is None:
        _warm_up.kill()  # a run shorter than the build (both forms write their files atomically)
        _warm_up.wait()


def _plan(item) -> tuple:
    """Sort key and xdist group of a test: slow tests first (one unit of work each, longest module first),
    the tests of the shared fit.py run together, the other tests with the rest of their module (its
    module-scoped fixtures are built once)."""
    module = Path(str(item.fspath)).stem
    slow = item.get_closest_marker("slow") is not None
    if "fitted_run" in item.fixturenames:
        group = "fitted_run"
    elif not slow:
        group = module
    else:
        group = None
    rank = LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)
    return (0 if slow or group == "fitted_run" else 1, rank), group


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook, which reads the groups into the node ids
def pytest_collection_modifyitems(config, items):
    """Order the tests for a parallel run and tell pytest-xdist (``--dist loadgroup``) what runs together."""
    plans = {item.nodeid: _plan(item) for item in items}
    items.sort(key=lambda item: plans[item.nodeid][0])  # stable: the file order within each rank
    for item in items:
        group = plans[item.nodeid][1]
        if group is not None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
