"""Fixtures of the tune.py integration tests: a real PostgreSQL server on loopback."""

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.integration.fit_support import fitted_run  # noqa: F401  (one fit.py run shared by resume/predict tests)

ROOT = Path(__file__).resolve().parents[2]


def running_in_ci() -> bool:
    """``CI`` is set (GitHub Actions, GitLab and most others set ``CI=true``), and not to a false value."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def postgres_url():
    """URL of the server ``scripts/start_postgres.sh`` installs (apt-get, if missing) and starts on 127.0.0.1.

    When PostgreSQL cannot be installed here (the script's exit status 3): a skip that gives the
    script's reason, except in CI (``CI`` set), where the tests that need the server fail with that
    reason instead, so a broken installation cannot hide them. Any other failure of the script fails.
    """
    script = ROOT / "scripts" / "start_postgres.sh"
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=540)
    if result.returncode == 0:
        return result.stdout.strip().splitlines()[-1]
    lines = result.stderr.strip().splitlines()
    reason = lines[-1] if lines else "(no message)"
    if result.returncode == 3 and not running_in_ci():
        pytest.skip(f"PostgreSQL cannot be installed here: {reason}")
    where = "CI is set, so the tests that need PostgreSQL must run" if running_in_ci() else "unexpected failure"
    details = "" if result.returncode == 3 else "\n" + "\n".join(lines[-20:])
    pytest.fail(f"{script.relative_to(ROOT)} exited with status {result.returncode} ({where}): {reason}{details}",
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
