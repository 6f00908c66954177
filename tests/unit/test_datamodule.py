"""WSOLDataModule: batches, lazy num_classes, early one-line refusals."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from wsol_lightning.data.datamodule import WSOLDataModule
from wsol_lightning.data.metadata import MetadataError
from tests.fixtures import WSOLEVAL_FIXTURES
from tests.one_line import one_line_error
from tests.reference_wsol_metrics import gt_boxes_from_files, gt_mask, mask_paths_from_files
from wsol_lightning.errors import WSOLInputError

FIXTURES = WSOLEVAL_FIXTURES
SMALL = dict(synthetic_num_train=40, synthetic_num_val=20, synthetic_num_test=12, batch_size=8, num_workers=0)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def test_num_classes_is_known_before_any_data(tmp_path):
    module = WSOLDataModule(data_root=str(tmp_path / "data"), **SMALL)
    assert module.num_classes == 5
    assert not (tmp_path / "data").exists()  # nothing generated yet
    assert (module.resize_size, module.crop_size, module.eval_size) == (72, 64, 64)
    assert module.hparams.batch_size == 8 and module.hparams.dataset_name == "synthetic"


def test_synthetic_batches(data_root):
    module = WSOLDataModule(data_root=str(data_root), **SMALL)
    module.prepare_data()
    module.setup("fit")
    assert module.has_masks
    mean, std = module.normalization
    assert len(mean) == 3 and len(std) == 3 and all(s > 0 for s in std)

    batch = next(iter(module.train_dataloader()))
    assert set(batch) == {"image", "label"}
    assert batch["image"].shape == (8, 72, 72, 3) and batch["image"].dtype == torch.uint8  # resized, not cropped
    batch = module.on_after_batch_transfer(batch, 0)  # crop, flip, normalize on the device
    assert batch["image"].shape == (8, 3, 64, 64) and batch["image"].dtype == torch.float32
    assert batch["label"].dtype == torch.int64 and batch["label"].max() < 5
    assert abs(float(batch["image"].mean())) < 0.5  # normalized with the data's own statistics

    batches = list(module.val_dataloader())
    assert sum(len(b["label"]) for b in batches) == 20 and len(batches) == 3  # drop_last=False
    batch = batches[0]
    assert set(batch) == {"image", "label", "image_id", "gt_boxes", "gt_mask"}
    assert batch["image"].shape == (8, 3, 64, 64)
    assert batch["gt_boxes"].shape == (8, 1, 4) and batch["gt_boxes"].dtype == torch.int64
    assert batch["gt_mask"].shape == (8, 224, 224) and batch["gt_mask"].dtype == torch.uint8
    assert batch["image_id"] == [f"val/{i:05d}.png" for i in range(8)]
    # GT as the reference reads it from the generated files: boxes rescaled to 224 by hand, masks decoded by cv2
    root = module.metadata_root.parent
    folder = module.metadata_root / "synthetic" / "val"
    boxes = gt_boxes_from_files(folder)
    mask_paths, ignore_paths = mask_paths_from_files(folder, "mask_localization.txt")
    for index, image_id in enumerate(batch["image_id"]):
        assert batch["gt_boxes"][index].tolist() == boxes[image_id], image_id
        expected = gt_mask(str(root / "masks" / "synthetic"), mask_paths[image_id], ignore_paths[image_id])
        assert np.array_equal(batch["gt_mask"][index].numpy(), expected), image_id
        # and the box is the tight box of the object mask, at the image's own 64 px
        ys, xs = np.nonzero(cv2.imread(str(root / "masks" / "synthetic" / mask_paths[image_id][0]), 0))
        line = next(x for x in (folder / "localization.txt").read_text().splitlines() if x.startswith(image_id + ","))
        assert [int(v) for v in line.split(",")[1:]] == [xs.min(), ys.min(), xs.max(), ys.max()], image_id

    module.setup("test")
    assert sum(len(b["label"]) for b in module.test_dataloader()) == 12


def test_workers_are_persistent(data_root):
    module = WSOLDataModule(data_root=str(data_root), **{**SMALL, "num_workers": 1})
    module.prepare_data()
    loader = module.train_dataloader()
    assert loader.persistent_workers and loader.num_workers == 1
    assert next(iter(loader))["image"].shape == (8, 72, 72, 3)


def _write_cub(root: Path):
    """A tiny CUB layout: 3 train, 3 val images, one val image with two boxes."""
    for split in ("train", "val"):
        folder = root / "metadata" / "CUB" / split
        folder.mkdir(parents=True)
        ids = [f"{split}/{i}.jpg" for i in range(3)]
        (folder / "image_ids.txt").write_text("\n".join(ids))
        (folder / "class_labels.txt").write_text("\n".join(f"{x},{i * 3}" for i, x in enumerate(ids)))
        (folder / "image_sizes.txt").write_text("\n".join(f"{x},80,60" for x in ids))
        boxes = [f"{x},10,10,40,50" for x in ids] + [f"{ids[1]},0,0,80,60"]
        (folder / "localization.txt").write_text("\n".join(boxes))
        for i, image_id in enumerate(ids):
            path = root / "CUB" / image_id
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((60, 80, 3), 40 * i, dtype=np.uint8)).save(path)


def test_real_layout_pads_boxes_and_uses_imagenet_statistics(tmp_path):
    _write_cub(tmp_path)
    module = WSOLDataModule(dataset_name="CUB", data_root=str(tmp_path), batch_size=3, num_workers=0,
                            resize_size=40, crop_size=32, eval_size=32)
    assert module.num_classes == 7
    assert module.normalization[0] == (0.485, 0.456, 0.406) and not module.has_masks
    module.setup("fit")
    assert module.on_after_batch_transfer(next(iter(module.train_dataloader())), 0)["image"].shape == (3, 3, 32, 32)
    batch = next(iter(module.val_dataloader()))
    assert "gt_mask" not in batch
    assert batch["gt_boxes"].shape == (3, 2, 4)
    assert batch["gt_boxes"][0, 1].tolist() == [-1, -1, -1, -1]
    assert batch["gt_boxes"][1].tolist() == [[28, 37, 112, 186], [0, 0, 224, 224]]


def test_real_defaults_and_metadata_errors_surface(tmp_path):
    module = WSOLDataModule(dataset_name="CUB", data_root=str(tmp_path), metadata_root=str(FIXTURES / "metadata"))
    assert (module.resize_size, module.crop_size, module.eval_size) == (256, 224, 224)
    assert module.num_classes == 200
    with pytest.raises(WSOLInputError) as info:
        module.setup("fit")
    assert str(info.value).startswith(f"{tmp_path / 'CUB'}: image folder not found (set --data.data_root")
    openimages = WSOLDataModule(dataset_name="OpenImages", data_root=str(tmp_path),
                                metadata_root=str(FIXTURES / "metadata"), mask_root=str(tmp_path))
    assert openimages.has_masks
    with pytest.raises(MetadataError, match="metadata folder not found"):
        WSOLDataModule(dataset_name="ILSVRC", data_root=str(tmp_path)).num_classes


@pytest.mark.parametrize("kwargs,flag", [
    ({"batch_size": 0}, "--data.batch_size=0"),
    ({"num_workers": -1}, "--data.num_workers=-1"),
    ({"resize_size": 64, "crop_size": 72}, "--data.crop_size=72 must not exceed --data.resize_size=64"),
    ({"crop_size": 100}, "--data.crop_size=100 must not exceed --data.resize_size=72"),
    ({"eval_size": 0}, "--data.eval_size=0"),
    ({"synthetic_num_val": 0}, "--data.synthetic_num_val=0"),
    ({"dataset_name": "VOC"}, "--data.dataset_name='VOC' must be one of"),
    ({"metadata_root": "meta"}, "--data.metadata_root='meta' is not used with --data.dataset_name=synthetic"),
])
def test_bad_flags_are_refused_at_construction(kwargs, flag):
    assert one_line_error(WSOLDataModule, **kwargs).startswith(flag)
