"""Helpers shared by several WSOL methods (one place, so no method imports another's file).

* :class:`TrainingBatch`: what a method's augmentation hands to its forward pass and loss;
* :func:`mixed_cross_entropy`: the classification loss of every method (CutMix mixes it);
* :func:`normalize_per_map`: per-map min-max normalization (ACoL's erasing and CAM, SPG's guidance);
* :func:`strip_cam_layer`, :func:`heads_at_classifier_lr`: how ACoL and SPG put their own heads
  on the backbones and which learning-rate group those heads join (wsolevaluation's choices);
* :func:`autocast_off`: a float32 region inside mixed precision, for CAMs and masks whose values
  the metrics read (``--trainer.precision bf16-mixed`` / ``16-mixed`` run the network in half
  precision; the localization metrics must not see half-precision rounding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from wsol_lightning.models.backbones import Backbone, InceptionV3Backbone, VGG16Backbone


@dataclass
class TrainingBatch:
    """A training batch after a method's augmentation.

    Attributes:
        images: ``[B, 3, H, W]``.
        labels: ``[B]`` class indices (the images' own labels).
        mixed_labels: for label-mixing methods (CutMix), the second label of each image.
        mix_weight: weight of ``labels`` in the loss (1 for unmixed batches); the
            loss is ``w * CE(labels) + (1 - w) * CE(mixed_labels)``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    mixed_labels: Optional[torch.Tensor] = None
    mix_weight: float = 1.0


def mixed_cross_entropy(logits: torch.Tensor, batch: TrainingBatch) -> torch.Tensor:
    """``w * CE(labels) + (1 - w) * CE(mixed_labels)``; plain CE when unmixed."""
    loss = F.cross_entropy(logits, batch.labels)
    if batch.mixed_labels is not None and batch.mix_weight < 1.0:
        loss = batch.mix_weight * loss + (1.0 - batch.mix_weight) * F.cross_entropy(logits, batch.mixed_labels)
    return loss


def normalize_per_map(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Min-max normalize each ``[h, w]`` map of ``[B, K, h, w]`` to [0, 1] (0 where constant).

    Computed in float32 whatever the input's dtype (half-precision maps under mixed
    precision), so thresholds compare against the same values as in a float32 run.
    """
    flat = maps.float().flatten(2)
    low = flat.amin(dim=2, keepdim=True)
    high = flat.amax(dim=2, keepdim=True)
    return ((flat - low) / (high - low).clamp_min(eps)).view(maps.shape)


def autocast_off(tensor: torch.Tensor) -> torch.autocast:
    """A context in which autocast is disabled on ``tensor``'s device (float32 arithmetic stays float32)."""
    return torch.autocast(device_type=tensor.device.type, enabled=False)


def strip_cam_layer(backbone: Backbone) -> int:
    """Remove the backbone's CAM-specific last conv (VGG ``conv6``, Inception ``head``).

    wsolevaluation's ACoL and SPG networks put their own heads on conv5_3 /
    Mixed_6e instead of the 1024-channel conv the CAM network adds. The stage
    is replaced by an identity, so stage names (and ADL positions) stay valid.

    Returns:
        The channels of the backbone's output afterwards.
    """
    if isinstance(backbone, VGG16Backbone):
        backbone.conv6 = nn.Identity()
        backbone.out_channels = 512
        backbone.new_layer_prefixes = ()
    elif isinstance(backbone, InceptionV3Backbone):
        backbone.head = nn.Identity()
        backbone.out_channels = 768
        backbone.new_layer_prefixes = ()
    return backbone.out_channels


def heads_at_classifier_lr(backbone: Backbone) -> bool:
    """Whether a method's new heads train at ``lr * lr_classifier_ratio`` on ``backbone``.

    wsolevaluation (``main.py`` ``_set_optimizer``) multiplies the learning rate
    of every parameter outside the VGG/Inception trunk, so the ACoL/SPG heads,
    but for ResNet50 only of ``layer4`` and ``fc``: its ACoL/SPG heads train at
    ``lr``. The small backbone follows ResNet50 (its heads at ``lr * 10`` made
    SPG's side branches spike to losses of 1e2-1e6 in the first epoch on the
    default data, measured; ACoL learned more slowly).
    """
    return isinstance(backbone, (VGG16Backbone, InceptionV3Backbone))
