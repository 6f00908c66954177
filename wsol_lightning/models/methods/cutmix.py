"""CutMix (Yun et al., ICCV 2019).

With probability ``cutmix_prob`` a training batch is mixed: ``lam ~
Beta(cutmix_beta, cutmix_beta)``, a box of ``sqrt(1 - lam)`` times the image
sides, centred at a uniformly drawn pixel and clipped to the image, is pasted
from another image of the batch (a random permutation) into each image. The
loss is ``w * CE(own label) + (1 - w) * CE(pasted image's label)`` with ``w =
1 - box area / image area``, the weight recomputed from the clipped box as in
wsolevaluation's ``cutmix``. One box per batch, as the reference.
``cutmix_beta = 0`` or ``cutmix_prob = 0`` disables mixing. The network, the
loss of unmixed batches and the CAM are CAM's. Works with every backbone (it
only touches images).
"""

from __future__ import annotations

from typing import ClassVar, Mapping, Tuple

import torch

from wsol_lightning.models.methods.base import HyperParameter, TrainingBatch, WSOLMethod


def random_box(height: int, width: int, lam: float) -> Tuple[int, int, int, int]:
    """CutMix's box ``(top, left, bottom, right)`` (exclusive ends) for a mixing ratio ``lam``."""
    cut_ratio = (1.0 - lam) ** 0.5
    cut_h, cut_w = int(height * cut_ratio), int(width * cut_ratio)
    center_y = int(torch.randint(height, (1,)))
    center_x = int(torch.randint(width, (1,)))
    top, bottom = max(center_y - cut_h // 2, 0), min(center_y + cut_h // 2, height)
    left, right = max(center_x - cut_w // 2, 0), min(center_x + cut_w // 2, width)
    return top, left, bottom, right


def cutmix(images: torch.Tensor, labels: torch.Tensor, beta: float) -> TrainingBatch:
    """Paste one random box of a permuted batch into ``images`` (a new tensor).

    Draws from torch's global RNG (seeded by ``seed_everything``).

    Returns:
        The batch with ``mixed_labels`` (labels of the pasted images) and
        ``mix_weight`` (the fraction of each image left unchanged).
    """
    batch, _, height, width = images.shape
    lam = float(torch.distributions.Beta(float(beta), float(beta)).sample())
    permutation = torch.randperm(batch).to(images.device)
    top, left, bottom, right = random_box(height, width, lam)
    mixed = images.clone()
    mixed[:, :, top:bottom, left:right] = images[permutation, :, top:bottom, left:right]
    weight = 1.0 - (bottom - top) * (right - left) / float(height * width)
    return TrainingBatch(mixed, labels, labels[permutation], weight)


class CutMix(WSOLMethod):
    """CAM trained on CutMix batches."""

    name: ClassVar[str] = "cutmix"
    hyperparameters: ClassVar[Mapping[str, HyperParameter]] = {
        "cutmix_beta": HyperParameter(
            default=1.0, valid=(0.0, 100.0), search=(0.5, 10.0), log=True,
            help="CutMix: mixing ratio ~ Beta(beta, beta); 0 disables mixing"),
        "cutmix_prob": HyperParameter(
            default=1.0, valid=(0.0, 1.0), search=(0.0, 1.0),
            help="CutMix: probability that a training batch is mixed"),
    }

    def augment(self, images: torch.Tensor, labels: torch.Tensor) -> TrainingBatch:  # noqa: D102
        beta = float(self.hparams_values["cutmix_beta"])
        if beta <= 0 or float(torch.rand(())) >= float(self.hparams_values["cutmix_prob"]):
            return TrainingBatch(images, labels)
        return cutmix(images, labels, beta)
