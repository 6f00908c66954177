"""Weights files as users hold them: every form loads the same tensors; bad files are one-line refusals.

Oracle: random-init torchvision state dicts (torchvision's own names) saved to tmp files; after loading,
named tensors of the backbone must equal the file's tensors at the torchvision positions written out
here by hand (``conv1.weight`` is ``stem.0.weight``, ``features.28`` is ``conv5.4``, ...), and the
counts in the report line are those of the architectures (ResNet-50: 53 convolutions + 53 BatchNorms
x 4 tensors = 265; VGG-16: 13 convolutions x 2 = 26 plus conv6's 2 new; Inception-v3 up to Mixed_6e:
350 plus the head's 2 new).
"""

import pytest
import torch
from torch import nn
from torchvision import models as tv_models
from torchvision.models import vgg as tv_vgg

from tests.one_line import one_line_error
from wsol_lightning.fit import main as fit_main
from wsol_lightning.models.backbones import InceptionV3Backbone, SmallBackbone, build_backbone
from wsol_lightning.models.weights import MIN_MATCHED_FRACTION, load_weights_file

def _torchvision_state_dict(name):
    """A random-init state dict with torchvision's names (VGG-16: its convolutions, the part backbones use)."""
    torch.manual_seed(123)
    if name == "resnet50":
        net = tv_models.resnet50(weights=None)
    elif name == "inception_v3":
        net = tv_models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    else:
        net = nn.Module()
        net.features = tv_vgg.make_layers(tv_vgg.cfgs["D"])
    return {k: v.clone() for k, v in net.state_dict().items()}


#: (torchvision name, backbone tensor) pairs per architecture, written out by hand.
POSITIONS = {
    "resnet50": [("conv1.weight", lambda b: b.stem[0].weight), ("bn1.running_var", lambda b: b.stem[1].running_var),
                 ("layer2.3.bn2.bias", lambda b: b.layer2[3].bn2.bias),
                 ("layer4.0.downsample.0.weight", lambda b: b.layer4[0].downsample[0].weight),
                 ("layer4.2.conv3.weight", lambda b: b.layer4[2].conv3.weight)],
    "vgg16": [("features.0.weight", lambda b: b.conv1_3[0].weight), ("features.14.bias", lambda b: b.conv1_3[14].bias),
              ("features.17.weight", lambda b: b.conv4[0].weight), ("features.28.weight", lambda b: b.conv5[4].weight)],
    "inception_v3": [("Conv2d_1a_3x3.conv.weight", lambda b: b.stem[0].conv.weight),
                     ("Conv2d_4a_3x3.bn.running_mean", lambda b: b.stem[5].bn.running_mean),
                     ("Mixed_5d.branch_pool.conv.weight", lambda b: b.mixed5[2].branch_pool.conv.weight),
                     ("Mixed_6a.branch3x3.conv.weight", lambda b: b.mixed6[0].branch3x3.conv.weight),
                     ("Mixed_6e.branch7x7dbl_5.bn.weight", lambda b: b.mixed6[4].branch7x7dbl_5.bn.weight)],
}
COUNTS = {"resnet50": (265, 265), "vgg16": (26, 28), "inception_v3": (350, 352)}
NEW = {"resnet50": "", "vgg16": "; random init: conv6.0.weight, conv6.0.bias",
       "inception_v3": "; random init: head.0.weight, head.0.bias"}


@pytest.fixture(scope="module", params=["resnet50", "vgg16", "inception_v3"])
def arch(request):
    """(name, torchvision-named random state dict, one backbone of it built once)."""
    name = request.param
    backbone = InceptionV3Backbone(init_weights=False) if name == "inception_v3" else build_backbone(name)
    return name, _torchvision_state_dict(name), backbone


def _assert_loaded(backbone, name, state_dict, shift=0.0):
    for key, tensor_of in POSITIONS[name]:
        assert torch.equal(tensor_of(backbone), state_dict[key] + shift), key


def test_torchvision_state_dict_loads_with_a_report_line(arch, tmp_path):
    name, state_dict, _ = arch
    path = tmp_path / f"{name}.pth"
    torch.save(state_dict, path)
    backbone = build_backbone(name, str(path))
    _assert_loaded(backbone, name, state_dict)
    loaded, total = COUNTS[name]
    assert backbone.weights_report.startswith(f"loaded {loaded} of {total} backbone tensors from {path}{NEW[name]}")


def _forms(name, state_dict, backbone):
    """Each form as users hold it; form k holds the tensors + k, so a form that loads nothing is caught."""
    own = {backbone.weight_aliases[k]: v for k, v in state_dict.items() if k in backbone.weight_aliases}
    yield "nested, module.", 1.0, {"state_dict": {f"module.{k}": v + 1.0 for k, v in state_dict.items()}, "epoch": 9}
    yield "model, backbone.", 2.0, {"model": {f"backbone.{k}": v + 2.0 for k, v in state_dict.items()}}
    checkpoint = {"epoch": 3, "global_step": 40, "hyper_parameters": {"backbone": name, "wsol_method": "has"},
                  "state_dict": {**{f"method.backbone.{k}": v + 3.0 for k, v in own.items()},
                                 "method.classifier.weight": torch.zeros(5, backbone.out_channels)}}
    yield "Lightning checkpoint", 3.0, checkpoint


def test_nested_prefixed_and_checkpoint_forms_load_the_same_tensors(arch, tmp_path):
    name, state_dict, backbone = arch
    for index, (form, shift, content) in enumerate(_forms(name, state_dict, backbone)):
        path = tmp_path / f"form{index}.pth"
        torch.save(content, path)
        report = load_weights_file(backbone, str(path), f"{name} backbone", backbone.weight_aliases,
                                   backbone.pretrained_tensor_names())
        _assert_loaded(backbone, name, state_dict, shift)
        assert report.startswith(f"loaded {COUNTS[name][0]} of "), (form, report)


def test_another_architecture_is_refused_saying_what_it_looks_like(arch, tmp_path):
    name, state_dict, _ = arch
    path = tmp_path / f"{name}.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state_dict.items()}}, path)
    other = {"resnet50": "vgg16", "vgg16": "inception_v3", "inception_v3": "resnet50"}[name]
    message = one_line_error(build_backbone, other, str(path))
    assert message.startswith(f"{path}: provides 0 of the {COUNTS[other][0]} tensors of a {other} backbone")
    assert message.endswith(f"it looks like a {name} state dict")


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    """(path of a torchvision ResNet-50 state dict, the state dict, a ResNet-50 backbone to load files into)."""
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    state_dict = _torchvision_state_dict("resnet50")
    torch.save(state_dict, path)
    return path, state_dict, build_backbone("resnet50")


def _load_resnet(resnet_file, path):
    backbone = resnet_file[2]
    return load_weights_file(backbone, str(path), "resnet50 backbone", backbone.weight_aliases,
                             backbone.pretrained_tensor_names())


def test_a_file_missing_a_few_tensors_loads_and_names_them(resnet_file, tmp_path):
    partial = {k: v for k, v in resnet_file[1].items() if not k.startswith("layer1.0.conv1.")}
    torch.save(partial, tmp_path / "partial.pth")
    report = _load_resnet(resnet_file, tmp_path / "partial.pth")
    assert report.startswith("loaded 264 of 265 backbone tensors")
    assert "; random init: layer1.0.conv1.weight;" in report


def test_a_file_providing_too_few_tensors_is_refused(resnet_file, tmp_path):
    keep = 238  # 89.8% of ResNet-50's 265 backbone tensors: under the 90% a file must provide; 239 is 90.2%
    assert MIN_MATCHED_FRACTION == 0.9
    names = [k for k in resnet_file[1] if not k.endswith("num_batches_tracked") and not k.startswith("fc.")]
    torch.save({k: resnet_file[1][k] for k in names[:keep]}, tmp_path / "few.pth")
    message = one_line_error(_load_resnet, resnet_file, tmp_path / "few.pth")
    assert f"provides {keep} of the 265 tensors of a resnet50 backbone" in message
    torch.save({k: resnet_file[1][k] for k in names[:keep + 1]}, tmp_path / "enough.pth")
    assert _load_resnet(resnet_file, tmp_path / "enough.pth").startswith(f"loaded {keep + 1} of 265")


def test_wrong_shapes_do_not_load(resnet_file, tmp_path):
    wide = dict(resnet_file[1], **{"layer1.0.conv2.weight": torch.zeros(128, 128, 3, 3)})
    torch.save(wide, tmp_path / "wide.pth")
    report = _load_resnet(resnet_file, tmp_path / "wide.pth")
    assert report.startswith("loaded 264 of 265")
    assert "1 of another shape (e.g. layer1.0.conv2.weight [128, 128, 3, 3] vs [64, 64, 3, 3])" in report


class _Unsafe:  # a class pickled into a file: loading it would need code execution
    pass


BAD_FILES = [
    ("missing", None, "pretrained weights file not found"),
    ("empty", lambda p, r: p.write_bytes(b""), "empty file, not a weights file"),
    ("text", lambda p, r: p.write_text("conv1.weight: [0.1, 0.2]\n"), "not a torch file (it is text starting"),
    ("png", lambda p, r: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100)), "not a torch file (it starts with bytes 89"),
    ("truncated zip", lambda p, r: p.write_bytes(r.read_bytes()[:1_000_000]), "truncated or corrupt torch file"),
    ("truncated legacy", lambda p, r: p.write_bytes(_legacy_bytes()[:5000]), "truncated or corrupt torch file"),
    ("unsafe", lambda p, r: torch.save({"weights": torch.zeros(1), "config": _Unsafe()}, p),
     f"needs unsafe unpickling (it stores the Python object {_Unsafe.__module__}._Unsafe"),
    ("whole module", lambda p, r: torch.save(SmallBackbone(), p),
     "needs unsafe unpickling (it stores the Python object wsol_lightning.models.backbones.SmallBackbone"),
    ("no tensors", lambda p, r: torch.save({"epoch": 3, "best_acc": 71.2}, p), "a dict without a state dict"),
]


def _legacy_bytes():
    import io

    buffer = io.BytesIO()
    torch.save({"conv.weight": torch.zeros(64, 3, 7, 7)}, buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


@pytest.mark.parametrize("kind,write,message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_are_one_line_errors_naming_the_file(resnet_file, tmp_path, kind, write, message):
    path = tmp_path / "weights.pth"
    if write is not None:
        write(path, resnet_file[0])
    error = one_line_error(build_backbone, "small", str(path))  # refused before the architecture matters
    assert error.startswith(f"{path}: {message}"), error


def test_weights_files_are_read_with_weights_only(tmp_path, monkeypatch):
    seen = []
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    torch.save(SmallBackbone().state_dict(), tmp_path / "small.pth")
    build_backbone("small", str(tmp_path / "small.pth"))
    assert seen == [True]


@pytest.mark.filterwarnings("ignore::DeprecationWarning:lightning.pytorch.cli")  # LightningCLI on jsonargparse 4.53
def test_fit_refuses_another_architecture_in_one_line_exit_2(resnet_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        fit_main(["--model.backbone", "small", "--model.pretrained_path", str(resnet_file[0]),
                  "--data.data_root", str(tmp_path), "--run_dir", str(tmp_path / "run")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"error: {resnet_file[0]}: provides 0 of the 20 tensors of a small "
                                            f"backbone (by name and shape); it looks like a resnet50 state dict")
