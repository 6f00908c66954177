"""build_run reuses one parser per process (building it costs more than the rest of a build), and nothing of
one run's flags, config file or defaults leaks into the next run built with it."""

import pytest
import yaml

from wsol_lightning.cli import WSOLCLI, build_run
from wsol_lightning.errors import WSOLInputError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:lightning.pytorch.cli")


def test_runs_share_one_parser_and_no_flag_leaks_into_the_next(tmp_path):
    base = ["--data.synthetic_num_train", "32", "--data.synthetic_num_val", "16", "--data.synthetic_num_test", "16",
            "--data.data_root", str(tmp_path / "data")]
    first = build_run([*base, "--run_dir", str(tmp_path / "a"), "--trainer.max_epochs", "9", "--model.wsol_method",
                       "adl", "--checkpoint.save_top_k", "3", "--bg-grid-size", "0.6"])
    parsers = dict(WSOLCLI._parsers)
    second = build_run([*base, "--run_dir", str(tmp_path / "b")])
    assert WSOLCLI._parsers == parsers and len(parsers) >= 1  # the second run built no parser
    assert (first.trainer.max_epochs, first.model.hparams.wsol_method, first.model.hparams.bg_grid_size,
            first.trainer.checkpoint_callback.save_top_k) == (9, "adl", 0.6, 3)
    assert (second.trainer.max_epochs, second.model.hparams.wsol_method, second.model.hparams.bg_grid_size,
            second.trainer.checkpoint_callback.save_top_k) == (8, "has", 0.25, 1)

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"max_epochs": 4}, "model": {"lr": 0.123}}))
    from_file = build_run([*base, "--config", str(config), "--run_dir", str(tmp_path / "c")])
    after = build_run([*base, "--run_dir", str(tmp_path / "d")])
    assert (from_file.trainer.max_epochs, from_file.model.hparams.lr) == (4, 0.123)
    assert (after.trainer.max_epochs, after.model.hparams.lr) == (8, 0.005)


def test_the_run_directory_is_where_the_trainer_writes_whatever_a_config_pinned(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["--data.synthetic_num_train", "32", "--data.synthetic_num_val", "16", "--data.synthetic_num_test", "16",
            "--data.data_root", str(tmp_path / "data")]
    old = str(tmp_path / "old-run")
    pinned = tmp_path / "old.yaml"  # as fit.py saved configs before: both the run and the trainer's folder
    pinned.write_text(yaml.safe_dump({"run_dir": old, "trainer": {"default_root_dir": old}}))

    moved = build_run([*base, "--config", str(pinned), "--run_dir", str(tmp_path / "new")])
    assert (str(moved.run_dir), moved.trainer.default_root_dir) == (str(tmp_path / "new"), str(tmp_path / "new"))
    assert build_run([*base, "--config", str(pinned)]).trainer.default_root_dir == old  # re-run where it said

    given = build_run([*base, "--trainer.default_root_dir", str(tmp_path / "x")])
    assert (str(given.run_dir), given.trainer.default_root_dir) == (str(tmp_path / "x"), str(tmp_path / "x"))
    fresh = build_run(base)
    assert str(fresh.run_dir).startswith("runs/fit-") and fresh.trainer.default_root_dir == str(fresh.run_dir)

    (tmp_path / "afile").write_text("")
    with pytest.raises(WSOLInputError, match=r"^--run_dir .*/afile/run: .*/afile is not a directory$"):
        build_run([*base, "--run_dir", str(tmp_path / "afile" / "run")])  # refused before anything is built
