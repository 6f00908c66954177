"""Feature extractors for CAM-style WSOL networks, as in wsolevaluation.

Each backbone maps an image batch ``[B, 3, H, W]`` to a feature map
``[B, C, h, w]`` whose channels feed a global-average-pooled classifier; the
CAM is the classifier-weighted sum of these channels. Architectures follow the
benchmark's modifications:

* ``resnet50``: torchvision's ResNet-50 with ``layer4`` at stride 1 (14x14 maps
  at 224 px), 2048 channels.
* ``vgg16``: torchvision's VGG-16 convolutions without the last max-pool, then
  ``conv6`` (512 -> 1024, 3x3) + ReLU, 1024 channels.
* ``inception_v3``: torchvision's Inception-v3 stem and Mixed_5/6 blocks with
  ``Mixed_6a`` at stride 1 (padding 1), then a 3x3 conv to 1024 channels + ReLU.
* ``small``: four 3x3 conv blocks (32-64-128-256 channels, three 2x2 pools), the
  default on the ``synthetic`` data: it trains at ~170 img/s at 64 px on 2 CPU
  cores where resnet50 at 224 px manages a few.

Pretrained ImageNet weights come through torchvision's weights API
(``ResNet50_Weights.IMAGENET1K_V1`` ...), or from a local file
(``pretrained_path``), since machines without network access must point at a
file; a missing file is a one-line error naming it.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tv_models
from torchvision.models import inception as tv_inception

from wsol_lightning.errors import WSOLInputError

BACKBONE_NAMES = ("small", "resnet50", "vgg16", "inception_v3")


class Backbone(nn.Module):
    """A feature extractor with metadata the WSOL heads and optimizer need.

    Attributes:
        out_channels: channels of the returned feature map.
        new_layer_prefixes: parameter-name prefixes of layers that are new or
            changed relative to ImageNet pretraining; they train at
            ``lr * lr_classifier_ratio`` like the benchmark's classifier group.
        stages: names of the child modules in order; methods such as ADL insert
            layers after given stages.
    """

    out_channels: int
    new_layer_prefixes: Tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.stage_hooks: Dict[str, nn.Module] = {}

    def stage_modules(self) -> List[Tuple[str, nn.Module]]:
        """The (name, module) stages applied in order by :meth:`forward`."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = images
        for name, module in self.stage_modules():
            x = module(x)
            hook = self.stage_hooks.get(name)
            if hook is not None:
                x = hook(x)
        return x

    def insert_after(self, stage: str, module: nn.Module) -> None:
        """Apply ``module`` to the output of ``stage`` (used by methods such as ADL)."""
        names = [name for name, _ in self.stage_modules()]
        if stage not in names:
            raise ValueError(f"unknown stage {stage!r}; stages are {names}")
        self.stage_hooks[stage] = module
        self.add_module(f"after_{stage}", module)


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SmallBackbone(Backbone):
    """Four conv blocks; 1/8 resolution (8x8 maps at 64 px)."""

    new_layer_prefixes = ("",)  # everything is new: no pretrained weights exist

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.block1 = nn.Sequential(_conv_block(3, width), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(_conv_block(width, 2 * width), nn.MaxPool2d(2))
        self.block3 = nn.Sequential(_conv_block(2 * width, 4 * width), nn.MaxPool2d(2))
        self.block4 = _conv_block(4 * width, 8 * width)
        self.out_channels = 8 * width
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def stage_modules(self) -> List[Tuple[str, nn.Module]]:  # noqa: D102
        return [("block1", self.block1), ("block2", self.block2), ("block3", self.block3), ("block4", self.block4)]


class ResNet50Backbone(Backbone):
    """ResNet-50 trunk with ``layer4`` at stride 1 (wsolevaluation's ResNetCam)."""

    new_layer_prefixes = ("layer4.",)

    def __init__(self, weights: Optional[str] = None) -> None:
        super().__init__()
        net = tv_models.resnet50(weights=None)
        if weights is not None:
            net.load_state_dict(_load_state_dict(tv_models.ResNet50_Weights, weights))
        # The benchmark keeps layer4 at full resolution: stride 1, no dilation.
        net.layer4[0].conv2.stride = (1, 1)
        net.layer4[0].downsample[0].stride = (1, 1)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = 2048

    def stage_modules(self) -> List[Tuple[str, nn.Module]]:  # noqa: D102
        return [("stem", self.stem), ("layer1", self.layer1), ("layer2", self.layer2),
                ("layer3", self.layer3), ("layer4", self.layer4)]


class VGG16Backbone(Backbone):
    """VGG-16 conv1-conv5 (last pool removed) + conv6 1024 (wsolevaluation's VggCam)."""

    new_layer_prefixes = ("conv6.",)

    def __init__(self, weights: Optional[str] = None) -> None:
        super().__init__()
        net = tv_models.vgg16(weights=None)
        if weights is not None:
            net.load_state_dict(_load_state_dict(tv_models.VGG16_Weights, weights))
        features = list(net.features.children())[:-1]  # drop pool5: 14x14 at 224 px
        # Stages split at the pools so methods can act after pool3/pool4/conv5_3.
        self.conv1_3 = nn.Sequential(*features[:17])   # up to and including pool3
        self.conv4 = nn.Sequential(*features[17:24])   # conv4_1..pool4
        self.conv5 = nn.Sequential(*features[24:])     # conv5_1..relu5_3
        self.conv6 = nn.Sequential(nn.Conv2d(512, 1024, 3, padding=1), nn.ReLU(inplace=False))
        nn.init.kaiming_normal_(self.conv6[0].weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.conv6[0].bias)
        self.out_channels = 1024

    def stage_modules(self) -> List[Tuple[str, nn.Module]]:  # noqa: D102
        return [("conv1_3", self.conv1_3), ("conv4", self.conv4), ("conv5", self.conv5), ("conv6", self.conv6)]


class _InceptionBStride1(nn.Module):
    """torchvision's InceptionB (Mixed_6a) at stride 1 with padding 1, as the benchmark uses."""

    def __init__(self, block: tv_inception.InceptionB) -> None:
        super().__init__()
        self.branch3x3 = block.branch3x3
        self.branch3x3dbl_1 = block.branch3x3dbl_1
        self.branch3x3dbl_2 = block.branch3x3dbl_2
        self.branch3x3dbl_3 = block.branch3x3dbl_3
        for conv in (self.branch3x3.conv, self.branch3x3dbl_3.conv):
            conv.stride = (1, 1)
            conv.padding = (1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        branch3x3 = self.branch3x3(x)
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([branch3x3, branch3x3dbl, branch_pool], 1)


class InceptionV3Backbone(Backbone):
    """Inception-v3 up to Mixed_6e with Mixed_6a at stride 1, then conv 768 -> 1024."""

    new_layer_prefixes = ("head.",)

    def __init__(self, weights: Optional[str] = None) -> None:
        super().__init__()
        net = tv_models.inception_v3(weights=None, aux_logits=True, init_weights=weights is None)
        if weights is not None:
            net.load_state_dict(_load_state_dict(tv_models.Inception_V3_Weights, weights))
        self.stem = nn.Sequential(
            net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3,
            nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
            net.Conv2d_3b_1x1, net.Conv2d_4a_3x3,
            nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        )
        self.mixed5 = nn.Sequential(net.Mixed_5b, net.Mixed_5c, net.Mixed_5d)
        self.mixed6 = nn.Sequential(_InceptionBStride1(net.Mixed_6a), net.Mixed_6b, net.Mixed_6c,
                                    net.Mixed_6d, net.Mixed_6e)
        self.head = nn.Sequential(nn.Conv2d(768, 1024, 3, padding=1), nn.ReLU(inplace=False))
        nn.init.kaiming_normal_(self.head[0].weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.head[0].bias)
        self.out_channels = 1024

    def stage_modules(self) -> List[Tuple[str, nn.Module]]:  # noqa: D102
        return [("stem", self.stem), ("mixed5", self.mixed5), ("mixed6", self.mixed6), ("head", self.head)]


def _load_state_dict(weights_enum, source: str) -> Dict[str, torch.Tensor]:
    """State dict from a local file path, or from torchvision's weights API by enum name.

    Args:
        weights_enum: the torchvision ``*_Weights`` enum of the architecture.
        source: a path to a ``.pth`` file, or ``"DEFAULT"`` / an enum member name
            (downloads into the torch hub cache, or reads it from there).
    """
    if os.path.sep in source or source.endswith((".pth", ".pt")):
        if not os.path.isfile(source):
            raise WSOLInputError(f"{source}: pretrained weights file not found")
        return torch.load(source, map_location="cpu", weights_only=True)
    try:
        weights = weights_enum[source] if source != "DEFAULT" else weights_enum.DEFAULT
    except KeyError:
        raise WSOLInputError(f"--model.pretrained_weights={source}: not a file nor one of "
                             f"{[w.name for w in weights_enum]}") from None
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
    try:
        return weights.get_state_dict(progress=False)
    except Exception as error:  # no network here: name the file the user can place
        raise WSOLInputError(
            f"{cached}: ImageNet weights {weights_enum.__name__}.{weights.name} not in the cache and "
            f"could not be downloaded ({type(error).__name__}); download {weights.url} there or pass "
            f"--model.pretrained_weights=/path/to/file.pth") from None


_FACTORIES: Dict[str, Callable[[Optional[str]], Backbone]] = {
    "small": lambda weights: SmallBackbone(),
    "resnet50": ResNet50Backbone,
    "vgg16": VGG16Backbone,
    "inception_v3": InceptionV3Backbone,
}


def build_backbone(name: str, pretrained_weights: Optional[str] = None) -> Backbone:
    """Build a backbone by name.

    Args:
        name: one of :data:`BACKBONE_NAMES`.
        pretrained_weights: ``None`` (random init), ``"DEFAULT"`` or a torchvision
            enum member name, or a local ``.pth`` path.
    """
    if name not in _FACTORIES:
        raise WSOLInputError(f"--model.backbone={name}: unknown backbone; choose one of {list(_FACTORIES)}")
    if name == "small" and pretrained_weights is not None and not os.path.isfile(pretrained_weights):
        raise WSOLInputError("--model.pretrained_weights: the small backbone has no ImageNet weights; "
                             "pass a .pth file of a SmallBackbone or leave it unset")
    backbone = _FACTORIES[name](pretrained_weights if name != "small" else None)
    if name == "small" and pretrained_weights is not None:
        backbone.load_state_dict(torch.load(pretrained_weights, map_location="cpu", weights_only=True))
    return backbone
