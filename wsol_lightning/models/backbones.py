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
(``--model.pretrained_path``), since machines without network access must point
at a file. Files are read by :mod:`wsol_lightning.models.weights` in the forms
users hold them (plain or nested state dicts, ``module.`` prefixes, this
package's checkpoints), with torchvision's names or the backbone's own: each
backbone records the torchvision name of every tensor it took from torchvision's
network (:attr:`Backbone.weight_aliases`). A line reports what was loaded; a
file of another architecture is a one-line error saying what it looks like.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, ClassVar, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tv_models
from torchvision.models import inception as tv_inception
from torchvision.models import vgg as tv_vgg

from wsol_lightning.errors import WSOLInputError
from wsol_lightning.models.weights import load_state_dict_into, load_weights_file, register_known_architectures

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
        torchvision_weights: torchvision's weights enum of the architecture (None: no ImageNet weights).
        weight_aliases: torchvision name -> own name of every tensor taken from torchvision's network.
    """

    out_channels: int
    new_layer_prefixes: Tuple[str, ...] = ()
    torchvision_weights: ClassVar[Optional[type]] = None

    def __init__(self) -> None:
        super().__init__()
        self.stage_hooks: Dict[str, nn.Module] = {}
        self.weight_aliases: Dict[str, str] = {}

    def _record_aliases(self, net: nn.Module) -> None:
        """Map the names of ``net``'s tensors that this backbone holds (the same objects) to the own names."""
        own = {id(tensor): name for name, tensor in self.state_dict(keep_vars=True).items()}
        self.weight_aliases = {name: own[id(tensor)] for name, tensor in net.state_dict(keep_vars=True).items()
                               if id(tensor) in own}

    def pretrained_tensor_names(self) -> List[str]:
        """Own names a weights file should provide: those with a torchvision name (all for a backbone without)."""
        names = list(self.state_dict())
        if not self.weight_aliases:
            return names
        taken = set(self.weight_aliases.values())
        return [name for name in names if name in taken]

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
    torchvision_weights = tv_models.ResNet50_Weights

    def __init__(self) -> None:
        super().__init__()
        net = tv_models.resnet50(weights=None)
        # The benchmark keeps layer4 at full resolution: stride 1, no dilation.
        net.layer4[0].conv2.stride = (1, 1)
        net.layer4[0].downsample[0].stride = (1, 1)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = 2048
        self._record_aliases(net)

    def stage_modules(self) -> List[Tuple[str, nn.Module]]:  # noqa: D102
        return [("stem", self.stem), ("layer1", self.layer1), ("layer2", self.layer2),
                ("layer3", self.layer3), ("layer4", self.layer4)]


class VGG16Backbone(Backbone):
    """VGG-16 conv1-conv5 (last pool removed) + conv6 1024 (wsolevaluation's VggCam)."""

    new_layer_prefixes = ("conv6.",)
    torchvision_weights = tv_models.VGG16_Weights

    def __init__(self) -> None:
        super().__init__()
        # torchvision's VGG-16 convolutions (its make_layers and config "D"), without building and
        # initializing the 120M-weight classifier that tv_models.vgg16() makes and this backbone drops.
        net = nn.Module()
        net.features = tv_vgg.make_layers(tv_vgg.cfgs["D"])
        for module in net.features.modules():  # torchvision's VGG init of its convolutions
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        features = list(net.features.children())[:-1]  # drop pool5: 14x14 at 224 px
        # Stages split at the pools so methods can act after pool3/pool4/conv5_3.
        self.conv1_3 = nn.Sequential(*features[:17])   # up to and including pool3
        self.conv4 = nn.Sequential(*features[17:24])   # conv4_1..pool4
        self.conv5 = nn.Sequential(*features[24:])     # conv5_1..relu5_3
        self.conv6 = nn.Sequential(nn.Conv2d(512, 1024, 3, padding=1), nn.ReLU(inplace=False))
        nn.init.kaiming_normal_(self.conv6[0].weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.conv6[0].bias)
        self.out_channels = 1024
        self._record_aliases(net)

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
    torchvision_weights = tv_models.Inception_V3_Weights

    def __init__(self, init_weights: bool = True) -> None:
        super().__init__()
        net = tv_models.inception_v3(weights=None, aux_logits=True, init_weights=False)
        self.stem = nn.Sequential(
            net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3,
            nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
            net.Conv2d_3b_1x1, net.Conv2d_4a_3x3,
            nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        )
        self.mixed5 = nn.Sequential(net.Mixed_5b, net.Mixed_5c, net.Mixed_5d)
        self.mixed6 = nn.Sequential(_InceptionBStride1(net.Mixed_6a), net.Mixed_6b, net.Mixed_6c,
                                    net.Mixed_6d, net.Mixed_6e)
        if init_weights:
            # torchvision's truncated-normal init, on the kept layers only (the dropped Mixed_7 blocks, AuxLogits
            # and fc hold two thirds of the weights); same order, so the same values as init_weights=True.
            for module in [*self.stem.modules(), *self.mixed5.modules(), *self.mixed6.modules()]:
                if isinstance(module, nn.Conv2d):
                    stddev = float(getattr(module, "stddev", 0.1))
                    nn.init.trunc_normal_(module.weight, mean=0.0, std=stddev, a=-2, b=2)
                elif isinstance(module, nn.BatchNorm2d):
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)
        self.head = nn.Sequential(nn.Conv2d(768, 1024, 3, padding=1), nn.ReLU(inplace=False))
        nn.init.kaiming_normal_(self.head[0].weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.head[0].bias)
        self.out_channels = 1024
        self._record_aliases(net)

    def stage_modules(self) -> List[Tuple[str, nn.Module]]:  # noqa: D102
        return [("stem", self.stem), ("mixed5", self.mixed5), ("mixed6", self.mixed6), ("head", self.head)]


def load_pretrained(backbone: Backbone, name: str, source: str) -> str:
    """Load ImageNet weights into ``backbone`` from torchvision's weights API or a local file.

    Args:
        backbone: a freshly built backbone.
        name: its name in :data:`BACKBONE_NAMES` (for messages).
        source: ``"DEFAULT"`` or a member name of the architecture's torchvision weights enum
            (read from the torch hub cache, downloaded if missing and possible), or a file path.

    Returns:
        The report line (``loaded N of M backbone tensors from ...``).
    """
    what = f"{name} backbone"
    enum = backbone.torchvision_weights
    members = [w.name for w in enum] if enum is not None else []
    if source != "DEFAULT" and source not in members:
        if not os.path.exists(source):
            if os.path.sep in source or "." in source:
                raise WSOLInputError(f"{source}: pretrained weights file not found")
            raise WSOLInputError(f"--model.pretrained_path={source}: not a file nor one of {['DEFAULT', *members]}")
        return load_weights_file(backbone, source, what, backbone.weight_aliases, backbone.pretrained_tensor_names())
    if enum is None:
        raise WSOLInputError(f"--model.pretrained true: the {name} backbone has no ImageNet weights; pass "
                             f"--model.pretrained_path FILE (a state dict of it) or leave --model.pretrained false")
    weights = enum.DEFAULT if source == "DEFAULT" else enum[source]
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
    try:
        state_dict = weights.get_state_dict(progress=False)
    except Exception as error:  # no network here: name the file the user can place
        raise WSOLInputError(
            f"{cached}: ImageNet weights {enum.__name__}.{weights.name} not in the cache and "
            f"could not be downloaded ({type(error).__name__}); download {weights.url} there or pass "
            f"--model.pretrained_path=/path/to/file.pth") from None
    return load_state_dict_into(backbone, state_dict, f"{enum.__name__}.{weights.name}", what,
                                backbone.weight_aliases, backbone.pretrained_tensor_names())


_FACTORIES: Dict[str, Callable[[bool], Backbone]] = {
    "small": lambda pretrained: SmallBackbone(),
    "resnet50": lambda pretrained: ResNet50Backbone(),
    "vgg16": lambda pretrained: VGG16Backbone(),
    "inception_v3": lambda pretrained: InceptionV3Backbone(init_weights=not pretrained),
}


def build_backbone(name: str, pretrained_weights: Optional[str] = None) -> Backbone:
    """Build a backbone by name, with pretrained weights if given.

    Args:
        name: one of :data:`BACKBONE_NAMES`.
        pretrained_weights: ``None`` (random init), ``"DEFAULT"`` or a torchvision
            enum member name, or a local weights file (see :mod:`wsol_lightning.models.weights`).

    Returns:
        The backbone; when weights were loaded, :attr:`Backbone.weights_report` holds the line
        saying what was loaded, which was also printed (rank 0).
    """
    if name not in _FACTORIES:
        raise WSOLInputError(f"--model.backbone={name}: unknown backbone; choose one of {list(_FACTORIES)}")
    backbone = _FACTORIES[name](pretrained_weights is not None)
    backbone.weights_report = None
    if pretrained_weights is not None:
        from lightning.pytorch.utilities import rank_zero_info

        backbone.weights_report = load_pretrained(backbone, name, pretrained_weights)
        rank_zero_info(backbone.weights_report)
    return backbone


@functools.lru_cache(maxsize=1)
def _own_shapes() -> Tuple[Tuple[str, Dict[str, Tuple[int, ...]]], ...]:
    """Tensor names and shapes of this package's backbones (built on the meta device), for refusals."""
    known = []
    with torch.device("meta"):
        for name in BACKBONE_NAMES:
            shapes = {k: tuple(v.shape) for k, v in build_backbone(name).state_dict().items()}
            known.append((f"a state dict of wsol_lightning's {name} backbone", shapes))
    return tuple(known)


register_known_architectures(_own_shapes)
