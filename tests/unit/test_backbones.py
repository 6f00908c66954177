"""Backbones: the benchmark's feature-map sizes; weights errors name the file."""

import pytest
import torch

from wsol_lightning.errors import WSOLInputError
from wsol_lightning.models.backbones import build_backbone


@pytest.mark.parametrize("name,size,channels,side", [
    ("small", 64, 256, 8), ("resnet50", 224, 2048, 14), ("vgg16", 224, 1024, 14), ("inception_v3", 224, 1024, 27)])
def test_feature_map_shapes(name, size, channels, side):
    backbone = build_backbone(name).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, size, size))
    assert features.shape == (1, channels, side, side)
    assert backbone.out_channels == channels


def test_resnet50_layer4_keeps_resolution():
    backbone = build_backbone("resnet50")
    assert backbone.layer4[0].conv2.stride == (1, 1)
    assert backbone.layer4[0].downsample[0].stride == (1, 1)


def test_local_weights_file_round_trip(tmp_path):
    source = build_backbone("vgg16")
    path = tmp_path / "vgg16.pth"
    import torchvision

    net = torchvision.models.vgg16(weights=None)
    torch.save(net.state_dict(), path)
    loaded = build_backbone("vgg16", str(path))
    assert torch.equal(loaded.conv1_3[0].weight, net.features[0].weight)
    assert not torch.equal(source.conv1_3[0].weight, net.features[0].weight)


def test_missing_weights_file_is_one_line_error(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(WSOLInputError, match=r"nope.pth: pretrained weights file not found"):
        build_backbone("resnet50", str(missing))


def test_unknown_backbone():
    with pytest.raises(WSOLInputError, match=r"--model.backbone=alexnet"):
        build_backbone("alexnet")
