"""Fixtures of the tune.py integration tests: a real PostgreSQL server on loopback."""

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.integration.fit_support import fitted_run  # noqa: F401  (one fit.py run shared by fit/resume/predict tests)

ROOT = Path(__file__).resolve().parents[2]


def running_in_ci() -> bool:
    """``CI`` is set (GitHub Actions, GitLab and most others set ``CI=true``), and not to a false value."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _session_folder(config, tmp_path_factory) -> Path:
    """A folder shared by every pytest-xdist worker of this run (the run's own base folder without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if hasattr(config, "workerinput") else base  # a worker's is <the run's>/popen-gw<n>


def _start_postgres_once(folder: Path) -> None:
    """Run ``scripts/start_postgres.sh`` in the background, once per test run (the first caller of any
    worker starts it); its stdout, stderr and exit status land in ``folder/postgres.{out,err,status}``."""
    try:
        os.close(os.open(folder / "postgres.started", os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return
    script = ROOT / "scripts" / "start_postgres.sh"
    run = (f'bash "{script}" > "{folder}/postgres.out" 2> "{folder}/postgres.err"; '
           f'echo $? > "{folder}/postgres.status.part" && mv "{folder}/postgres.status.part" "{folder}/postgres.status"')
    subprocess.Popen(["bash", "-c", run], stdin=subprocess.DEVNULL, start_new_session=True)


@pytest.fixture(scope="session", autouse=True)
def _postgres_started_early(request, tmp_path_factory):
    """When this run has tests that need PostgreSQL, start the server at the first integration test: its
    first start installs it (apt-get, a minute of downloads), which then overlaps with other tests."""
    if any("postgres_url" in item.fixturenames for item in request.session.items):
        _start_postgres_once(_session_folder(request.config, tmp_path_factory))


@pytest.fixture(scope="session")
def postgres_url(request, tmp_path_factory):
    """URL of the server ``scripts/start_postgres.sh`` installs (apt-get, if missing) and starts on 127.0.0.1.

    The script runs once per test run, whatever the number of pytest-xdist workers (:func:`_start_postgres_once`).
    When PostgreSQL cannot be installed here (the script's exit status 3): a skip that gives the
    script's reason, except in CI (``CI`` set), where the tests that need the server fail with that
    reason instead, so a broken installation cannot hide them. Any other failure of the script fails.
    """
    folder = _session_folder(request.config, tmp_path_factory)
    _start_postgres_once(folder)
    script = ROOT / "scripts" / "start_postgres.sh"
    status, deadline = folder / "postgres.status", time.monotonic() + 540
    while not status.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"{script.relative_to(ROOT)} did not finish within 540 s", pytrace=False)
        time.sleep(0.2)
    returncode = int(status.read_text())
    if returncode == 0:
        return (folder / "postgres.out").read_text().strip().splitlines()[-1]
    lines = (folder / "postgres.err").read_text().strip().splitlines()
    reason = lines[-1] if lines else "(no message)"
    if returncode == 3 and not running_in_ci():
        pytest.skip(f"PostgreSQL cannot be installed here: {reason}")
    where = "CI is set, so the tests that need PostgreSQL must run" if running_in_ci() else "unexpected failure"
    details = "" if returncode == 3 else "\n" + "\n".join(lines[-20:])
    pytest.fail(f"{script.relative_to(ROOT)} exited with status {returncode} ({where}): {reason}{details}",
                pytrace=False)


@pytest.fixture
def study_name():
    """A study name of its own for each test (tests share the server's database)."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(autouse=True)
def _no_tune_left_running():
    """A test that fails half-way never leaves a tune.py it started running."""
    from tune_support import STARTED

    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait()
