"""scripts/fit.py end to end: trains, logs stable metric names, refuses bad input in one line."""

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch
import yaml

from tests.fixtures import WSOLEVAL_FIXTURES
from tests.one_line import one_line_error
from wsol_lightning.fit import main

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = WSOLEVAL_FIXTURES
TINY = ["--data.synthetic_num_train", "64", "--data.synthetic_num_val", "32", "--data.synthetic_num_test", "32",
        "--data.batch_size", "16", "--trainer.enable_progress_bar", "false"]


def run_fit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "fit.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_fit_trains_tests_and_writes_the_run_directory(fitted_run):
    """The shared fit.py run (tests/integration/fit_support.py: 3 epochs, ``--bg-grid-size 0.4``)."""
    result, run = fitted_run, fitted_run.run_dir
    assert f"run directory: {run}" in result.stdout
    printed = dict(line.split() for line in result.stdout.splitlines() if line.startswith("  val/")
                   or line.startswith("  test/"))
    names = ("top1", "MaxBoxAcc", "MaxBoxAccV2", "MaxBoxAccV2_IoU30", "MaxBoxAccV2_IoU50", "MaxBoxAccV2_IoU70",
             "top1_loc", "PxAP", "localization")
    assert set(printed) == {f"{stage}/{name}" for stage in ("val", "test") for name in names}
    for stage in ("val", "test"):
        value = {name: float(printed[f"{stage}/{name}"]) for name in names}
        for name in ("top1", "MaxBoxAcc", "MaxBoxAccV2_IoU30", "MaxBoxAccV2_IoU50", "MaxBoxAccV2_IoU70", "top1_loc"):
            hits = value[name] * 32 / 100  # a count of the split's 32 images, each counted once
            assert abs(hits - round(hits)) < 0.01 and 0 <= round(hits) <= 32, (stage, name, value[name])
        ious = [value[f"MaxBoxAccV2_IoU{k}"] for k in (30, 50, 70)]
        assert value["MaxBoxAccV2"] == pytest.approx(sum(ious) / 3, abs=0.01)
        assert value["localization"] == value["MaxBoxAccV2"]  # a box dataset: localization is MaxBoxAccV2
        assert ious[0] >= ious[1] >= ious[2] and ious[1] >= value["MaxBoxAcc"]  # every contour >= the largest
        assert value["top1_loc"] <= min(value["top1"], value["MaxBoxAcc"]) and 0 < value["PxAP"] < 100
    version = fitted_run.version_dir
    grid = cv2.imread(str(run / "cam_grid.png"))
    assert grid.shape == (4 * 3 * 80, 4 * 3 * 80, 3)  # 16 val images in 4 x 4 cells of 3 inches at 80 dpi
    saved = yaml.safe_load((version / "config.yaml").read_text())
    assert (saved["bg_grid_size"], saved["model"]["bg_grid_size"]) == (0.4, 0.4)
    # --config re-runs it from the start in a run directory of its own, not into this one
    assert (saved["ckpt_path"], saved["run_dir"], saved["trainer"]["default_root_dir"]) == (None, None, None)
    checkpoints = sorted(p.name for p in (version / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and any(name.startswith("best-epoch") for name in checkpoints)
    checkpoint = torch.load(version / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["hyper_parameters"]["bg_grid_size"] == 0.4
    assert checkpoint["hyper_parameters"]["wsol_method"] == "has"
    assert checkpoint["epoch"] == 2


def test_out_of_range_flag_is_refused_in_one_line(tmp_path):
    result = run_fit("--bg-grid-size", "1.5", "--data.data_root", str(tmp_path / "data"), *TINY, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: --model.bg_grid_size=1.5 is out of range [0.0, 1.0]"


@pytest.mark.parametrize("args, expected", [
    (["--bg-grid-size", "abc"], "--bg_grid_size abc: Does not validate against any of the Union subtypes; "
                                "Subtypes: [float, NoneType]; Expected a float; Expected a NoneType"),
    (["--model.learning_rate", "0.1"], "unrecognized arguments: --model.learning_rate 0.1"),
    (["--model.wsol_method", "foo"], "--model.wsol_method: Expected a typing.Literal['base', 'has', 'acol', 'spg', "
                                     "'adl', 'cutmix']. Got value: foo"),
    (["--config", "/nonexistent/run.yaml"], "--config: File does not exist: '/nonexistent/run.yaml'"),
])
def test_mistyped_and_unknown_flags_are_refused_in_one_line_without_the_usage(tmp_path, args, expected):
    # jsonargparse alone would print the 90-line usage and a message of several lines
    assert one_line_error(main.__wrapped__, [*args, "--run_dir", str(tmp_path / "run")]) == expected


def test_malformed_cub_metadata_names_file_and_line(tmp_path):
    metadata = tmp_path / "metadata"
    shutil.copytree(FIXTURES / "metadata" / "CUB", metadata / "CUB")
    localization = metadata / "CUB" / "val" / "localization.txt"
    lines = localization.read_text().splitlines()
    lines[11] = lines[11].rsplit(",", 1)[0] + ",notanumber"
    localization.write_text("\n".join(lines) + "\n")
    (tmp_path / "images" / "CUB").mkdir(parents=True)  # no images needed: metadata is read first
    message = one_line_error(main.__wrapped__, [  # fit.py's main in this process, through the scripts' guard
        "--data.dataset_name", "CUB", "--data.metadata_root", str(metadata), "--data.data_root",
        str(tmp_path / "images"), "--trainer.max_epochs", "1", "--run_dir", str(tmp_path / "run")])
    assert message == f"{localization}:12: y1 is not an integer: 'notanumber'"
