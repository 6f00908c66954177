"""scripts/predict.py: a checkpoint's metrics == fit.py's figures == evaluate.py on the maps it saved.

Oracles: what fit.py printed for the same checkpoint (its test of the best checkpoint, its last
epoch's validation), scripts/evaluate.py on the exported maps, and the transcription of the
reference's PxAP (tests/reference_wsol_metrics.py) on the exported maps and the data's masks.
"""

import json
import shlex

import numpy as np
import pytest
import torch

from tests.integration.fit_support import metric_lines, run_script
from tests.one_line import one_line_error
from tests.reference_wsol_metrics import pxap
from wsol_lightning.data.metadata import load_metadata
from wsol_lightning.metrics.masks import load_gt_mask
from wsol_lightning.predict import main as predict_main
from wsol_lightning.predict import model_from_checkpoint
from wsol_lightning.resume import read_checkpoint

_CLI_WARNINGS = pytest.mark.filterwarnings("ignore::DeprecationWarning:jsonargparse.*",
                                           "ignore::DeprecationWarning:lightning.pytorch.cli")


def _best(fitted_run):
    (best,) = fitted_run.checkpoints.glob("best-epoch*.ckpt")
    return best


def _evaluate(maps, synthetic_root, *flags, cwd):
    result = run_script("evaluate.py", "--scoremap-root", str(maps), "--metadata-root",
                        str(synthetic_root / "metadata"), "--dataset-name", "synthetic", "--split", "test", *flags,
                        "--json", str(cwd / "e.json"), cwd=cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads((cwd / "e.json").read_text())


@pytest.mark.slow
def test_round_trip_printed_metrics_equal_fit_and_evaluate_on_the_saved_maps(fitted_run, tmp_path):
    best = _best(fitted_run)
    assert best.name != "best-epoch02.ckpt"  # the best is not the last epoch: the test below tells them apart
    maps, report = tmp_path / "maps", tmp_path / "out" / "metrics.json"
    result = run_script("predict.py", "--ckpt_path", str(best), "--split", "test", "--save_scoremaps", str(maps),
                        "--json", str(report), "--figure", str(tmp_path / "grid.png"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # The data are the checkpoint's own (its data root, 32 test images), the lines fit.py's test printed.
    assert "evaluated 32 images of synthetic/test" in result.stdout
    printed = metric_lines(result.stdout, "test/")
    assert len(printed) == 9 and printed == metric_lines(fitted_run.stdout, "test/")

    written = json.loads(report.read_text())
    metrics = written["metrics"]
    assert written["num_images"] == 32 and written["checkpoint"] == str(best)
    (synthetic_root,) = fitted_run.data_root.glob("synthetic-*")
    metadata = load_metadata(synthetic_root / "metadata", "synthetic", "test")
    files = sorted(maps.rglob("*.npy"))
    assert len(files) == 32 and files[0] == maps / (metadata.image_ids[0] + ".npy")  # ids with folders: subfolders
    loaded = [np.load(maps / (image_id + ".npy")) for image_id in metadata.image_ids]
    assert all(m.shape == (224, 224) and m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1 for m in loaded)

    v2 = _evaluate(maps, synthetic_root, "--multi-contour-eval", "--multi-iou-eval", cwd=tmp_path)
    assert v2["localization"] == pytest.approx(metrics["test/MaxBoxAccV2"], abs=1e-4)
    for iou in ("30", "50", "70"):
        assert v2["max_box_acc"][iou] == pytest.approx(metrics[f"test/MaxBoxAccV2_IoU{iou}"], abs=1e-4)
    v1 = _evaluate(maps, synthetic_root, cwd=tmp_path)
    assert v1["max_box_acc"]["50"] == pytest.approx(metrics["test/MaxBoxAcc"], abs=1e-4)
    masks = [load_gt_mask(str(synthetic_root / "masks" / "synthetic"), metadata.mask_paths[i],
                          metadata.ignore_paths.get(i, "")) for i in metadata.image_ids]
    assert pxap(loaded, masks, 0.01) == pytest.approx(metrics["test/PxAP"], abs=1e-4)
    assert shlex.split(written["evaluate_command"])[1:] == [
        "scripts/evaluate.py", "--scoremap-root", str(maps), "--metadata-root", str(synthetic_root / "metadata"),
        "--dataset-name", "synthetic", "--split", "test", "--multi-contour-eval", "--multi-iou-eval"]
    assert (tmp_path / "grid.png").stat().st_size > 10_000


@_CLI_WARNINGS
def test_val_split_of_the_last_checkpoint_equals_fits_last_epoch_with_another_batch_size(fitted_run, capsys):
    assert predict_main(["--ckpt_path", str(fitted_run.checkpoints / "last.ckpt"), "--split", "val",
                         "--data.batch_size", "5", "--trainer.enable_progress_bar", "false"]) == 0
    out = capsys.readouterr().out
    assert "evaluated 32 images of synthetic/val" in out
    assert metric_lines(out, "val/") == metric_lines(fitted_run.stdout, "val/")


def _refusal(capsys, *args):
    with pytest.raises(SystemExit) as info:
        predict_main(list(args))
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    return err.strip().splitlines()[-1]


@_CLI_WARNINGS
def test_bad_checkpoints_are_one_line_errors(fitted_run, tmp_path, capsys):
    last = fitted_run.checkpoints / "last.ckpt"
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(last.read_bytes()[:200_000])
    assert _refusal(capsys, "--ckpt_path", str(truncated)).startswith(f"error: {truncated}: truncated or corrupt")
    diverged = tmp_path / "diverged.ckpt"
    nan_checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    name = next(k for k, v in nan_checkpoint["state_dict"].items() if v.is_floating_point())
    nan_checkpoint["state_dict"][name] = torch.full_like(nan_checkpoint["state_dict"][name], float("nan"))
    torch.save(nan_checkpoint, diverged)
    assert _refusal(capsys, "--ckpt_path", str(diverged)) == (
        f"error: {diverged}: 1 weight tensors hold NaN or infinite values (e.g. {name}): the checkpoint of a diverged run")
    (tmp_path / "afile").write_text("")  # outputs that could not be written are refused before evaluating
    assert _refusal(capsys, "--ckpt_path", str(last), "--json", str(tmp_path / "afile" / "m.json")) == (
        f"error: --json {tmp_path / 'afile' / 'm.json'}: {tmp_path / 'afile'} is not a directory")
    assert _refusal(capsys, "--ckpt_path", str(last), "--save_scoremaps", str(tmp_path / "afile")) == (
        f"error: --save_scoremaps {tmp_path / 'afile'}: not a directory")
    assert _refusal(capsys, "--ckpt_path", str(last), "--split", "train").startswith(
        "error: --split: Expected a typing.Literal['val', 'test']. Got value: train")
    weights = tmp_path / "backbone.pth"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    torch.save({k[len("method.backbone."):]: v for k, v in checkpoint["state_dict"].items()
                if k.startswith("method.backbone.")}, weights)
    assert _refusal(capsys, "--ckpt_path", str(weights)) == (
        f"error: {weights}: not a checkpoint of wsol_lightning's fit.py (it looks like a state dict of "
        f"wsol_lightning's small backbone); a backbone's weights are pretrained weights of fit.py, not a checkpoint "
        f"to evaluate")
    assert _refusal(capsys, "--ckpt_path", str(tmp_path / "nope.ckpt")) == \
        f"error: {tmp_path / 'nope.ckpt'}: checkpoint not found"


def test_a_checkpoint_whose_weights_are_of_another_method_is_refused(fitted_run):
    path = str(fitted_run.checkpoints / "last.ckpt")
    checkpoint = dict(read_checkpoint(path))
    checkpoint["hyper_parameters"] = dict(checkpoint["hyper_parameters"], wsol_method="acol")
    message = one_line_error(model_from_checkpoint, path, checkpoint)
    assert message.startswith(f"{path}: its weights do not fit the small / acol model it records: ")
    assert "missing (e.g. method.classifier_a." in message


@_CLI_WARNINGS
def test_data_whose_labels_the_model_lacks_is_refused(fitted_run, tmp_path, capsys):
    split = tmp_path / "metadata" / "CUB" / "test"  # two images of classes 0 and 7: the model has 5 classes
    split.mkdir(parents=True)
    ids = ["a/1.jpg", "b/2.jpg"]
    (split / "image_ids.txt").write_text("".join(f"{i}\n" for i in ids))
    (split / "class_labels.txt").write_text(f"{ids[0]},0\n{ids[1]},7\n")
    (split / "image_sizes.txt").write_text("".join(f"{i},100,80\n" for i in ids))
    (split / "localization.txt").write_text("".join(f"{i},10,10,50,40\n" for i in ids))
    (tmp_path / "images" / "CUB").mkdir(parents=True)
    last = fitted_run.checkpoints / "last.ckpt"
    line = _refusal(capsys, "--ckpt_path", str(last), "--data.dataset_name", "CUB", "--data.data_root",
                    str(tmp_path / "images"), "--data.metadata_root", str(tmp_path / "metadata"))
    assert line == f"error: {last}: a model of 5 classes cannot evaluate CUB/test, whose labels go up to 7"
