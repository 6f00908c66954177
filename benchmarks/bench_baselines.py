#!/usr/bin/env python
"""Baselines on the default data: what a trained WSOL network must beat.

Prints val (and test) MaxBoxAcc / MaxBoxAccV2 / PxAP of

(a) a centred Gaussian score map (the same map for every image; sigma = 1/4 of
    the side), which rewards centred, mid-sized objects only;
(b) the untrained network (random init, seed 0) of the default run.

Usage: ``python benchmarks/bench_baselines.py [--data_root data]``. The trained
figure (c) comes from ``python scripts/fit.py --bg-grid-size 0.4``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from lightning.pytorch import seed_everything

from wsol_lightning.data.datamodule import WSOLDataModule
from wsol_lightning.metrics.geometry import SCOREMAP_SIZE
from wsol_lightning.metrics.localization import BoxLocalization, MaskLocalization
from wsol_lightning.module import WSOLModule


def centred_gaussian(size: int = SCOREMAP_SIZE, sigma_fraction: float = 0.25) -> torch.Tensor:
    """A centred isotropic Gaussian, min-max normalized to [0, 1]."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    sigma = sigma_fraction * size
    gaussian = torch.exp(-(coords[None, :] ** 2 + coords[:, None] ** 2) / (2 * sigma ** 2))
    gaussian = (gaussian - gaussian.min()) / (gaussian.max() - gaussian.min())
    return gaussian.float()


@torch.no_grad()
def evaluate(datamodule: WSOLDataModule, split: str, model: WSOLModule | None) -> dict:
    """Metrics of the Gaussian map (``model=None``) or of ``model``'s CAMs on a split."""
    box, mask = BoxLocalization(), MaskLocalization()
    loader = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
    used_mask = False
    for batch in loader:
        labels = batch["label"]
        if model is None:
            maps = centred_gaussian().expand(len(labels), -1, -1)
            correct = torch.ones_like(labels, dtype=torch.bool)
        else:
            logits, maps = model.scoremaps(batch["image"], labels)
            correct = logits.argmax(1) == labels
        box.update(maps, batch["gt_boxes"], correct)
        if "gt_mask" in batch:
            mask.update(maps, batch["gt_mask"])
            used_mask = True
    results = {k: float(v) for k, v in box.compute().items()}
    if used_mask:
        results.update({k: float(v) for k, v in mask.compute().items()})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_root", default="data")
    args = parser.parse_args()
    seed_everything(0)
    datamodule = WSOLDataModule(data_root=args.data_root)
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.setup("test")
    model = WSOLModule(num_classes=datamodule.num_classes).eval()
    rows = []
    for name, candidate in (("centred Gaussian", None), ("untrained network", model)):
        for split in ("val", "test"):
            rows.append((name, split, evaluate(datamodule, split, candidate)))
    keys = ["MaxBoxAcc", "MaxBoxAccV2", "top1_loc", "PxAP"]
    print("| score map | split | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for name, split, results in rows:
        print(f"| {name} | {split} | " + " | ".join(f"{results.get(k, np.nan):.2f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
