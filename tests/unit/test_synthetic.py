"""The embedded synthetic data: deterministic, consistent ground truth, hard for a centred guess, cached."""

import hashlib
import json
import multiprocessing
from pathlib import Path

import cv2
import numpy as np
import pytest

from wsol_lightning.data import synthetic
from wsol_lightning.data.metadata import load_metadata
from wsol_lightning.data.synthetic import STATS_FILE, SyntheticSpec, ensure_synthetic_dataset, synthetic_normalization
from wsol_lightning.errors import WSOLInputError

SPEC = SyntheticSpec(num_train=30, num_val=250, num_test=12)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return ensure_synthetic_dataset(tmp_path_factory.mktemp("data"), SPEC)


def _digest(root: Path):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != STATS_FILE}


def test_same_seed_gives_identical_bytes(root, tmp_path):
    again = ensure_synthetic_dataset(tmp_path, SPEC)
    assert again != root and again.name == root.name
    assert _digest(again) == _digest(root)
    assert synthetic_normalization(again) == synthetic_normalization(root)
    other = ensure_synthetic_dataset(tmp_path, SyntheticSpec(num_train=30, num_val=250, num_test=12, seed=1))
    assert other.name != root.name
    assert _digest(other)["synthetic/val/00000.png"] != _digest(root)["synthetic/val/00000.png"]


def test_layout_loads_with_the_metadata_reader(root):
    for split in ("train", "val", "test"):
        metadata = load_metadata(root / "metadata", "synthetic", split)
        assert len(metadata) == SPEC.split_size(split)
        assert metadata.num_classes == SPEC.num_classes
        assert metadata.has_boxes and metadata.has_masks == (split != "train")
        assert all((root / "synthetic" / image_id).is_file() for image_id in metadata.image_ids)
    labels = load_metadata(root / "metadata", "synthetic", "val").class_labels.values()
    assert np.bincount(list(labels)).min() == SPEC.num_val // SPEC.num_classes
    mean, std = synthetic_normalization(root)
    assert len(mean) == len(std) == 3 and all(0.2 < m < 0.8 for m in mean) and all(0.05 < s < 0.5 for s in std)


def test_boxes_are_inside_and_masks_agree_with_boxes(root):
    metadata = load_metadata(root / "metadata", "synthetic", "val")
    side = SPEC.image_size
    widths = []
    for image_id in metadata.image_ids:
        (box,) = metadata.boxes[image_id]
        x0, y0, x1, y1 = box
        assert 0 <= x0 <= x1 < side and 0 <= y0 <= y1 < side
        (mask_path,) = metadata.mask_paths[image_id]
        assert metadata.ignore_paths[image_id] == ""
        mask = cv2.imread(str(root / "masks" / "synthetic" / mask_path), cv2.IMREAD_GRAYSCALE)
        assert mask.shape == (side, side) and set(np.unique(mask)) <= {0, 255}
        ys, xs = np.nonzero(mask)
        assert (xs.min(), ys.min(), xs.max(), ys.max()) == box
        widths.append(max(x1 - x0 + 1, y1 - y0 + 1) / side)
    assert 0.25 <= min(widths) and max(widths) <= 0.9 and np.std(widths) > 0.08


def test_discriminative_mark_is_small_inside_the_object_and_on_nine_in_ten(root):
    """Fully saturated pixels (the class mark) exist only inside the object, cover a few % of it, and
    are there on about 90 % of the objects (``mark_probability``)."""
    metadata = load_metadata(root / "metadata", "synthetic", "val")
    fractions = []
    for image_id in metadata.image_ids:
        image = cv2.imread(str(root / "synthetic" / image_id))
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
        saturated = (hsv[..., 1] > 200) & (hsv[..., 2] > 200)
        mask = cv2.imread(str(root / "masks" / "synthetic" / metadata.mask_paths[image_id][0]), 0) > 0
        assert not (saturated & ~mask).any()
        if saturated.any():
            fractions.append(saturated.sum() / mask.sum())
    assert 0.84 < len(fractions) / len(metadata) < 0.96  # 250 draws of p = 0.9: +-3.5 standard deviations
    assert 0.02 < np.median(fractions) < 0.15


def _iou(a, b):
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0 + 1) * max(0, y1 - y0 + 1)
    area = lambda z: (z[2] - z[0] + 1) * (z[3] - z[1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_a_centred_box_scores_low(root):
    metadata = load_metadata(root / "metadata", "synthetic", "val")
    side = SPEC.image_size
    half = side * np.sqrt(0.5) / 2  # centred box of half the image area
    centred = (side / 2 - half, side / 2 - half, side / 2 + half - 1, side / 2 + half - 1)
    hits = [_iou(centred, metadata.boxes[i][0]) >= 0.5 for i in metadata.image_ids]
    assert np.mean(hits) < 0.35  # objects lie anywhere; a trained CAM reaches IoU 0.5 on 70-80 %


def test_cache_is_reused_without_regenerating(root, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("regenerated")

    monkeypatch.setattr(synthetic, "_generate", boom)
    assert ensure_synthetic_dataset(root.parent, SPEC) == root
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no temp folder left behind


def _ensure(path):
    return str(ensure_synthetic_dataset(path, SyntheticSpec(num_train=15, num_val=10, num_test=10)))


def test_racing_processes_get_one_complete_copy(tmp_path):
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(_ensure, [str(tmp_path)] * 2)
    assert results[0] == results[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [Path(results[0]).name]
    assert load_metadata(Path(results[0]) / "metadata", "synthetic", "test").has_masks


SMALL = SyntheticSpec(num_train=6, num_val=4, num_test=4)


def test_losing_the_race_keeps_the_winners_copy_and_removes_its_own(tmp_path, monkeypatch):
    """Deterministically the branch a racing loser takes: another process renames its copy into place
    while this one generates, so this one's rename fails and it returns the winner's folder."""
    final = synthetic.synthetic_root(tmp_path, SMALL)
    generate = synthetic._generate

    def generate_while_another_process_wins(folder, spec):
        stats = generate(folder, spec)
        (final / STATS_FILE).write_text(json.dumps(generate(final, spec)))  # the other process's complete copy
        (final / "winner").write_text("")
        return stats

    monkeypatch.setattr(synthetic, "_generate", generate_while_another_process_wins)
    assert ensure_synthetic_dataset(tmp_path, SMALL) == final
    assert (final / "winner").exists()  # the winner's copy is the one kept, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]  # the loser's copy is gone
    assert load_metadata(final / "metadata", "synthetic", "val").has_masks


def test_a_failed_rename_that_is_not_a_lost_race_is_raised(tmp_path, monkeypatch):
    final = synthetic.synthetic_root(tmp_path, SMALL)
    generate = synthetic._generate

    def generate_beside_a_stray_folder(folder, spec):
        final.mkdir()
        (final / "stray").write_text("")  # not a complete copy: no statistics file
        return generate(folder, spec)

    monkeypatch.setattr(synthetic, "_generate", generate_beside_a_stray_folder)
    with pytest.raises(OSError):
        ensure_synthetic_dataset(tmp_path, SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]  # no temporary folder left behind


def test_bad_spec_is_refused():
    with pytest.raises(WSOLInputError, match="num_classes"):
        SyntheticSpec(num_classes=1)
    with pytest.raises(WSOLInputError, match="object_size"):
        SyntheticSpec(object_size=(0.5, 0.2))
