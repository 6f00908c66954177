"""scripts/tune.py end to end on tiny data: records, enqueue, divergence, reproduction, resume, refusals."""

import re
import pytest

from tune_support import load, run_tune, tune_here
from wsol_lightning.fit import main as fit_main

SPACE = """
parameters:
  bg_grid_size: {type: float, low: 0.0, high: 1.0}
  lr: {type: float, low: 0.005, high: 0.1, log: true}
"""


@pytest.mark.slow
def test_study_records_reproduces_and_resumes(tmp_path, capsys):
    data, study_dir = tmp_path / "data", tmp_path / "study"
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    storage = f"sqlite:///{study_dir}/optuna.db"
    result = run_tune("--study-dir", str(study_dir), "--n-trials", "3", "--search-space", str(space),
                      "--enqueue", "bg_grid_size=0.4,lr=0.02", "--enqueue", "bg_grid_size=0", cwd=tmp_path, data_root=data)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert re.search(r"trial +0 +COMPLETE value +\d+\.\d\d +epochs 2 +bg_grid_size=0.4 lr=0.02", out), out
    assert re.search(r"trial +1 +COMPLETE .*bg_grid_size=0 lr=", out), out
    assert "Number of finished trials: 3" in out and "Best trial:" in out and "best bg_grid_size:" in out
    for name in ("optimization_history", "intermediate_values", "param_importances", "slice_bg_grid_size"):
        assert (study_dir / "plots" / f"{name}.png").stat().st_size > 5000, name
        assert (study_dir / "plots" / f"{name}.html").is_file(), name

    study = load(storage, "wsol-tune")
    first = study.trials[0]
    assert first.params == {"bg_grid_size": 0.4, "lr": 0.02}
    assert sorted(first.intermediate_values) == [0, 1]
    assert first.value == pytest.approx(first.user_attrs["val/localization"], abs=1e-3)
    assert first.value == pytest.approx(first.intermediate_values[1], abs=1e-4)
    assert first.user_attrs["epochs"] == 2 and {"val/top1", "val/MaxBoxAccV2", "val/PxAP"} <= set(first.user_attrs)
    assert first.user_attrs["checkpoint"].endswith("last.ckpt")
    assert (study_dir / "trial-0000").is_dir() and (study_dir / "trial-0000" / first.user_attrs["checkpoint"]).exists()

    # fit.py --config <a trial's config> reproduces that trial. This and the resumes below run in this process
    # (the same main() the scripts call): a new interpreter costs ~5 s of imports, the first run tested the script.
    capsys.readouterr()
    assert fit_main(["--config", first.user_attrs["config"], "--run_dir", str(tmp_path / "repro")]) == 0
    repro = capsys.readouterr().out
    assert re.search(rf"val/localization +{first.value:.2f}\b", repro), (first.value, repro)
    assert list((tmp_path / "repro").rglob("last.ckpt"))  # in the new run directory, not into the trial's
    assert [p.name for p in (study_dir / "trial-0000" / "lightning_logs").iterdir()] == ["version_0"]

    # The same command with a larger --n-trials resumes the study; the enqueued values are not run again.
    common = ["--study-dir", str(study_dir), "--search-space", str(space), "--no-plots"]
    assert tune_here(*common, "--n-trials", "4", "--enqueue", "bg_grid_size=0.4,lr=0.02",
                     "--enqueue", "bg_grid_size=0", data_root=data) == 0
    again = capsys.readouterr().out
    assert "resumed, 3 trials" in again and re.search(r"trial +3 ", again), again
    assert len(load(storage, "wsol-tune").trials) == 4
    assert tune_here(*common, "--n-trials", "4", data_root=data) == 0
    assert not re.search(r"^trial +\d", capsys.readouterr().out, re.M)
    assert len(load(storage, "wsol-tune").trials) == 4


@pytest.mark.parametrize("args, message", [
    (["--storage", "postgresql://u:pw@127.0.0.1:1/none"], "error: --storage postgresql://u:***@127.0.0.1:1/none: "
                                                          "cannot open the storage"),
    (["--trainer.val_check_interval", "0.5"], "error: --trainer.val_check_interval=0.5: tune.py reports"),
    (["--enqueue", "bg_grid_size=2"], "error: --enqueue bg_grid_size=2: bg_grid_size=2.0 is outside the search range"),
    (["--n-trials", "0"], "error: --n-trials=0 must be >= 1"),
    (["--data.batch_size", "0"], "error: --data.batch_size=0 must be an integer >= 1"),
    (["--search-space", "BAD"], "error: BAD: nonsense: unknown parameter"),
    (["--timeout", "0"], "error: --timeout=0.0 must be > 0"),
    (["--grid-points", "0"], "error: --grid-points=0 must be >= 1"),
    (["--heartbeat-interval", "5", "--grace-period", "5"], "error: --heartbeat-interval=5 must be >= 1 and "
                                                           "--grace-period=5 larger than it"),
    (["--max-retry", "-1"], "error: --max-retry=-1 must be >= 0"),
    (["--workers", "0"], "error: --workers=0 must be >= 1"),
    (["--dist-timeout", "0"], "error: --dist-timeout=0.0 must be > 0"),
    (["--pruner", "percentile", "--percentile", "101"], "error: --percentile=101.0 must be in [0, 100]"),
    (["--interval-steps", "0"], "error: --interval-steps=0 must be >= 1"),
    (["--patience", "-1"], "error: tune.py: argument --patience: -1 must be >= 0 (or 'off')"),
    (["--n-trials", "abc"], "error: tune.py: argument --n-trials: invalid int value: 'abc'"),
    (["--workers", "2", "--trainer.strategy", "ddp_spawn", "--trainer.devices", "2", "--trainer.accelerator", "cpu"],
     "error: --workers 2: each worker trains on one device"),
    (["--storage", "JOURNAL", "--trainer.strategy", "ddp_spawn", "--trainer.devices", "2",
      "--trainer.accelerator", "cpu"], "error: --trainer.strategy ddp_spawn: DDP trials need an RDB --storage"),
])
def test_refusals_are_one_line_before_any_training(tmp_path, capsys, args, message):
    from wsol_lightning.tuning.main import main

    space = tmp_path / "bad.yaml"
    space.write_text("parameters:\n  nonsense: {type: float, low: 0, high: 1}\n")
    args = [str(space) if a == "BAD" else str(tmp_path / "s.journal") if a == "JOURNAL" else a for a in args]
    message = message.replace("BAD", str(space))
    with pytest.raises(SystemExit) as exit_:
        main(["--study-dir", str(tmp_path / "s"), "--data.data_root", str(tmp_path / "data"), *args])
    captured = capsys.readouterr()
    assert exit_.value.code == 2
    assert captured.err.strip().splitlines()[-1].startswith(message), captured.err[-500:]
    assert "trial " not in captured.out and not (tmp_path / "s" / "trial-0000").exists()


def test_a_bad_value_of_the_search_space_is_refused_naming_the_space(tmp_path, capsys):
    from wsol_lightning.tuning.main import main

    space = tmp_path / "space.yaml"
    space.write_text("fixed: {model.wsol_method: foo}\nparameters:\n  model.lr: {type: float, low: 0.001, high: 0.01}\n")
    with pytest.raises(SystemExit) as exit_:
        main(["--study-dir", str(tmp_path / "s"), "--data.data_root", str(tmp_path / "data"),
              "--search-space", str(space)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err[-2000:]  # one line: no usage, no traceback
    assert err.startswith(f"error: {space}: fixed model.wsol_method: --model.wsol_method: Expected a typing.Literal")


def test_an_existing_study_with_the_other_direction_is_refused(tmp_path, capsys):
    from wsol_lightning.tuning.main import main
    from wsol_lightning.tuning.study import create_or_load_study, open_storage

    create_or_load_study(open_storage(f"sqlite:///{tmp_path}/s/optuna.db"), "wsol-tune", "minimize")
    with pytest.raises(SystemExit) as exit_:
        main(["--study-dir", str(tmp_path / "s"), "--data.data_root", str(tmp_path / "data")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --study-name wsol-tune: the study exists with --direction minimize, not maximize (choose another "
        "--study-name)")
