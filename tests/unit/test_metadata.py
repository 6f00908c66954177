"""Metadata reader: every real fixture loads; each malformed input is one precise line."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures import WSOLEVAL_FIXTURES
from tests.one_line import one_line_error
from wsol_lightning.data.metadata import MetadataError, load_metadata

FIXTURES = WSOLEVAL_FIXTURES / "metadata"
SPLITS = [("CUB", "train"), ("CUB", "val"), ("CUB", "test"), ("OpenImages", "val")]


def _lines(path: Path):
    return path.read_text().splitlines()


@pytest.mark.parametrize("dataset,split", SPLITS)
def test_real_fixtures_load_with_counts_matching_lines(dataset, split):
    metadata = load_metadata(FIXTURES, dataset, split)
    folder = FIXTURES / dataset / split
    ids = _lines(folder / "image_ids.txt")
    assert metadata.image_ids == tuple(ids)
    assert len(metadata.class_labels) == len(_lines(folder / "class_labels.txt")) == len(ids)
    localization = _lines(folder / "localization.txt")
    if dataset == "OpenImages":
        assert metadata.has_masks and not metadata.boxes and not metadata.image_sizes
        assert sum(len(paths) for paths in metadata.mask_paths.values()) == len(localization)
        assert set(metadata.ignore_paths) == set(ids)
        assert metadata.num_classes == 100
    else:
        assert not metadata.has_masks
        assert len(metadata.image_sizes) == len(ids)
        assert sum(len(boxes) for boxes in metadata.boxes.values()) == len(localization)
        assert metadata.num_classes == 200


def test_resized_boxes_are_the_benchmark_rescale_computed_by_hand(tmp_path):
    """``int(coord * 224 / side)`` per coordinate: truncation, not rounding; x by width, y by height."""
    metadata = load_metadata(FIXTURES, "CUB", "val")
    # CUB/val line 1: 001.Black_footed_Albatross/30107316117.jpg, 560x419, box 176,136,459,291:
    # 176*224/560 = 70.4, 136*224/419 = 72.70, 459*224/560 = 183.6, 291*224/419 = 155.57
    boxes = metadata.resized_boxes("001.Black_footed_Albatross/30107316117.jpg")
    assert boxes.dtype == np.int64 and boxes.tolist() == [[70, 72, 183, 155]]
    folder = tmp_path / "CUB" / "val"
    folder.mkdir(parents=True)
    (folder / "image_ids.txt").write_text("a.jpg\n")
    (folder / "class_labels.txt").write_text("a.jpg,0\n")
    (folder / "image_sizes.txt").write_text("a.jpg,300,200\n")
    # 1*224/300 = 0.747 (rounding would give 1), 199*224/200 = 222.88 (rounding: 223); a box touching the border
    (folder / "localization.txt").write_text("a.jpg,1,1,299,199\na.jpg,150,100,300,200\n")
    assert load_metadata(tmp_path, "CUB", "val").resized_boxes("a.jpg").tolist() == [[0, 1, 223, 222],
                                                                                      [112, 112, 224, 224]]
    assert load_metadata(FIXTURES, "OpenImages", "val").resized_boxes("a.jpg").shape == (0, 4)


@pytest.fixture
def cub(tmp_path):
    """A writable copy of CUB/val (1000 images) and CUB/train under tmp_path/metadata."""
    root = tmp_path / "metadata"
    for split in ("val", "train"):
        shutil.copytree(FIXTURES / "CUB" / split, root / "CUB" / split)
    return root


@pytest.fixture
def openimages(tmp_path):
    root = tmp_path / "metadata"
    shutil.copytree(FIXTURES / "OpenImages" / "val", root / "OpenImages" / "val")
    return root


def _edit(path: Path, lineno: int, text=None):
    """Replace line ``lineno`` (1-based) of ``path`` by ``text``, or delete it when text is None."""
    lines = _lines(path)
    if text is None:
        del lines[lineno - 1]
    else:
        lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n")


def _error(root, dataset="CUB", split="val") -> str:
    return one_line_error(load_metadata, root, dataset, split, expected=MetadataError)


def _val_line(root, name, lineno):
    return _lines(root / "CUB" / "val" / name)[lineno - 1]


def test_wrong_field_count(cub):
    path = cub / "CUB/val/class_labels.txt"
    _edit(path, 5, _val_line(cub, "class_labels.txt", 5) + ",7")
    message = _error(cub)
    assert message.startswith(f"{path}:5: expected 2 comma-separated fields")


def test_class_index_not_an_integer(cub):
    path = cub / "CUB/val/class_labels.txt"
    image_id = _val_line(cub, "class_labels.txt", 3).split(",")[0]
    _edit(path, 3, f"{image_id},bird")
    assert _error(cub) == f"{path}:3: class index is not an integer: 'bird'"


def test_negative_class_index(cub):
    path = cub / "CUB/val/class_labels.txt"
    image_id = _val_line(cub, "class_labels.txt", 7).split(",")[0]
    _edit(path, 7, f"{image_id},-1")
    assert _error(cub) == f"{path}:7: class index is negative: -1"


def test_id_in_labels_but_not_in_image_ids_names_both_files(cub):
    path = cub / "CUB/val/class_labels.txt"
    _edit(path, 10, "001.Black_footed_Albatross/unknown.jpg,0")
    message = _error(cub)
    assert message.startswith(f"{path}:10: image id '001.Black_footed_Albatross/unknown.jpg' is not in ")
    assert message.endswith(str(cub / "CUB/val/image_ids.txt"))


def test_image_without_a_box_names_both_files(cub):
    loc = cub / "CUB/val/localization.txt"
    image_id = _val_line(cub, "localization.txt", 12).split(",")[0]
    _edit(loc, 12)
    ids = _lines(cub / "CUB/val/image_ids.txt")
    message = _error(cub)
    assert message == (f"{cub / 'CUB/val/image_ids.txt'}:{ids.index(image_id) + 1}: image id {image_id!r} "
                       f"has no box line in {loc}")


def test_image_without_a_label(cub):
    labels = cub / "CUB/val/class_labels.txt"
    _edit(labels, 1)
    assert "has no class label line in" in _error(cub)


def test_duplicate_image_id(cub):
    path = cub / "CUB/val/image_ids.txt"
    _edit(path, 4, _val_line(cub, "image_ids.txt", 2))
    assert _error(cub).startswith(f"{path}:4: duplicate image id ") and "(first at line 2)" in _error(cub)


def test_box_with_x1_below_x0(cub):
    path = cub / "CUB/val/localization.txt"
    image_id, x0, y0, x1, y1 = _val_line(cub, "localization.txt", 20).split(",")
    _edit(path, 20, f"{image_id},{x1},{y0},{x0},{y1}")
    assert _error(cub).startswith(f"{path}:20: box ") and "x1 < x0" in _error(cub)


def test_box_outside_the_image_and_touching_border_allowed(cub):
    path = cub / "CUB/val/localization.txt"
    image_id, x0, y0, _, _ = _val_line(cub, "localization.txt", 30).split(",")
    width, height = (int(v) for v in _val_line(cub, "image_sizes.txt",
                                                _lines(cub / "CUB/val/image_ids.txt").index(image_id) + 1)
                     .split(",")[1:])
    _edit(path, 30, f"{image_id},{x0},{y0},{width},{height}")  # touching w, h exactly is allowed
    assert load_metadata(cub, "CUB", "val").boxes[image_id][0] == (int(x0), int(y0), width, height)
    _edit(path, 30, f"{image_id},{x0},{y0},{width + 1},{height}")
    message = _error(cub)
    assert message.startswith(f"{path}:30: box ") and f"outside the {width}x{height} image" in message
    _edit(path, 30, f"{image_id},-1,{y0},{width},{height}")
    assert _error(cub).startswith(f"{path}:30: box (-1,")


def test_non_integer_coordinate_and_size(cub):
    loc = cub / "CUB/val/localization.txt"
    image_id, x0, y0, x1, _ = _val_line(cub, "localization.txt", 2).split(",")
    _edit(loc, 2, f"{image_id},{x0},{y0},{x1},12.5")
    assert _error(cub) == f"{loc}:2: y1 is not an integer: '12.5'"
    shutil.copy(FIXTURES / "CUB/val/localization.txt", loc)
    sizes = cub / "CUB/val/image_sizes.txt"
    image_id = _val_line(cub, "image_sizes.txt", 8).split(",")[0]
    _edit(sizes, 8, f"{image_id},500,")
    assert _error(cub) == f"{sizes}:8: height is not an integer: ''"


def test_blank_line_is_refused(cub):
    path = cub / "CUB/val/localization.txt"
    lines = _lines(path)
    path.write_text("\n".join(lines[:5] + [""] + lines[5:]) + "\n")
    assert _error(cub).startswith(f"{path}:6: empty line")


def test_empty_split_and_missing_files(cub, tmp_path):
    ids = cub / "CUB/val/image_ids.txt"
    ids.write_text("")
    assert _error(cub) == f"{ids}: empty split (no image ids)"
    shutil.copy(FIXTURES / "CUB/val/image_ids.txt", ids)
    (cub / "CUB/val/localization.txt").unlink()
    assert _error(cub) == f"{cub / 'CUB/val/localization.txt'}: metadata file not found"
    assert _error(cub, split="test").startswith(f"{cub / 'CUB/test'}: metadata folder not found")
    assert _error(tmp_path / "nowhere").startswith(f"{tmp_path / 'nowhere/CUB/val'}: metadata folder not found")


def test_train_needs_labels_only(cub):
    folder = cub / "CUB/train"
    (folder / "localization.txt").write_text("")
    (folder / "image_sizes.txt").unlink()
    metadata = load_metadata(cub, "CUB", "train")
    assert len(metadata) == 5994 and not metadata.boxes and not metadata.image_sizes
    # but a partial localization file is not silently accepted
    shutil.copy(FIXTURES / "CUB/train/image_sizes.txt", folder / "image_sizes.txt")
    (folder / "localization.txt").write_text("\n".join(_lines(FIXTURES / "CUB/train/localization.txt")[:10]))
    assert "has no box line in" in _error(cub, split="train")


def test_val_without_localization_lines(cub):
    path = cub / "CUB/val/localization.txt"
    path.write_text("")
    assert _error(cub) == f"{path}: no localization lines (every val image needs a box)"


def test_openimages_ignore_path_only_on_first_mask_line(openimages):
    path = openimages / "OpenImages/val/localization.txt"
    lines = _lines(path)
    seen = set()
    for lineno, line in enumerate(lines, 1):
        image_id = line.split(",")[0]
        if image_id in seen:
            break
        seen.add(image_id)
    image_id, mask_path, _ = lines[lineno - 1].split(",")
    _edit(path, lineno, f"{image_id},{mask_path},val/x_ignore.png")
    assert _error(openimages, "OpenImages").startswith(f"{path}:{lineno}: ignore path given again for")


def test_openimages_wrong_layout_and_missing_mask(openimages):
    path = openimages / "OpenImages/val/localization.txt"
    image_id = _lines(path)[0].split(",")[0]
    _edit(path, 1, f"{image_id},1,2,3,4")
    assert _error(openimages, "OpenImages").startswith(f"{path}:1: expected 3 comma-separated fields "
                                                      f"(image_id,mask_path,ignore_path), got 5")
    _edit(path, 1, f"{image_id},,")
    assert _error(openimages, "OpenImages") == f"{path}:1: empty mask path"


def test_a_byte_order_mark_at_the_start_of_a_file_is_ignored(cub):
    plain = load_metadata(cub, "CUB", "val")
    for name in ("image_ids", "class_labels", "image_sizes", "localization"):  # as a Windows editor saves them
        path = cub / "CUB" / "val" / f"{name}.txt"
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    marked = load_metadata(cub, "CUB", "val")
    assert marked.image_ids == plain.image_ids and marked.class_labels == plain.class_labels
    assert all(np.array_equal(marked.resized_boxes(i), plain.resized_boxes(i)) for i in plain.image_ids)
