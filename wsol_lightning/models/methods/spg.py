"""Self-Produced Guidance, SPG (Zhang et al., ECCV 2018).

The classifier is fully convolutional: a 1x1 conv maps the last features to
one map per class (``A4``), global average pooling gives the logits, and the
CAM is the raw class map of the asked class. Three one-channel side branches
learn pixel-wise foreground/background from the network's own maps:

* ``B1`` on an early tap, ``B2`` on a later tap (sharing their last layers,
  ``b_shared``: conv3x3 -> ReLU -> conv1x1 to one channel);
* ``C`` on the last features (conv3x3 -> ReLU -> conv1x1 to one channel).

Every map is upsampled (bilinear) to the input size, and a *guidance mask* is
made from a map and two thresholds ``(high, low)``: pixels above ``high`` are
foreground (1), pixels below ``low`` are background (0; background wins where
both hold, as in the reference's order), the rest is ignored. If fewer than
30 pixels per 224x224 (scaled to the input area) pass ``high``, the image uses
``0.7 x its maximum`` instead (wsolevaluation's ``mask_fg``). The loss adds
three binary cross-entropies over the non-ignored pixels to the classification
cross-entropy (wsolevaluation's ``spg.get_loss``):

* ``B2`` against the mask of the min-max normalized class map of the label,
  thresholds ``(spg_threshold_1h, spg_threshold_1l)``;
* ``B1`` against the mask of ``sigmoid(B2)``, thresholds ``(_2h, _2l)``;
* ``C`` against the mask of ``(sigmoid(B1) + sigmoid(B2)) / 2``, thresholds
  ``(_3h, _3l)``.

The targets are detached. A term with no non-ignored pixel contributes 0 (the
reference's mean over an empty set is NaN). The search samples the high and
low thresholds independently; ``high < low`` is accepted and then simply
marks more pixels as background.

Backbones: wsolevaluation defines SPG for Inception-v3, VGG16 and ResNet50;
this module follows each, and extends the scheme to ``small``:

=============  ================  ==================  ==========================================
backbone       B1 tap            B2 tap              last features (A4 and C read them)
=============  ================  ==================  ==========================================
inception_v3   Mixed_5d          Mixed_6d            Mixed_6e -> 2 x (conv3x3 1024, ReLU), dropout
vgg16          conv4 (pool4)     conv5_3             conv5_3 -> 2 x (conv3x3 512, ReLU)
resnet50       layer3[0]         layer3              layer4
small          block3            block4              block4
=============  ================  ==================  ==========================================

The CAM-specific last conv of vgg16/inception_v3 is replaced by these layers
(see :func:`~wsol_lightning.models.methods.common.strip_cam_layer`). Branch
widths: 512 (inception_v3, vgg16), 1024 (resnet50), 128 (small). The new
layers train at ``lr * lr_classifier_ratio`` on vgg16/inception_v3 and at
``lr`` on resnet50/small, as wsolevaluation groups them (see
:func:`~wsol_lightning.models.methods.common.heads_at_classifier_lr`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from wsol_lightning.errors import WSOLInputError
from wsol_lightning.models.backbones import InceptionV3Backbone, ResNet50Backbone, SmallBackbone, VGG16Backbone
from wsol_lightning.models.methods.base import HyperParameter, TrainingBatch, WSOLMethod
from wsol_lightning.models.methods.common import (autocast_off, heads_at_classifier_lr, mixed_cross_entropy,
                                                 normalize_per_map, strip_cam_layer)

#: Per backbone: (B1 tap, B2 tap, widths of extra conv layers on the last features,
#: dropout before/between them, width of the B and C branches).
_LAYOUT: Dict[type, Tuple[str, str, Tuple[int, ...], float, int]] = {
    InceptionV3Backbone: ("mixed5", "mixed6.3", (1024, 1024), 0.5, 512),
    VGG16Backbone: ("conv4", "conv5", (512, 512), 0.0, 512),
    ResNet50Backbone: ("layer3.0", "layer3", (), 0.0, 1024),
    SmallBackbone: ("block3", "block4", (), 0.0, 128),
}

#: wsolevaluation's minimum number of foreground pixels, at 224 x 224.
_MIN_FOREGROUND_PIXELS = 30
_REFERENCE_AREA = 224 * 224


def guidance_mask(attention: torch.Tensor, high: float, low: float,
                  min_foreground: float = _MIN_FOREGROUND_PIXELS) -> torch.Tensor:
    """SPG's three-valued mask of ``[B, 1, H, W]`` maps: 1 foreground, 0 background, -1 ignored.

    Args:
        attention: maps in [0, 1].
        high: foreground threshold (strictly above); an image with fewer than
            ``min_foreground`` such pixels uses ``0.7 * its maximum`` instead.
        low: background threshold (strictly below); applied last, so it wins.
        min_foreground: pixel count below which the fallback threshold is used.
    """
    flat = attention.flatten(1)
    count = (flat > high).sum(dim=1, keepdim=True)
    fallback = flat.amax(dim=1, keepdim=True) * 0.7
    threshold = torch.where(count < min_foreground, fallback, torch.full_like(fallback, high))
    mask = torch.full_like(flat, -1.0)
    mask[flat > threshold] = 1.0
    mask[flat < low] = 0.0
    return mask.view_as(attention)


def masked_bce(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of ``logits`` against the non-ignored pixels of ``mask`` (0 if none).

    In float32 (also under mixed precision): the mean runs over every pixel of the batch.
    """
    valid = mask >= 0
    with autocast_off(logits):
        losses = F.binary_cross_entropy_with_logits(logits.float(), mask.clamp_min(0).detach().float(),
                                                    reduction="none")
    return (losses * valid).sum() / valid.sum().clamp_min(1)


def _keep_output(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
    """Forward hook of a tapped backbone module: keep its output for the side branch.

    A module-level function (not a closure over the method), so copies and
    pickles of the network keep working.
    """
    module.spg_tap_output = output


def _pop_output(module: nn.Module) -> torch.Tensor:
    output = module.__dict__.pop("spg_tap_output")
    return output


def _conv_relu(in_channels: int, out_channels: int) -> List[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=False)]


class SPG(WSOLMethod):
    """Fully convolutional classifier with self-produced guidance branches B1, B2, C."""

    name: ClassVar[str] = "spg"
    hyperparameters: ClassVar[Mapping[str, HyperParameter]] = {
        f"spg_threshold_{branch}{level}": HyperParameter(
            default=default, valid=(0.0, 1.0), search=(0.0, 1.0),
            help=f"SPG: {'foreground (high)' if level == 'h' else 'background (low)'} threshold of guidance "
                 f"mask {branch} ({target})")
        for branch, target in (("1", "B2 from the class map"), ("2", "B1 from B2"), ("3", "C from B1+B2"))
        for level, default in (("h", {"1": 0.7, "2": 0.5, "3": 0.7}[branch]),
                               ("l", {"1": 0.01, "2": 0.05, "3": 0.1}[branch]))
    }

    def build_head(self) -> None:  # noqa: D102
        layout = next((v for k, v in _LAYOUT.items() if isinstance(self.backbone, k)), None)
        if layout is None:
            raise WSOLInputError(f"--model.wsol_method=spg has no layout for backbone "
                                 f"{type(self.backbone).__name__}")
        b1_tap, b2_tap, trunk_widths, dropout, width = layout
        channels = strip_cam_layer(self.backbone)
        self._tap_names = (b1_tap, b2_tap)
        tap_channels = self._probe_tap_channels()
        layers: List[nn.Module] = []
        for out_channels in trunk_widths:
            layers += ([nn.Dropout(dropout)] if dropout else []) + _conv_relu(channels, out_channels)
            channels = out_channels
        if dropout and trunk_widths:
            layers.append(nn.Dropout(dropout))
        self.trunk = nn.Sequential(*layers)
        self.class_conv = nn.Conv2d(channels, self.num_classes, 1)
        self.b1 = nn.Sequential(*_conv_relu(tap_channels[0], width))
        self.b2 = nn.Sequential(*_conv_relu(tap_channels[1], width))
        self.b_shared = nn.Sequential(*_conv_relu(width, width), nn.Conv2d(width, 1, 1))
        self.c = nn.Sequential(*_conv_relu(channels, width), nn.Conv2d(width, 1, 1))
        for name in ("trunk", "class_conv", "b1", "b2", "b_shared", "c"):
            for module in getattr(self, name).modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.xavier_uniform_(module.weight)
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.class_conv.weight, 0.0, 0.01)  # small initial logits, like CAM's classifier
        for tap in self._tap_names:
            self.backbone.get_submodule(tap).register_forward_hook(_keep_output)

    @torch.no_grad()
    def _probe_tap_channels(self) -> Tuple[int, int]:
        """Channels of the two taps, from one 64 px image through the backbone in eval mode."""
        captured: Dict[str, int] = {}
        handles = [self.backbone.get_submodule(tap).register_forward_hook(
            lambda m, i, o, tap=tap: captured.__setitem__(tap, o.shape[1])) for tap in self._tap_names]
        was_training = self.backbone.training
        self.backbone.eval()
        parameter = next(self.backbone.parameters())
        self.backbone(torch.zeros(1, 3, 64, 64, device=parameter.device, dtype=parameter.dtype))
        self.backbone.train(was_training)
        for handle in handles:
            handle.remove()
        return captured[self._tap_names[0]], captured[self._tap_names[1]]

    def new_layer_prefixes(self) -> Tuple[str, ...]:
        """The backbone's new layers, and SPG's layers on vgg16/inception_v3 (see ``heads_at_classifier_lr``)."""
        heads = ("trunk.", "class_conv.", "b1.", "b2.", "b_shared.", "c.")
        return tuple(f"backbone.{p}" for p in self.backbone.new_layer_prefixes) + (
            heads if heads_at_classifier_lr(self.backbone) else ())

    def forward(self, images: torch.Tensor, labels: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Logits, class maps ``[B, K, h, w]`` and the side branches' one-channel logit maps."""
        features = self.trunk(self.backbone(images))
        taps = [_pop_output(self.backbone.get_submodule(tap)) for tap in self._tap_names]
        class_maps = self.class_conv(features)
        return {
            "logits": class_maps.mean(dim=(2, 3)),
            "features": features,
            "class_maps": class_maps,
            "logits_b1": self.b_shared(self.b1(taps[0])),
            "logits_b2": self.b_shared(self.b2(taps[1])),
            "logits_c": self.c(features),
            "image_size": torch.tensor(images.shape[-2:]),
        }

    def guidance(self, outputs: Dict[str, torch.Tensor], labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The three guidance masks (``"mask_b2"``, ``"mask_b1"``, ``"mask_c"``) and upsampled logits."""
        size = tuple(int(s) for s in outputs["image_size"])
        up = {key: F.interpolate(outputs[key], size=size, mode="bilinear", align_corners=False)
              for key in ("logits_b1", "logits_b2", "logits_c")}
        index = torch.arange(len(labels), device=labels.device)
        class_map = outputs["class_maps"].detach()[index, labels].unsqueeze(1)
        attention = normalize_per_map(F.interpolate(class_map, size=size, mode="bilinear", align_corners=False))
        b1, b2 = torch.sigmoid(up["logits_b1"].detach().float()), torch.sigmoid(up["logits_b2"].detach().float())
        minimum = _MIN_FOREGROUND_PIXELS * size[0] * size[1] / _REFERENCE_AREA
        values = self.hparams_values
        return {
            **up,
            "mask_b2": guidance_mask(attention, values["spg_threshold_1h"], values["spg_threshold_1l"], minimum),
            "mask_b1": guidance_mask(b2, values["spg_threshold_2h"], values["spg_threshold_2l"], minimum),
            "mask_c": guidance_mask((b1 + b2) / 2, values["spg_threshold_3h"], values["spg_threshold_3l"], minimum),
        }

    def loss(self, outputs: Dict[str, torch.Tensor], batch: TrainingBatch) -> torch.Tensor:
        """Cross-entropy plus the three guidance BCE terms (masks built from ``batch.labels``)."""
        guide = self.guidance(outputs, batch.labels)
        return (mixed_cross_entropy(outputs["logits"], batch)
                + masked_bce(guide["logits_b2"], guide["mask_b2"])
                + masked_bce(guide["logits_b1"], guide["mask_b1"])
                + masked_bce(guide["logits_c"], guide["mask_c"]))

    def cams(self, images: torch.Tensor, labels: torch.Tensor,
             outputs: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
        """The raw class map of ``labels`` (as wsolevaluation's SPG)."""
        if outputs is None:
            outputs = self(images)
        index = torch.arange(len(labels), device=labels.device)
        return outputs["class_maps"][index, labels]
