"""Fixtures of the tune.py integration tests: a real PostgreSQL server on loopback."""

import subprocess
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def postgres_url():
    """URL of the server ``scripts/start_postgres.sh`` installs (apt-get, if missing) and starts on 127.0.0.1.

    Skips, with the script's reason, only when PostgreSQL cannot be installed here (exit status 3).
    """
    result = subprocess.run(["bash", str(ROOT / "scripts" / "start_postgres.sh")], capture_output=True, text=True,
                            timeout=900)
    if result.returncode == 3:
        pytest.skip(f"PostgreSQL cannot be installed here: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


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
