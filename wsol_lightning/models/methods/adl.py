"""Attention-based Dropout Layer, ADL (Choe & Shim, CVPR 2019).

An ADL layer has no parameters and acts in training only (identity in
evaluation). On a feature map ``x`` it computes the self-attention map
``a = mean over channels of x`` and, once per batch, draws which of two maps
multiplies ``x``:

* with probability ``adl_drop_rate`` the *drop mask*: 0 where
  ``a >= adl_threshold * max(a)`` (per image), 1 elsewhere, hiding the most
  activated region;
* otherwise the *importance map* ``sigmoid(a)``, enhancing it.

One draw per batch and layer, as wsolevaluation's ``ADL._select_map``. Loss
and CAM are CAM's (cross-entropy; classifier-weighted mean of the last
features).

Positions follow wsolevaluation per backbone:

* ``resnet50``: after ``layer3[0]``, ``layer4[0]`` and ``layer4[2]`` (the end
  of layer4), its ``_ADL_POSITION = [[], [], [], [0], [0, 2]]``;
* ``vgg16``: after pool3, after conv4_3 (before pool4) and after conv5_3
  (before the ``conv6`` the CAM network adds), its ``'A'`` entries;
* ``inception_v3``: after Mixed_5d, after Mixed_6e, and after the last conv
  before the classifier (``head`` here, ``SPG_A3_2b`` there);
* ``small`` (no reference; by analogy with resnet50's last two stages): after
  ``block3`` and ``block4``.

A layer inside a stage is inserted by wrapping the block it follows:
``layer3.0`` becomes ``Sequential(block, ADL)`` (its parameters are then
named ``backbone.layer3.0.0.*``; pretrained weights are loaded before).
"""

from __future__ import annotations

from typing import ClassVar, Dict, List, Mapping, Tuple

import torch
from torch import nn

from wsol_lightning.errors import WSOLInputError
from wsol_lightning.models.backbones import (Backbone, InceptionV3Backbone, ResNet50Backbone, SmallBackbone,
                                             VGG16Backbone)
from wsol_lightning.models.methods.base import HyperParameter, WSOLMethod


class ADL(nn.Module):
    """Attention-based dropout on a ``[B, C, h, w]`` feature map (training only).

    Args:
        drop_rate: probability of using the drop mask instead of the importance map.
        threshold: fraction of the per-image attention maximum at and above which
            positions are dropped.
    """

    def __init__(self, drop_rate: float = 0.75, threshold: float = 0.9) -> None:
        super().__init__()
        self.drop_rate = float(drop_rate)
        self.threshold = float(threshold)

    def drop_mask(self, attention: torch.Tensor) -> torch.Tensor:
        """0 where ``attention >= threshold * per-image max``, else 1; ``[B, 1, h, w]``."""
        maximum = attention.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
        return (attention < maximum * self.threshold).to(attention.dtype)

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if not self.training:
            return features
        # The attention map in float32 also under mixed precision (the drop threshold compares it).
        attention = features.mean(dim=1, keepdim=True, dtype=torch.float32)
        use_drop = (torch.rand((), device=features.device) < self.drop_rate).float()
        selected = use_drop * self.drop_mask(attention) + (1 - use_drop) * torch.sigmoid(attention)
        return features * selected.to(features.dtype)

    def extra_repr(self) -> str:  # noqa: D102
        return f"drop_rate={self.drop_rate}, threshold={self.threshold}"


#: Where ADL layers go: a stage name (after the stage), or ``stage.index``
#: (after that block of a sequential stage), or ``stage.index<`` (before it).
ADL_POSITIONS: Dict[type, Tuple[str, ...]] = {
    ResNet50Backbone: ("layer3.0", "layer4.0", "layer4"),
    VGG16Backbone: ("conv1_3", "conv4.6<", "conv5"),
    InceptionV3Backbone: ("mixed5", "mixed6", "head"),
    SmallBackbone: ("block3", "block4"),
}


def insert_adl(backbone: Backbone, position: str, layer: nn.Module) -> None:
    """Insert ``layer`` at ``position`` (see :data:`ADL_POSITIONS`) of ``backbone``."""
    stage_names = [name for name, _ in backbone.stage_modules()]
    if position in stage_names:
        backbone.insert_after(position, layer)
        return
    stage_name, index = position.split(".")
    stage = getattr(backbone, stage_name)
    if index.endswith("<"):
        at = int(index[:-1])
        setattr(backbone, stage_name, nn.Sequential(*stage[:at], layer, *stage[at:]))
    else:
        at = int(index)
        stage[at] = nn.Sequential(stage[at], layer)


class ADLMethod(WSOLMethod):
    """CAM with attention-based dropout layers inserted in the backbone."""

    name: ClassVar[str] = "adl"
    hyperparameters: ClassVar[Mapping[str, HyperParameter]] = {
        "adl_drop_rate": HyperParameter(
            default=0.75, valid=(0.0, 1.0), search=(0.0, 1.0),
            help="ADL: probability that a layer drops the most activated region (else it enhances it)"),
        "adl_threshold": HyperParameter(
            default=0.9, valid=(0.0, 1.0), search=(0.0, 1.0),
            help="ADL: positions with self-attention >= this x its maximum are dropped"),
    }

    def build_head(self) -> None:  # noqa: D102
        positions = next((v for k, v in ADL_POSITIONS.items() if isinstance(self.backbone, k)), None)
        if positions is None:
            raise WSOLInputError(f"--model.wsol_method=adl has no ADL positions for backbone "
                                 f"{type(self.backbone).__name__}")
        self.adl_layers: List[ADL] = []
        for position in positions:
            layer = ADL(self.hparams_values["adl_drop_rate"], self.hparams_values["adl_threshold"])
            insert_adl(self.backbone, position, layer)
            self.adl_layers.append(layer)
        super().build_head()
