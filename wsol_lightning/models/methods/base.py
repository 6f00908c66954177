"""Plain CAM (Zhou et al., CVPR 2016) and the interface every WSOL method implements.

A method is one module of this package holding a :class:`WSOLMethod` subclass:

* ``hyperparameters``: its knobs, with defaults, the values a run accepts and the
  range a search should use (:class:`HyperParameter`);
* ``__init__``: what it changes in the network (layers, branches);
* ``augment``: what it does to a training batch (HaS hides cells, CutMix pastes);
* ``forward`` / ``loss``: logits and training loss;
* ``cams``: class activation maps of given classes, at feature resolution.

Adding a method = one file plus one line in ``registry.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from wsol_lightning.errors import WSOLInputError
from wsol_lightning.models.backbones import Backbone
from wsol_lightning.models.methods.common import TrainingBatch, autocast_off, mixed_cross_entropy

Number = Union[int, float]


@dataclass(frozen=True)
class HyperParameter:
    """A method's knob.

    Attributes:
        default: the benchmark's default value.
        valid: closed interval of values a run accepts; others are refused.
        search: interval a hyperparameter search should sample.
        log: sample the search interval log-uniformly.
        help: one sentence for ``--help``.
    """

    default: Number
    valid: Tuple[Number, Number]
    search: Tuple[Number, Number]
    log: bool = False
    help: str = ""

    def validate(self, name: str, value: Number) -> None:
        """Refuse ``value`` outside :attr:`valid` with a one-line error naming the flag."""
        low, high = self.valid
        if not isinstance(value, (int, float)) or not (low <= value <= high):
            raise WSOLInputError(f"--model.{name}={value} is out of range [{low}, {high}]")


class WSOLMethod(nn.Module):
    """CAM: backbone features, global average pooling, a linear classifier.

    The CAM of class ``c`` is ``mean_k w[c, k] * feature[k]`` (no ReLU), as in
    wsolevaluation's ``return_cam``.
    """

    name: ClassVar[str] = "base"
    hyperparameters: ClassVar[Mapping[str, HyperParameter]] = {}
    #: Backbones this method cannot serve (refused with a one-line error).
    unsupported_backbones: ClassVar[Tuple[str, ...]] = ()

    def __init__(self, backbone: Backbone, num_classes: int, **hparams: Any) -> None:
        super().__init__()
        for key, value in hparams.items():
            if key not in self.hyperparameters:
                raise TypeError(f"{self.name} has no hyperparameter {key!r}")
            self.hyperparameters[key].validate(key, value)
        self.hparams_values: Dict[str, Any] = {k: hp.default for k, hp in self.hyperparameters.items()}
        self.hparams_values.update(hparams)
        self.backbone = backbone
        self.num_classes = num_classes
        self.build_head()

    def build_head(self) -> None:
        """Create the classifier on top of the backbone (override for other heads)."""
        self.fc = nn.Linear(self.backbone.out_channels, self.num_classes)
        nn.init.normal_(self.fc.weight, 0, 0.01)
        nn.init.zeros_(self.fc.bias)

    def new_layer_prefixes(self) -> Tuple[str, ...]:
        """Parameter-name prefixes trained at ``lr * lr_classifier_ratio``."""
        return tuple(f"backbone.{p}" for p in self.backbone.new_layer_prefixes) + ("fc.",)

    def augment(self, images: torch.Tensor, labels: torch.Tensor) -> TrainingBatch:
        """Training-time change to the batch; identity for CAM."""
        return TrainingBatch(images, labels)

    def forward(self, images: torch.Tensor, labels: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Logits (and what the loss needs) of a batch.

        Args:
            images: ``[B, 3, H, W]``.
            labels: ``[B]``; methods that use labels in the forward pass
                (ACoL, SPG, ADL) receive them in training.

        Returns:
            dict with at least ``"logits"`` ``[B, num_classes]`` and ``"features"``.
        """
        features = self.backbone(images)
        logits = self.fc(features.mean(dim=(2, 3)))
        return {"logits": logits, "features": features}

    def loss(self, outputs: Dict[str, torch.Tensor], batch: TrainingBatch) -> torch.Tensor:
        """Cross-entropy, mixed when the batch was mixed."""
        return mixed_cross_entropy(outputs["logits"], batch)

    def cams(self, images: torch.Tensor, labels: torch.Tensor,
             outputs: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
        """CAMs ``[B, h, w]`` of ``labels`` at feature resolution (no ReLU, not normalized).

        Float32 also under mixed precision: the weighted sum runs with autocast off.
        """
        if outputs is None:
            outputs = self(images)
        features = outputs["features"]
        weights = self.fc.weight[labels]  # [B, C]
        with autocast_off(features):
            return torch.einsum("bc,bchw->bhw", weights.float(), features.float()) / features.shape[1]

