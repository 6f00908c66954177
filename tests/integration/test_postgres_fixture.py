"""The ``postgres_url`` fixture never hides the PostgreSQL tests in CI: it fails there, with the reason."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run_a_test_needing_postgres(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """pytest on one test that uses the fixture, with PostgreSQL unavailable (binaries pointed elsewhere)."""
    (tmp_path / "test_needs_postgres.py").write_text("def test_needs_postgres(postgres_url):\n    pass\n")
    environment = {key: value for key, value in os.environ.items() if key != "CI"}
    environment.update(PYTHONPATH=str(ROOT), WSOL_PG_BINDIR=str(tmp_path / "no-postgres-here"), **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           "-p", "tests.integration.conftest", "test_needs_postgres.py"],
                          cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("ci", ["true", "1"])
def test_in_ci_an_unavailable_server_fails_the_test_with_the_reason(tmp_path, ci):
    result = _run_a_test_needing_postgres(tmp_path, CI=ci)
    assert result.returncode == 1, result.stdout
    assert "1 error" in result.stdout and "skipped" not in result.stdout, result.stdout
    assert (f"scripts/start_postgres.sh exited with status 3 (CI is set, so the tests that need PostgreSQL "
            f"must run): start_postgres: WSOL_PG_BINDIR={tmp_path / 'no-postgres-here'} holds no PostgreSQL "
            f"server binaries (initdb, pg_ctl)") in result.stdout, result.stdout


def test_outside_ci_an_unavailable_server_skips_naming_the_reason(tmp_path):
    result = _run_a_test_needing_postgres(tmp_path, CI="false")
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout
    assert (f"PostgreSQL cannot be installed here: start_postgres: WSOL_PG_BINDIR={tmp_path / 'no-postgres-here'} "
            f"holds no PostgreSQL server binaries (initdb, pg_ctl)") in result.stdout, result.stdout
