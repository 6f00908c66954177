"""Hide-and-Seek (Singh & Lee, ICCV 2017).

During training the image is cut into square cells of side
``bg_grid_size x crop side`` (the last row/column of cells may be cut short by
the image border); each cell is hidden independently with probability
``has_drop_rate`` and filled with the data mean, which is 0 after the data
module's normalization. Hiding the most discriminative part forces the network
to find the others, so its CAM covers more of the object. ``bg_grid_size = 0``
disables hiding. Vectorized: one Bernoulli draw per (image, cell) on the batch's
device, expanded to pixels by indexing, no Python loop over cells.
"""

from __future__ import annotations

import math
from typing import ClassVar, Mapping

import torch

from wsol_lightning.models.methods.base import HyperParameter, TrainingBatch, WSOLMethod


def hide_patches(images: torch.Tensor, grid_fraction: float, drop_rate: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Hide random square cells of each image (HaS), filling them with 0.

    Args:
        images: ``[B, C, H, W]`` normalized images (0 is the data mean).
        grid_fraction: cell side as a fraction of ``max(H, W)``; 0 disables.
        drop_rate: probability that a cell is hidden.
        generator: optional RNG (on the images' device) for reproducibility.

    Returns:
        A new tensor; the input is left unchanged.
    """
    if grid_fraction <= 0 or drop_rate <= 0:
        return images
    batch, _, height, width = images.shape
    cell = max(1, int(round(grid_fraction * max(height, width))))
    rows, cols = math.ceil(height / cell), math.ceil(width / cell)
    keep = torch.rand((batch, rows, cols), device=images.device, generator=generator) >= drop_rate
    row_index = torch.arange(height, device=images.device) // cell
    col_index = torch.arange(width, device=images.device) // cell
    pixel_keep = keep[:, row_index][:, :, col_index]  # [B, H, W]
    return images * pixel_keep.unsqueeze(1).to(images.dtype)


class HideAndSeek(WSOLMethod):
    """CAM trained on images with randomly hidden cells."""

    name: ClassVar[str] = "has"
    hyperparameters: ClassVar[Mapping[str, HyperParameter]] = {
        "bg_grid_size": HyperParameter(
            default=0.25, valid=(0.0, 1.0), search=(0.0, 1.0),
            help="side of a hidden cell as a fraction of the crop side (0 disables hiding)"),
        "has_drop_rate": HyperParameter(
            default=0.5, valid=(0.0, 1.0), search=(0.0, 1.0),
            help="probability that a cell is hidden"),
    }

    def augment(self, images: torch.Tensor, labels: torch.Tensor) -> TrainingBatch:  # noqa: D102
        hidden = hide_patches(images, float(self.hparams_values["bg_grid_size"]),
                              float(self.hparams_values["has_drop_rate"]))
        return TrainingBatch(hidden, labels)
