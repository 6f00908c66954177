"""Torch datasets over a validated :class:`~wsol_lightning.data.metadata.Metadata` split.

Items are dicts. Training items: ``{"image": uint8 [R, R, 3], "label": int64}``,
the image decoded and resized to ``resize_size`` (RGB, unnormalized): the data
module crops, flips and normalizes whole batches on the training device (see
:mod:`wsol_lightning.data.images`). Evaluation items (``val``/``test``):
``"image"`` float32 ``[3, E, E]`` (resized to ``eval_size``, normalized), plus
``"image_id"`` (str), ``"gt_boxes"`` (int64 ``[K, 4]``, inclusive boxes rescaled
to 224 as the benchmark does; box datasets) and ``"gt_mask"`` (uint8
``[224, 224]``: 1 object, 0 background, 255 ignored; mask datasets).
:func:`collate` batches them, padding ``gt_boxes`` to the batch's largest ``K``
with rows of ``-1``.

Pixels come from the decoded-image cache when one is given (a memory-mapped
``[N, S, S, 3]`` file, see :mod:`wsol_lightning.data.cache`), else each image is
decoded and resized when it is read ("streaming"); both give the same pixels.
Normalization uses the given mean/std (ImageNet's for real data, the data's own
for ``synthetic``).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from wsol_lightning.data.cache import DecodedImages
from wsol_lightning.data.images import decode_resized, normalize_images
from wsol_lightning.data.metadata import Metadata
from wsol_lightning.errors import WSOLInputError
from wsol_lightning.metrics.geometry import SCOREMAP_SIZE
from wsol_lightning.metrics.masks import load_gt_mask

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Value of padding rows in a batch's ``gt_boxes``.
BOX_PADDING = -1

#: ``(mean, std)`` per RGB channel.
Normalization = Tuple[Sequence[float], Sequence[float]]


class WSOLDataset(Dataset):
    """Images of one metadata split.

    Args:
        metadata: the validated split.
        image_dir: folder the image ids are relative to (``<data_root>/<dataset_name>``).
        image_size: side of the square images are resized to (``resize_size`` for
            training items, ``eval_size`` for evaluation items).
        normalization: ``(mean, std)`` applied to evaluation items.
        mask_dir: folder the mask paths are relative to (``<mask_root>/<dataset_name>``);
            required when the split has masks and ``evaluation`` is true.
        evaluation: return normalized images, ids and ground truth; default: ``split != "train"``.
        decoded: the split's decoded-image cache at ``image_size``; ``None``: decode when read.
    """

    def __init__(self, metadata: Metadata, image_dir: os.PathLike | str, image_size: int,
                 normalization: Normalization, mask_dir: Optional[os.PathLike | str] = None,
                 evaluation: Optional[bool] = None, decoded: Optional[DecodedImages] = None) -> None:
        self.metadata = metadata
        self.image_dir = str(image_dir)
        self.image_size = int(image_size)
        self.normalization = (tuple(normalization[0]), tuple(normalization[1]))
        self.evaluation = metadata.split != "train" if evaluation is None else bool(evaluation)
        self.with_boxes = self.evaluation and metadata.has_boxes
        self.with_masks = self.evaluation and metadata.has_masks
        if self.with_masks and mask_dir is None:
            raise WSOLInputError(f"{metadata.directory}: the split has masks but no mask folder was given")
        if decoded is not None and decoded.shape != (len(metadata), self.image_size, self.image_size, 3):
            raise ValueError(f"{decoded.path}: cache of shape {decoded.shape} does not match the split")
        self.mask_dir = None if mask_dir is None else str(mask_dir)
        self.decoded = decoded
        self._pixels_map: Optional[np.ndarray] = None  # opened on first read, in each process
        self.image_ids = metadata.image_ids
        self.labels = [metadata.class_labels[image_id] for image_id in self.image_ids]

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getstate__(self) -> Dict[str, Any]:
        # Loader workers started by spawn, and DDP spawn, pickle the dataset: they map the file themselves.
        state = dict(self.__dict__)
        state["_pixels_map"] = None
        return state

    def image_path(self, index: int) -> str:
        """Path of the ``index``-th image."""
        return os.path.join(self.image_dir, self.image_ids[index])

    def pixels(self, index: int) -> np.ndarray:
        """uint8 ``[S, S, 3]`` of the ``index``-th image resized to ``image_size`` (a copy, from the cache or decoded)."""
        if self.decoded is None:
            return decode_resized(self.image_path(index), self.image_size)
        if self._pixels_map is None:
            self._pixels_map = self.decoded.open()
        return np.array(self._pixels_map[index])

    def __getitem__(self, index: int) -> Dict[str, Any]:
        image_id = self.image_ids[index]
        image = torch.from_numpy(self.pixels(index))
        item: Dict[str, Any] = {"label": torch.tensor(self.labels[index], dtype=torch.int64)}
        if not self.evaluation:
            item["image"] = image
            return item
        item["image"] = normalize_images(image, *self.normalization).contiguous()
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
