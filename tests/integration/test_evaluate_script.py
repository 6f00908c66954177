"""scripts/evaluate.py: reference numbers on saved maps, both flag spellings, one-line refusals."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench_evaluator import make_maps
from tests.reference_wsol_metrics import max_box_acc, pxap
from wsol_lightning.data.metadata import load_metadata
from wsol_lightning.metrics.masks import load_gt_mask

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "wsolevaluation"
MASKED = ("1cd9ac0169ec7df0", "3a29f0b33894d4a6", "3b3b9931325d65c9", "490365f63135f3e0", "b4d953e7105da1d8")


def evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), *args], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def box_maps(tmp_path_factory):
    directory = tmp_path_factory.mktemp("maps")
    make_maps(directory, 80, seed=3)
    return directory


@pytest.mark.parametrize("multi", [False, True])
def test_box_results_equal_the_reference(box_maps, tmp_path, multi):
    flags = ["--multi-contour-eval", "--multi-iou-eval"] if multi else []
    out = tmp_path / "result.json"
    result = evaluate("--scoremap_root", str(box_maps / "scoremaps"), "--metadata_root", str(box_maps / "metadata"),
                      "--dataset_name", "CUB", "--split", "test", "--json", str(out), *flags)
    assert result.returncode == 0, result.stderr
    metadata = load_metadata(box_maps / "metadata", "CUB", "test")
    maps = [np.load(box_maps / "scoremaps" / (i + ".npy")) for i in metadata.image_ids]
    boxes = [metadata.resized_boxes(i) for i in metadata.image_ids]
    ious = [30, 50, 70] if multi else [50]
    expected = max_box_acc(maps, boxes, 0.01, multi, ious)
    written = json.loads(out.read_text())
    assert written["num_images"] == 80
    assert [written["max_box_acc"][str(k)] for k in ious] == pytest.approx(expected, abs=1e-6)
    assert written["localization"] == pytest.approx(float(np.mean(expected)), abs=1e-6)


def test_pxap_on_real_openimages_masks(tmp_path):
    metadata_dir = tmp_path / "metadata" / "OpenImages" / "val"
    metadata_dir.mkdir(parents=True)
    source = FIXTURES / "metadata" / "OpenImages" / "val"
    for name in ("image_ids", "class_labels", "localization"):
        lines = [line for line in (source / f"{name}.txt").read_text().splitlines() if any(m in line for m in MASKED)]
        (metadata_dir / f"{name}.txt").write_text("\n".join(lines) + "\n")
    (metadata_dir / "image_sizes.txt").write_text("")
    metadata = load_metadata(tmp_path / "metadata", "OpenImages", "val")
    rng = np.random.default_rng(0)
    maps, masks = [], []
    for image_id in metadata.image_ids:
        mask = load_gt_mask(str(FIXTURES / "masks" / "OpenImages"), metadata.mask_paths[image_id],
                            metadata.ignore_paths[image_id])
        scoremap = np.clip((mask == 1) * 0.6 + rng.random((224, 224)) * 0.5, 0, 1).astype(np.float32)
        path = tmp_path / "maps" / (image_id + ".npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, scoremap)
        maps.append(scoremap)
        masks.append(mask)
    out = tmp_path / "pxap.json"
    result = evaluate("--scoremap-root", str(tmp_path / "maps"), "--metadata-root", str(tmp_path / "metadata"),
                      "--mask-root", str(FIXTURES / "masks"), "--dataset-name", "OpenImages", "--split", "val",
                      "--json", str(out))
    assert result.returncode == 0, result.stderr
    written = json.loads(out.read_text())
    assert written["pxap"] == pytest.approx(pxap(maps, masks, 0.01), abs=1e-6)
    assert written["num_images"] == 5


@pytest.mark.parametrize("corrupt,message", [
    (lambda p: p.unlink(), "score map file missing"),
    (lambda p: np.save(p, np.full((224, 224), np.nan, np.float32)), "score map contains NaN"),
    (lambda p: np.save(p, np.zeros((100, 224), np.float32)), "score map has shape (100, 224)"),
    (lambda p: np.save(p, np.full((224, 224), 1.5)), "score map values outside [0, 1]"),
])
def test_bad_maps_are_refused_naming_the_image(box_maps, tmp_path, corrupt, message):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(box_maps, copy)
    corrupt(copy / "scoremaps" / "bench" / "00007.jpg.npy")
    result = evaluate("--scoremap-root", str(copy / "scoremaps"), "--metadata-root", str(copy / "metadata"),
                      "--dataset-name", "CUB", "--split", "test")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: bench/00007.jpg: ") and message in last, last


def test_reference_spellings_with_boolean_values_equal_the_dashed_flags(box_maps, tmp_path):
    common = ["--dataset_name", "CUB", "--split", "test", "--scoremap_root", str(box_maps / "scoremaps"),
              "--metadata_root", str(box_maps / "metadata")]
    underscore = evaluate(*common, "--multi_contour_eval", "true", "--multi_iou_eval", "True",
                          "--cam_curve_interval", "0.01", "--iou_threshold_list", "30", "50", "70",
                          "--json", str(tmp_path / "a.json"))
    dashed = evaluate(*common, "--multi-contour-eval", "--multi-iou-eval", "--json", str(tmp_path / "b.json"))
    assert underscore.returncode == 0 and dashed.returncode == 0, underscore.stderr + dashed.stderr
    assert json.loads((tmp_path / "a.json").read_text()) == json.loads((tmp_path / "b.json").read_text())
    assert underscore.stdout.strip().splitlines()[-1].startswith("localization: ")


@pytest.mark.parametrize("flags,message", [
    (["--iou-threshold-list", "30", "70"], "must contain 50"),
    (["--cam-curve-interval", "1.5"], "must be in (0, 1)"),
    (["--multi-contour-eval", "maybe"], "boolean value expected"),
])
def test_bad_flags_are_refused_in_one_line(box_maps, flags, message):
    result = evaluate("--scoremap-root", str(box_maps / "scoremaps"), "--metadata-root", str(box_maps / "metadata"),
                      "--dataset-name", "CUB", "--split", "test", *flags)
    assert result.returncode == 2
    assert message in result.stderr.strip().splitlines()[-1]


def test_image_id_absent_from_the_metadata_is_refused(box_maps):
    from wsol_lightning.errors import WSOLInputError
    from wsol_lightning.evaluate import evaluate_scoremaps

    metadata = load_metadata(box_maps / "metadata", "CUB", "test")
    with pytest.raises(WSOLInputError, match="^bench/99999.jpg: image id not in the metadata"):
        evaluate_scoremaps(str(box_maps / "scoremaps"), metadata, image_ids=["bench/00000.jpg", "bench/99999.jpg"])
