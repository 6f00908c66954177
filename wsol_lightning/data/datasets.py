"""Torch datasets over a validated :class:`~wsol_lightning.data.metadata.Metadata` split.

Items are dicts. Training items: ``{"image": float32 [3, H, W], "label": int64}``.
Evaluation items (``val``/``test``) add ``"image_id"`` (str), ``"gt_boxes"`` (int64
``[K, 4]``, inclusive boxes rescaled to 224 as the benchmark does; box datasets)
and ``"gt_mask"`` (uint8 ``[224, 224]``: 1 object, 0 background, 255 ignored;
mask datasets). :func:`collate` batches them, padding ``gt_boxes`` to the batch's
largest ``K`` with rows of ``-1``.

Transforms follow wsolevaluation: training resizes to a square ``resize_size``,
crops ``crop_size`` at random and flips horizontally; evaluation resizes to a
square ``eval_size`` (no crop); both normalize with the given mean/std (ImageNet's
for real data, the data's own for ``synthetic``).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

from wsol_lightning.data.metadata import Metadata
from wsol_lightning.errors import WSOLInputError
from wsol_lightning.metrics.geometry import SCOREMAP_SIZE
from wsol_lightning.metrics.masks import load_gt_mask

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Value of padding rows in a batch's ``gt_boxes``.
BOX_PADDING = -1


def train_transform(resize_size: int, crop_size: int, mean: Sequence[float], std: Sequence[float]) -> Callable:
    """Resize to ``resize_size`` square, random crop ``crop_size``, horizontal flip, normalize."""
    return transforms.Compose([
        transforms.Resize((resize_size, resize_size)),
        transforms.RandomCrop(crop_size),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(list(mean), list(std)),
    ])


def eval_transform(eval_size: int, mean: Sequence[float], std: Sequence[float]) -> Callable:
    """Resize to ``eval_size`` square (no crop), normalize."""
    return transforms.Compose([
        transforms.Resize((eval_size, eval_size)),
        transforms.ToTensor(),
        transforms.Normalize(list(mean), list(std)),
    ])


def read_rgb(path: str) -> Image.Image:
    """Decode an image as RGB, or raise :class:`WSOLInputError` naming the path."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise WSOLInputError(f"{path}: image file not found") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise WSOLInputError(f"{path}: image file unreadable ({error.__class__.__name__}: {error})") from None


class WSOLDataset(Dataset):
    """Images of one metadata split.

    Args:
        metadata: the validated split.
        image_dir: folder the image ids are relative to (``<data_root>/<dataset_name>``).
        transform: PIL image -> float tensor ``[3, H, W]``.
        mask_dir: folder the mask paths are relative to (``<mask_root>/<dataset_name>``);
            required when the split has masks and ``evaluation`` is true.
        evaluation: return ids and ground truth; default: ``split != "train"``.
    """

    def __init__(self, metadata: Metadata, image_dir: os.PathLike | str, transform: Callable,
                 mask_dir: Optional[os.PathLike | str] = None, evaluation: Optional[bool] = None) -> None:
        self.metadata = metadata
        self.image_dir = str(image_dir)
        self.transform = transform
        self.evaluation = metadata.split != "train" if evaluation is None else bool(evaluation)
        self.with_boxes = self.evaluation and metadata.has_boxes
        self.with_masks = self.evaluation and metadata.has_masks
        if self.with_masks and mask_dir is None:
            raise WSOLInputError(f"{metadata.directory}: the split has masks but no mask folder was given")
        self.mask_dir = None if mask_dir is None else str(mask_dir)
        self.image_ids = metadata.image_ids
        self.labels = [metadata.class_labels[image_id] for image_id in self.image_ids]

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_path(self, index: int) -> str:
        """Path of the ``index``-th image."""
        return os.path.join(self.image_dir, self.image_ids[index])

    def __getitem__(self, index: int) -> Dict[str, Any]:
        image_id = self.image_ids[index]
        image = self.transform(read_rgb(self.image_path(index)))
        item: Dict[str, Any] = {"image": image, "label": torch.tensor(self.labels[index], dtype=torch.int64)}
        if not self.evaluation:
            return item
        item["image_id"] = image_id
        if self.with_boxes:
            item["gt_boxes"] = torch.from_numpy(self.metadata.resized_boxes(image_id, SCOREMAP_SIZE))
        if self.with_masks:
            mask = load_gt_mask(self.mask_dir, self.metadata.mask_paths[image_id],
                                self.metadata.ignore_paths.get(image_id, ""), SCOREMAP_SIZE)
            item["gt_mask"] = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8))
        return item


def pad_boxes(boxes: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack ``[K_i, 4]`` box tensors into ``[B, max K, 4]`` int64, padding with rows of -1."""
    longest = max((len(b) for b in boxes), default=0)
    out = torch.full((len(boxes), longest, 4), BOX_PADDING, dtype=torch.int64)
    for row, image_boxes in enumerate(boxes):
        if len(image_boxes):
            out[row, :len(image_boxes)] = image_boxes
    return out


def collate(items: List[Mapping[str, Any]]) -> Dict[str, Any]:
    """Batch dataset items; ``gt_boxes`` are padded to the batch's most boxes with -1 rows."""
    batch: Dict[str, Any] = {
        "image": torch.stack([item["image"] for item in items]),
        "label": torch.stack([torch.as_tensor(item["label"], dtype=torch.int64) for item in items]),
    }
    first = items[0]
    if "image_id" in first:
        batch["image_id"] = [item["image_id"] for item in items]
    if "gt_boxes" in first:
        batch["gt_boxes"] = pad_boxes([item["gt_boxes"] for item in items])
    if "gt_mask" in first:
        batch["gt_mask"] = torch.stack([item["gt_mask"] for item in items])
    return batch
