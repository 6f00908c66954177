"""WSOLDataset items and collate, on generated images with real-layout metadata."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from torchvision import transforms

from tests.fixtures import WSOLEVAL_FIXTURES
from wsol_lightning.data.datasets import IMAGENET_MEAN, IMAGENET_STD, WSOLDataset, collate
from wsol_lightning.data.metadata import load_metadata
from wsol_lightning.errors import WSOLInputError

FIXTURES = WSOLEVAL_FIXTURES
IMAGENET = (IMAGENET_MEAN, IMAGENET_STD)
OPENIMAGES_IDS = ["val/0bt_c3/3a29f0b33894d4a6.jpg", "val/0bt_c3/1cd9ac0169ec7df0.jpg", "val/0by6g/490365f63135f3e0.jpg"]


def _write_image(path: Path, size, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _box_split(tmp_path, split="val"):
    """A CUB-style split of three images, the second with two boxes."""
    folder = tmp_path / "metadata" / "CUB" / split
    folder.mkdir(parents=True)
    images = {"a/1.jpg": ((100, 80), [(10, 5, 60, 70)]),
              "a/2.jpg": ((50, 120), [(0, 0, 50, 120), (5, 6, 20, 30)]),
              "b/3.jpg": ((64, 64), [(1, 2, 3, 4)])}
    (folder / "image_ids.txt").write_text("\n".join(images))
    (folder / "class_labels.txt").write_text("\n".join(f"{k},{i}" for i, k in enumerate(images)))
    (folder / "image_sizes.txt").write_text("\n".join(f"{k},{w},{h}" for k, ((w, h), _) in images.items()))
    (folder / "localization.txt").write_text("\n".join(f"{k},{','.join(map(str, b))}"
                                                       for k, (_, boxes) in images.items() for b in boxes))
    for index, (image_id, (size, _)) in enumerate(images.items()):
        _write_image(tmp_path / "images" / "CUB" / image_id, size, index)
    return load_metadata(tmp_path / "metadata", "CUB", split)


def test_train_items_are_resized_uint8_pixels(tmp_path):
    metadata = _box_split(tmp_path, "train")
    dataset = WSOLDataset(metadata, tmp_path / "images" / "CUB", 40, IMAGENET)
    item = dataset[1]
    assert set(item) == {"image", "label"}
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (40, 40, 3)
    expected = transforms.Resize((40, 40))(Image.open(tmp_path / "images" / "CUB" / "a" / "2.jpg").convert("RGB"))
    assert np.array_equal(item["image"].numpy(), np.asarray(expected))
    assert item["label"].dtype == torch.int64 and int(item["label"]) == 1


def test_eval_items_are_torchvisions_eval_transform_with_ids_and_boxes_at_224(tmp_path):
    metadata = _box_split(tmp_path)
    dataset = WSOLDataset(metadata, tmp_path / "images" / "CUB", 48, IMAGENET)
    item = dataset[1]
    assert set(item) == {"image", "label", "image_id", "gt_boxes"}
    assert item["image"].shape == (3, 48, 48) and item["image_id"] == "a/2.jpg"
    reference = transforms.Compose([transforms.Resize((48, 48)), transforms.ToTensor(),
                                    transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    assert torch.equal(item["image"], reference(Image.open(tmp_path / "images" / "CUB" / "a" / "2.jpg").convert("RGB")))
    assert item["image"].is_contiguous()
    assert item["gt_boxes"].dtype == torch.int64
    assert item["gt_boxes"].tolist() == [[0, 0, 224, 224], [22, 11, 89, 56]]


def test_eval_items_are_normalized_with_the_given_statistics(tmp_path):
    metadata = _box_split(tmp_path)
    Image.new("RGB", (100, 80), (128, 128, 128)).save(tmp_path / "images" / "CUB" / "a" / "1.jpg")
    image = WSOLDataset(metadata, tmp_path / "images" / "CUB", 16, ((0.5,) * 3, (0.25,) * 3))[0]["image"]
    assert image.shape == (3, 16, 16)
    assert torch.allclose(image, torch.full_like(image, (128 / 255 - 0.5) / 0.25), atol=1e-5)


def test_collate_pads_boxes_with_minus_one(tmp_path):
    metadata = _box_split(tmp_path)
    dataset = WSOLDataset(metadata, tmp_path / "images" / "CUB", 32, IMAGENET)
    batch = collate([dataset[0], dataset[1], dataset[2]])
    assert batch["image"].shape == (3, 3, 32, 32) and batch["label"].tolist() == [0, 1, 2]
    assert batch["image_id"] == ["a/1.jpg", "a/2.jpg", "b/3.jpg"]
    boxes = batch["gt_boxes"]
    assert boxes.shape == (3, 2, 4) and boxes.dtype == torch.int64
    assert boxes[0, 1].tolist() == [-1, -1, -1, -1] and boxes[2, 1].tolist() == [-1, -1, -1, -1]
    assert boxes[1].tolist() == dataset[1]["gt_boxes"].tolist()


def test_mask_items_from_real_openimages_masks(tmp_path):
    folder = tmp_path / "metadata" / "OpenImages" / "val"
    folder.mkdir(parents=True)
    real = FIXTURES / "metadata" / "OpenImages" / "val"
    keep = lambda line: line.split(",")[0] in OPENIMAGES_IDS  # noqa: E731
    (folder / "image_ids.txt").write_text("\n".join(OPENIMAGES_IDS))
    for name in ("class_labels.txt", "localization.txt"):
        (folder / name).write_text("\n".join(filter(keep, (real / name).read_text().splitlines())))
    (folder / "image_sizes.txt").write_text("")
    for index, image_id in enumerate(OPENIMAGES_IDS):
        _write_image(tmp_path / "images" / "OpenImages" / image_id, (90, 70), index)
    metadata = load_metadata(tmp_path / "metadata", "OpenImages", "val")
    dataset = WSOLDataset(metadata, tmp_path / "images" / "OpenImages", 32, IMAGENET,
                          mask_dir=FIXTURES / "masks" / "OpenImages")
    item = dataset[0]  # two instance masks
    assert set(item) == {"image", "label", "image_id", "gt_mask"}
    mask = item["gt_mask"]
    assert mask.dtype == torch.uint8 and mask.shape == (224, 224)
    assert set(torch.unique(mask).tolist()) <= {0, 1, 255} and (mask == 1).any()
    batch = collate([dataset[0], dataset[1]])
    assert batch["gt_mask"].shape == (2, 224, 224) and "gt_boxes" not in batch
    with pytest.raises(WSOLInputError, match="mask folder"):
        WSOLDataset(metadata, tmp_path, 32, IMAGENET)


def test_missing_or_unreadable_image_names_the_path(tmp_path):
    metadata = _box_split(tmp_path)
    dataset = WSOLDataset(metadata, tmp_path / "images" / "CUB", 32, IMAGENET)
    missing = tmp_path / "images" / "CUB" / "a" / "1.jpg"
    missing.unlink()
    with pytest.raises(WSOLInputError) as info:
        dataset[0]
    assert str(info.value) == f"{missing}: image file not found"
    broken = tmp_path / "images" / "CUB" / "b" / "3.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(WSOLInputError) as info:
        dataset[2]
    assert str(info.value).startswith(f"{broken}: image file unreadable")
