"""PNG grid of validation images with CAM overlays, predicted and GT boxes.

matplotlib draws the grid (a file, no screen needed, with the Agg backend); the
predicted box is the largest-contour box at the CAM threshold that maximized
MaxBoxAcc (as the metric defines it), drawn in red; GT boxes in green.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from wsol_lightning.data.datasets import collate
from wsol_lightning.metrics.boxes import contour_boxes_and_areas, scoremap_levels
from wsol_lightning.metrics.geometry import SCOREMAP_SIZE


def largest_contour_box(scoremap: np.ndarray, threshold: float) -> np.ndarray:
    """Box ``[x0, y0, x1, y1]`` of the largest contour of ``scoremap`` above ``threshold``.

    The metric kernel's own pieces (same uint8 conversion, level, contour boxes
    and first-largest rule), so the drawn box is the one MaxBoxAcc scores.
    """
    u8, levels = scoremap_levels(scoremap, np.array([threshold]))
    binary = cv2.threshold(u8, int(levels[0]), 255, cv2.THRESH_BINARY)[1]
    boxes, twice_area = contour_boxes_and_areas(binary)
    if len(boxes) == 0:
        return np.zeros(4, dtype=int)
    return boxes[int(np.argmax(twice_area))]


@torch.no_grad()
def save_cam_grid(model, datamodule, path: Path, num_images: int = 16, threshold: Optional[float] = None,
                  split: str = "val") -> Path:
    """Draw ``num_images`` images of ``split`` with CAM, predicted box and GT boxes.

    Args:
        model: a trained :class:`~wsol_lightning.module.WSOLModule`.
        datamodule: its data module (set up for validation or not yet).
        path: PNG file to write.
        num_images: how many images (first of the split, in order).
        threshold: CAM threshold of the predicted box; default: the model's
            ``best_cam_threshold`` of its last validation, else 0.5.
        split: ``"val"`` or ``"test"``.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if threshold is None:
        threshold = model.best_cam_threshold if model.best_cam_threshold is not None else 0.5
    datamodule.setup("validate" if split == "val" else "test")
    # The split's first images, read directly: under DDP the loaders hold this rank's share only.
    batch = next(iter(DataLoader(datamodule.datasets[split], batch_size=num_images, shuffle=False,
                                 collate_fn=collate)))
    images = batch["image"][:num_images]
    labels = batch["label"][:num_images]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    logits, maps = model.scoremaps(images.to(device), labels.to(device))
    model.train(was_training)
    maps = maps.cpu().numpy()
    predictions = logits.argmax(1).cpu().numpy()
    mean, std = (np.asarray(v, dtype=np.float32).reshape(3, 1, 1) for v in datamodule.normalization)
    columns = 4
    rows = int(np.ceil(len(images) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= len(images):
            continue
        picture = np.clip(images[index].numpy() * std + mean, 0, 1).transpose(1, 2, 0)
        picture = cv2.resize(picture, (SCOREMAP_SIZE, SCOREMAP_SIZE), interpolation=cv2.INTER_LINEAR)
        axis.imshow(picture)
        axis.imshow(maps[index], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        boxes = [b for b in batch.get("gt_boxes", torch.empty(0, 0, 4))[index].tolist() if b[0] >= 0] \
            if "gt_boxes" in batch else []
        for x0, y0, x1, y1 in boxes:
            axis.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=2))
        x0, y0, x1, y1 = largest_contour_box(maps[index], threshold)
        axis.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="red", lw=2))
        mark = "ok" if predictions[index] == labels[index] else f"pred {predictions[index]}"
        axis.set_title(f"class {int(labels[index])} ({mark})", fontsize=9)
    figure.suptitle(f"CAM, predicted box (red, CAM threshold {threshold:.2f}), GT boxes (green)", fontsize=10)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
