"""scripts/evaluate.py: reference numbers on saved maps, both flag spellings, one-line refusals."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench_evaluator import make_maps
from tests.fixtures import WSOLEVAL_FIXTURES
from tests.one_line import one_line_error
from tests.reference_wsol_metrics import gt_boxes_from_files, gt_mask, mask_paths_from_files, max_box_acc_both, pxap
from wsol_lightning.data.metadata import load_metadata

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = WSOLEVAL_FIXTURES
MASKED = ("1cd9ac0169ec7df0", "3a29f0b33894d4a6", "3b3b9931325d65c9", "490365f63135f3e0", "b4d953e7105da1d8")


def evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), *args], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def box_maps(tmp_path_factory):
    directory = tmp_path_factory.mktemp("maps")
    make_maps(directory, 40, seed=3)  # original sizes 300-500 px: the rescale to 224 matters
    return directory


@pytest.fixture(scope="module")
def box_reference(box_maps):
    """The reference's (V1, V2) at IoU 30/50/70 on the saved maps, with GT boxes read from the text files."""
    folder = box_maps / "metadata" / "CUB" / "test"
    image_ids = (folder / "image_ids.txt").read_text().splitlines()
    gt_boxes = gt_boxes_from_files(folder)
    maps = [np.load(box_maps / "scoremaps" / (i + ".npy")) for i in image_ids]
    return max_box_acc_both(maps, [gt_boxes[i] for i in image_ids], 0.01, [30, 50, 70])


@pytest.mark.parametrize("multi,workers", [(False, "1"), (True, "2")])
def test_box_results_equal_the_reference(box_maps, box_reference, tmp_path, multi, workers):
    """Largest contour at IoU 50, and every contour averaged over IoU 30/50/70, in 1 and 2 processes."""
    flags = ["--multi-contour-eval", "--multi-iou-eval"] if multi else []
    out = tmp_path / "result.json"
    result = evaluate("--scoremap_root", str(box_maps / "scoremaps"), "--metadata_root", str(box_maps / "metadata"),
                      "--dataset_name", "CUB", "--split", "test", "--json", str(out), "--workers", workers, *flags)
    assert result.returncode == 0, result.stderr
    ious = [30, 50, 70] if multi else [50]
    ref_v1, ref_v2 = box_reference
    expected = ref_v2 if multi else [ref_v1[1]]
    written = json.loads(out.read_text())
    assert written["num_images"] == 40
    assert [written["max_box_acc"][str(k)] for k in ious] == pytest.approx(expected, abs=1e-6)
    assert written["localization"] == pytest.approx(float(np.mean(expected)), abs=1e-6)


def test_pxap_on_real_openimages_masks(tmp_path):
    """PxAP of the reference on masks it decodes itself (union of instances, ignore region, 224 nearest)."""
    metadata_dir = tmp_path / "metadata" / "OpenImages" / "val"
    metadata_dir.mkdir(parents=True)
    source = FIXTURES / "metadata" / "OpenImages" / "val"
    for name in ("image_ids", "class_labels", "localization"):
        lines = [line for line in (source / f"{name}.txt").read_text().splitlines() if any(m in line for m in MASKED)]
        (metadata_dir / f"{name}.txt").write_text("\n".join(lines) + "\n")
    (metadata_dir / "image_sizes.txt").write_text("")
    mask_paths, ignore_paths = mask_paths_from_files(metadata_dir)
    rng = np.random.default_rng(0)
    maps, masks = [], []
    for image_id in (metadata_dir / "image_ids.txt").read_text().splitlines():
        mask = gt_mask(str(FIXTURES / "masks" / "OpenImages"), mask_paths[image_id], ignore_paths[image_id])
        scoremap = np.clip((mask == 1) * 0.6 + rng.random((224, 224)) * 0.5, 0, 1).astype(np.float32)
        path = tmp_path / "maps" / (image_id + ".npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, scoremap)
        maps.append(scoremap)
        masks.append(mask)
    assert sum(int((m == 255).sum()) for m in masks) > 1000  # the ignore region is exercised
    out = tmp_path / "pxap.json"
    result = evaluate("--scoremap-root", str(tmp_path / "maps"), "--metadata-root", str(tmp_path / "metadata"),
                      "--mask-root", str(FIXTURES / "masks"), "--dataset-name", "OpenImages", "--split", "val",
                      "--json", str(out))
    assert result.returncode == 0, result.stderr
    written = json.loads(out.read_text())
    assert written["pxap"] == pytest.approx(pxap(maps, masks, 0.01), abs=1e-6)
    assert written["num_images"] == 5


def test_reference_spellings_with_boolean_values(box_maps, box_reference, tmp_path):
    """The reference's own command line (underscores, ``true``/``True`` values) gives the reference's numbers."""
    result = evaluate("--dataset_name", "CUB", "--split", "test", "--scoremap_root", str(box_maps / "scoremaps"),
                      "--metadata_root", str(box_maps / "metadata"), "--multi_contour_eval", "true",
                      "--multi_iou_eval", "True", "--cam_curve_interval", "0.01", "--iou_threshold_list", "30", "50",
                      "70", "--json", str(tmp_path / "a.json"))
    assert result.returncode == 0, result.stderr
    written = json.loads((tmp_path / "a.json").read_text())
    expected = float(np.mean(box_reference[1]))
    assert written["localization"] == pytest.approx(expected, abs=1e-6)
    assert result.stdout.strip().splitlines()[-1] == f"localization: {expected:.4f}"


def test_a_bad_map_stops_the_process_with_one_line(box_maps, tmp_path):
    """The whole process: exit status 2 and the last stderr line names the image (more cases in-process below)."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(box_maps, copy)
    (copy / "scoremaps" / "bench" / "00007.jpg.npy").unlink()
    result = evaluate("--scoremap-root", str(copy / "scoremaps"), "--metadata-root", str(copy / "metadata"),
                      "--dataset-name", "CUB", "--split", "test")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (f"error: bench/00007.jpg: score map file missing "
                                                      f"({copy / 'scoremaps' / 'bench' / '00007.jpg.npy'})")


def test_a_nan_map_met_by_a_forked_worker_stops_the_process_with_one_line(box_maps, tmp_path):
    """Maps are read in the workers: the error crosses back from whichever process met it."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(box_maps, copy)
    np.save(copy / "scoremaps" / "bench" / "00031.jpg.npy", np.full((224, 224), np.nan, np.float32))
    result = evaluate("--scoremap-root", str(copy / "scoremaps"), "--metadata-root", str(copy / "metadata"),
                      "--dataset-name", "CUB", "--split", "test", "--multi-contour-eval", "--workers", "2")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == ["error: bench/00031.jpg: score map contains NaN"]


@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_are_one_line_and_write_nothing(three_maps, monkeypatch, capsys, signum, status):
    import wsol_lightning.evaluate as evaluate_module

    def interrupted(*args, **kwargs):  # the signal arrives while the maps are being evaluated
        os.kill(os.getpid(), signum)

    monkeypatch.setattr(evaluate_module, "evaluate_scoremaps", interrupted)
    out = three_maps / "out.json"
    exit_status = evaluate_module.main(["--scoremap-root", str(three_maps / "scoremaps"), "--metadata-root",
                                        str(three_maps / "metadata"), "--dataset-name", "CUB", "--split", "test",
                                        "--json", str(out)])
    captured = capsys.readouterr()
    assert exit_status == status and not out.exists() and captured.out == ""
    assert captured.err == f"evaluate.py: interrupted by {signum.name}; no result was written\n"


def refusal(*argv: str) -> str:
    """evaluate.py's main run in this process through the scripts' guard: the one line the user reads."""
    from wsol_lightning.evaluate import main

    return one_line_error(main.__wrapped__, list(argv))


@pytest.fixture
def three_maps(tmp_path):
    """Three saved maps with CUB-style test metadata (a fresh copy per test: tests corrupt it)."""
    make_maps(tmp_path, 3, seed=4)
    return tmp_path


@pytest.mark.parametrize("corrupt,message", [
    (lambda p: p.unlink(), "score map file missing"),
    (lambda p: np.save(p, np.full((224, 224), np.nan, np.float32)), "score map contains NaN"),
    (lambda p: np.save(p, np.zeros((100, 224), np.float32)), "score map has shape (100, 224), expected (224, 224)"),
    (lambda p: np.save(p, np.full((224, 224), 1.5)), "score map values outside [0, 1] (min 1.5, max 1.5)"),
    (lambda p: np.save(p, np.zeros((224, 224), np.int64)), "score map dtype int64, expected float32 or float64"),
    (lambda p: np.save(p, np.zeros((224, 224), np.float16)), "score map dtype float16, expected float32 or float64"),
    (lambda p: p.write_bytes(b"not a numpy file"), "score map unreadable ("),
    (lambda p: np.save(p, np.array([{}], dtype=object)), "score map unreadable ("),  # pickles are refused
])
def test_bad_maps_are_refused_naming_the_image(three_maps, corrupt, message):
    corrupt(three_maps / "scoremaps" / "bench" / "00001.jpg.npy")
    got = refusal("--scoremap-root", str(three_maps / "scoremaps"), "--metadata-root", str(three_maps / "metadata"),
                  "--dataset-name", "CUB", "--split", "test", "--multi-contour-eval")
    assert got.startswith(f"bench/00001.jpg: {message}"), got


def test_split_without_boxes_is_refused(three_maps):
    """A labels-only split (the benchmark's train) has nothing to localize against."""
    folder = three_maps / "metadata" / "CUB" / "train"
    folder.mkdir()
    for name in ("image_ids", "class_labels"):
        (folder / f"{name}.txt").write_text((three_maps / "metadata" / "CUB" / "test" / f"{name}.txt").read_text())
    (folder / "localization.txt").write_text("")
    got = refusal("--scoremap-root", str(three_maps / "scoremaps"), "--metadata-root", str(three_maps / "metadata"),
                  "--dataset-name", "CUB", "--split", "train")
    assert got == f"bench/00000.jpg: no ground-truth box in the metadata ({folder})"


def test_openimages_split_without_masks_and_without_mask_root_is_refused(tmp_path):
    folder = tmp_path / "metadata" / "OpenImages" / "train"
    folder.mkdir(parents=True)
    (folder / "image_ids.txt").write_text("train/a.jpg\n")
    (folder / "class_labels.txt").write_text("train/a.jpg,3\n")
    (folder / "image_sizes.txt").write_text("")
    (folder / "localization.txt").write_text("")
    (tmp_path / "maps" / "train").mkdir(parents=True)
    np.save(tmp_path / "maps" / "train" / "a.jpg.npy", np.zeros((224, 224), np.float32))
    args = ["--scoremap-root", str(tmp_path / "maps"), "--metadata-root", str(tmp_path / "metadata"),
            "--dataset-name", "OpenImages", "--split", "train"]
    assert refusal(*args) == "--mask-root: required for OpenImages (masks under <mask_root>/OpenImages/)"
    assert refusal(*args, "--mask-root", str(tmp_path)) == f"train/a.jpg: no mask in the metadata ({folder})"


@pytest.mark.parametrize("flags,message", [
    (["--iou-threshold-list", "30", "70"], "--iou-threshold-list 30 70: must contain 50 without --multi-iou-eval"),
    (["--cam-curve-interval", "1.5"], "--cam-curve-interval=1.5 must be in (0, 1)"),
    (["--multi-contour-eval", "maybe"], "evaluate.py: argument --multi-contour-eval/--multi_contour_eval: "
                                        "boolean value expected, got 'maybe'"),
    (["--workers", "0"], "--workers=0 must be >= 1"),
])
def test_bad_flags_are_refused_in_one_line(three_maps, flags, message):
    got = refusal("--scoremap-root", str(three_maps / "scoremaps"), "--metadata-root", str(three_maps / "metadata"),
                  "--dataset-name", "CUB", "--split", "test", *flags)
    assert got.startswith(message), got


def test_an_unwritable_json_path_is_refused_before_evaluating(three_maps):
    (three_maps / "afile").write_text("")
    (three_maps / "adir").mkdir()
    args = ["--scoremap-root", str(three_maps / "scoremaps"), "--metadata-root", str(three_maps / "metadata"),
            "--dataset-name", "CUB", "--split", "test"]
    under_a_file = three_maps / "afile" / "out.json"
    assert refusal(*args, "--json", str(under_a_file)) == f"--json {under_a_file}: {three_maps / 'afile'} is not a " \
                                                          f"directory"
    assert refusal(*args, "--json", str(three_maps / "adir")) == f"--json {three_maps / 'adir'}: is a directory"


def test_image_id_absent_from_the_metadata_is_refused(three_maps):
    from wsol_lightning.evaluate import evaluate_scoremaps

    metadata = load_metadata(three_maps / "metadata", "CUB", "test")
    message = one_line_error(evaluate_scoremaps, str(three_maps / "scoremaps"), metadata,
                             image_ids=["bench/00000.jpg", "bench/99999.jpg"])
    assert message == f"bench/99999.jpg: image id not in the metadata of CUB/test ({metadata.directory})"
