"""optuna-dashboard (the ``dashboard`` extra) serves a finished tune.py study on loopback; read it back over HTTP."""

import json
import os
import socket
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tune_support import output, start

if os.environ.get("CI", "").strip().lower() in ("", "0", "false", "no"):
    pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is not installed: pip install -e .[dashboard]")
else:
    import optuna_dashboard  # noqa: F401  (scripts/with_venv.sh installs the extra: in CI, missing fails)


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_dashboard_reads_back_a_finished_study(tmp_path):
    from wsol_lightning.tuning.study import create_or_load_study, open_storage

    url = f"sqlite:///{tmp_path}/optuna.db"
    study, _ = create_or_load_study(open_storage(url), "wsol-tune", "maximize")
    dists = {"bg_grid_size": optuna.distributions.FloatDistribution(0, 1),
             "lr": optuna.distributions.FloatDistribution(2e-4, 0.2, log=True)}
    for grid, value in ((0.25, 41.5), (0.75, 57.25)):
        study.add_trial(optuna.create_trial(params={"bg_grid_size": grid, "lr": 0.01}, distributions=dists,
                                            value=value, intermediate_values={0: value - 5, 1: value},
                                            user_attrs={"epochs": 2, "val/localization": value}))
    study.add_trial(optuna.create_trial(state=TrialState.PRUNED, params={"bg_grid_size": 0.5, "lr": 0.1},
                                        distributions=dists, intermediate_values={0: 12.0},
                                        user_attrs={"epochs": 1, "pruned_epoch": 0}))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dashboard = start([str(Path(sys.executable).parent / "optuna-dashboard"), url, "--host", "127.0.0.1",
                       "--port", str(port)], cwd=tmp_path, log="dashboard")
    deadline = time.monotonic() + 60
    while True:
        try:
            studies = get(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
            break
        except OSError:
            assert dashboard.poll() is None and time.monotonic() < deadline, output(dashboard)[-2000:]
            time.sleep(0.3)
    (summary,) = studies
    assert summary["study_name"] == "wsol-tune"
    detail = get(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}")
    trials = {t["number"]: t for t in detail["trials"]}
    assert [trials[n]["state"] for n in range(3)] == ["Complete", "Complete", "Pruned"]
    assert [trials[n]["values"] for n in range(2)] == [[41.5], [57.25]]
    assert {p["name"]: p["param_external_value"] for p in trials[1]["params"]} == {"bg_grid_size": "0.75",
                                                                                   "lr": "0.01"}
    assert {a["key"]: a["value"] for a in trials[2]["user_attrs"]}["pruned_epoch"] == "0"
    assert [t["number"] for t in detail["best_trials"]] == [1]
    dashboard.terminate()
    dashboard.wait(timeout=10)
