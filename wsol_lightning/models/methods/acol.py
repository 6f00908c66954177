"""Adversarial Complementary Learning, ACoL (Zhang et al., CVPR 2018).

Two fully convolutional classifiers share the backbone's features:

* classifier A (conv3x3 -> ReLU -> conv3x3 -> ReLU -> conv1x1 to classes)
  gives the logits and a class map per class;
* A's map of the erasing class (the label in training, the predicted class
  when no label is given), min-max normalized per image, is thresholded at
  ``acol_threshold``: feature positions at or above it are set to 0;
* classifier B (same layout, own weights) sees these *erased* features, so it
  must find the object parts A did not use.

Loss: ``CE(A) + CE(B)`` (wsolevaluation's ``acol.get_loss``); with mixed
batches each term is mixed the same way. CAM: the element-wise maximum of A's
and B's min-max normalized class maps, taken for the class asked for; B's map
is recomputed with that class erased when the forward pass erased another one
(evaluation runs the forward pass without labels), as the reference passes the
ground-truth label to the network when it asks for CAMs.

Backbones, as in wsolevaluation, the classifiers replace the CAM-specific last
layer: on ``vgg16`` they sit on conv5_3 (``conv6`` becomes an identity; a 3x3
stride-1 average pool smooths the features first, as in ``VggAcol``, whose
pool changes (3x3 max pools) are not reproduced), on
``inception_v3`` on Mixed_6e (the 768 -> 1024 ``head`` conv becomes an
identity), on ``resnet50`` on layer4. On ``small`` they sit on block4 and are
256 channels wide instead of 1024 (the backbone itself is 256 wide; 1024-wide
heads would make it ten times slower on CPU). Learning rates: see
:func:`heads_at_classifier_lr`.
"""

from __future__ import annotations

from typing import ClassVar, Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from wsol_lightning.models.backbones import VGG16Backbone
from wsol_lightning.models.methods.base import HyperParameter, TrainingBatch, WSOLMethod
from wsol_lightning.models.methods.common import (heads_at_classifier_lr, mixed_cross_entropy, normalize_per_map,
                                                 strip_cam_layer)


def _classifier(in_channels: int, hidden: int, num_classes: int) -> nn.Sequential:
    head = nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(inplace=False),
        nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(inplace=False),
        nn.Conv2d(hidden, num_classes, 1),
    )
    for module in head:
        if isinstance(module, nn.Conv2d):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    nn.init.normal_(head[-1].weight, 0.0, 0.01)  # small initial logits, like CAM's classifier
    return head


class ACoL(WSOLMethod):
    """Two classifiers; the second sees the features erased where the first is confident."""

    name: ClassVar[str] = "acol"
    hyperparameters: ClassVar[Mapping[str, HyperParameter]] = {
        "acol_threshold": HyperParameter(
            default=0.7, valid=(0.0, 1.0), search=(0.0, 1.0),
            help="ACoL: erase feature positions where classifier A's normalized class map is >= this"),
    }

    def build_head(self) -> None:  # noqa: D102
        channels = strip_cam_layer(self.backbone)
        hidden = 1024 if channels >= 512 else channels
        self.smooth_features = isinstance(self.backbone, VGG16Backbone)
        self.classifier_a = _classifier(channels, hidden, self.num_classes)
        self.classifier_b = _classifier(channels, hidden, self.num_classes)

    def new_layer_prefixes(self) -> Tuple[str, ...]:
        """The backbone's new layers, and the classifiers on vgg16/inception_v3 (see :func:`heads_at_classifier_lr`)."""
        heads = ("classifier_a.", "classifier_b.") if heads_at_classifier_lr(self.backbone) else ()
        return tuple(f"backbone.{p}" for p in self.backbone.new_layer_prefixes) + heads

    def erase(self, features: torch.Tensor, class_maps_a: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Features with A's most confident positions of ``labels`` set to 0, and the keep mask ``[B,1,h,w]``."""
        index = torch.arange(len(labels), device=labels.device)
        attention = normalize_per_map(class_maps_a.detach()[index, labels].unsqueeze(1))
        keep = (attention < float(self.hparams_values["acol_threshold"])).to(features.dtype)
        return features * keep, keep

    def _branch_b(self, features: torch.Tensor, class_maps_a: torch.Tensor,
                  labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        erased, keep = self.erase(features, class_maps_a, labels)
        class_maps_b = self.classifier_b(erased)
        return {"logits_b": class_maps_b.mean(dim=(2, 3)), "class_maps_b": class_maps_b,
                "keep_mask": keep, "erase_labels": labels}

    def forward(self, images: torch.Tensor, labels: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Logits of A (``"logits"``) and B (``"logits_b"``), both class maps, the erasing mask."""
        features = self.backbone(images)
        if self.smooth_features:
            features = F.avg_pool2d(features, kernel_size=3, stride=1, padding=1)
        class_maps_a = self.classifier_a(features)
        logits = class_maps_a.mean(dim=(2, 3))
        erase_labels = logits.argmax(dim=1) if labels is None else labels
        outputs = {"logits": logits, "features": features, "class_maps_a": class_maps_a}
        outputs.update(self._branch_b(features, class_maps_a, erase_labels))
        return outputs

    def loss(self, outputs: Dict[str, torch.Tensor], batch: TrainingBatch) -> torch.Tensor:
        """``CE(logits A) + CE(logits B)``."""
        return mixed_cross_entropy(outputs["logits"], batch) + mixed_cross_entropy(outputs["logits_b"], batch)

    def cams(self, images: torch.Tensor, labels: torch.Tensor,
             outputs: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
        """``max(norm(A), norm(B))`` of ``labels``, B computed with ``labels`` erased."""
        if outputs is None:
            outputs = self(images, labels)
        elif not torch.equal(outputs["erase_labels"], labels):
            outputs = {**outputs, **self._branch_b(outputs["features"], outputs["class_maps_a"], labels)}
        index = torch.arange(len(labels), device=labels.device)
        maps_a = normalize_per_map(outputs["class_maps_a"][index, labels].unsqueeze(1))
        maps_b = normalize_per_map(outputs["class_maps_b"][index, labels].unsqueeze(1))
        return torch.maximum(maps_a, maps_b).squeeze(1)
