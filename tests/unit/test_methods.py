"""WSOL methods: every method x backbone trains and evaluates; each method's own behaviour is pinned."""

import copy
import functools
import math

import pytest
import torch
import torch.nn.functional as F

from tests.one_line import one_line_error
from wsol_lightning.models.backbones import build_backbone
from wsol_lightning.models.methods.acol import ACoL
from wsol_lightning.models.methods.adl import ADL, ADLMethod
from wsol_lightning.models.methods.base import TrainingBatch
from wsol_lightning.models.methods.common import mixed_cross_entropy, normalize_per_map
from wsol_lightning.models.methods.cutmix import CutMix, cutmix
from wsol_lightning.models.methods.registry import METHODS, all_hyperparameters, get_method
from wsol_lightning.models.methods.spg import SPG, guidance_mask, masked_bce

#: Smallest inputs that keep each backbone's maps a few cells wide (fast on CPU).
SIZES = {"small": 64, "resnet50": 64, "vgg16": 64, "inception_v3": 64}
#: Feature-map side of each method's CAM at those sizes.
CAM_SIDES = {"small": 8, "resnet50": 4, "vgg16": 4, "inception_v3": 7}
NUM_CLASSES = 3


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these inputs are tiny, and two threads stall ~30x when another
    process holds one of the two cores (measured); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.lru_cache(maxsize=None)
def _pristine(name):
    return build_backbone(name)


def _backbone(name):
    """A fresh backbone (building vgg16 takes seconds; copying a cached one does not)."""
    return copy.deepcopy(_pristine(name))


@pytest.mark.parametrize("backbone", list(SIZES))
@pytest.mark.parametrize("method_name", ["base", "has", "acol", "spg", "adl", "cutmix"])
def test_training_and_validation_step(method_name, backbone):
    method = get_method(method_name)(_backbone(backbone), NUM_CLASSES)
    size = SIZES[backbone]
    images, labels = torch.randn(2, 3, size, size), torch.tensor([0, 2])
    optimizer = torch.optim.SGD(method.parameters(), lr=1e-3)

    method.train()
    batch = method.augment(images, labels)
    outputs = method(batch.images, batch.labels)
    loss = method.loss(outputs, batch)
    assert outputs["logits"].shape == (2, NUM_CLASSES)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    optimizer.step()

    method.eval()
    with torch.no_grad():
        outputs = method(images)
        cams = method.cams(images, labels, outputs)
    side = CAM_SIDES[backbone]
    assert outputs["logits"].shape == (2, NUM_CLASSES)
    assert cams.shape == (2, side, side)
    assert torch.isfinite(cams).all()


def test_registry_names_and_flags_are_unique():
    assert set(METHODS) == {"base", "has", "acol", "spg", "adl", "cutmix"}
    hparams = all_hyperparameters()
    assert {"acol_threshold", "adl_drop_rate", "adl_threshold", "cutmix_beta", "cutmix_prob"} <= set(hparams)
    assert {f"spg_threshold_{i}{l}" for i in "123" for l in "hl"} <= set(hparams)


def test_benchmark_defaults():
    expected = {"acol_threshold": 0.7, "spg_threshold_1h": 0.7, "spg_threshold_1l": 0.01,
                "spg_threshold_2h": 0.5, "spg_threshold_2l": 0.05, "spg_threshold_3h": 0.7,
                "spg_threshold_3l": 0.1, "adl_drop_rate": 0.75, "adl_threshold": 0.9,
                "cutmix_beta": 1.0, "cutmix_prob": 1.0}
    hparams = all_hyperparameters()
    for name, value in expected.items():
        assert hparams[name].default == value, name
        low, high = hparams[name].valid
        assert low <= hparams[name].search[0] <= hparams[name].search[1] <= high, name


@pytest.mark.parametrize("cls,name,value", [(ACoL, "acol_threshold", 1.5), (ADLMethod, "adl_drop_rate", -0.1),
                                            (SPG, "spg_threshold_2l", 2.0), (CutMix, "cutmix_prob", 1.1)])
def test_out_of_range_values_are_refused_in_one_line(cls, name, value):
    message = one_line_error(cls, _backbone("small"), NUM_CLASSES, **{name: value})
    assert message.startswith(f"--model.{name}={value} is out of range"), message


# ---------------------------------------------------------------------- ACoL
def test_acol_second_branch_sees_the_erased_map():
    method = ACoL(_backbone("small"), NUM_CLASSES, acol_threshold=0.6).train()
    seen = {}
    method.classifier_b.register_forward_hook(lambda m, inputs, out: seen.update(input=inputs[0]))
    images, labels = torch.randn(2, 3, 64, 64), torch.tensor([1, 2])
    outputs = method(images, labels)

    features = method.backbone(images)
    class_map = outputs["class_maps_a"].detach()[torch.arange(2), labels]
    flat = class_map.flatten(1)
    attention = (class_map - flat.amin(1).view(-1, 1, 1)) / (flat.amax(1) - flat.amin(1)).view(-1, 1, 1)
    erased = attention >= 0.6
    assert erased.any() and (~erased).any()
    assert torch.equal(seen["input"], features * (~erased).unsqueeze(1).float())
    # each image's most confident position of its label is always erased
    assert not erased.flatten(1).logical_not().all(dim=1).any()
    assert outputs["logits_b"].shape == (2, NUM_CLASSES)


def test_acol_erases_the_predicted_class_without_labels_and_cams_use_the_asked_class():
    method = ACoL(_backbone("small"), NUM_CLASSES).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        outputs = method(images)
        assert torch.equal(outputs["erase_labels"], outputs["logits"].argmax(1))
        other = (outputs["erase_labels"] + 1) % NUM_CLASSES
        cams = method.cams(images, other, outputs)
        direct = method.cams(images, other, method(images, other))
    assert torch.allclose(cams, direct)
    assert cams.min() >= 0 and cams.max() <= 1
    # the CAM is the maximum of both branches' normalized maps
    expected = torch.maximum(normalize_per_map(method(images, other)["class_maps_a"])[torch.arange(2), other],
                             normalize_per_map(method(images, other)["class_maps_b"])[torch.arange(2), other])
    assert torch.allclose(cams, expected)


def test_acol_loss_is_the_sum_of_both_cross_entropies():
    method = ACoL(_backbone("small"), NUM_CLASSES)
    images, labels = torch.randn(2, 3, 64, 64), torch.tensor([0, 1])
    outputs = method(images, labels)
    loss = method.loss(outputs, TrainingBatch(images, labels))
    expected = F.cross_entropy(outputs["logits"], labels) + F.cross_entropy(outputs["logits_b"], labels)
    assert torch.allclose(loss, expected)


def test_acol_and_spg_replace_the_cam_conv_of_vgg_and_inception():
    assert isinstance(ACoL(_backbone("vgg16"), NUM_CLASSES).backbone.conv6, torch.nn.Identity)
    assert isinstance(SPG(_backbone("inception_v3"), NUM_CLASSES).backbone.head, torch.nn.Identity)


@pytest.mark.parametrize("backbone,fast", [("small", False), ("resnet50", False), ("vgg16", True),
                                           ("inception_v3", True)])
def test_acol_and_spg_heads_learning_rate_group_follows_the_reference(backbone, fast):
    for cls, head in ((ACoL, "classifier_a."), (SPG, "b_shared.")):
        prefixes = cls(_backbone(backbone), NUM_CLASSES).new_layer_prefixes()
        assert (head in prefixes) == fast, (cls.name, backbone)


# ----------------------------------------------------------------------- SPG
def test_spg_masks_follow_thresholds():
    attention = torch.linspace(0, 1, 100).view(1, 1, 10, 10)
    mask = guidance_mask(attention, high=0.7, low=0.2, min_foreground=5)
    assert torch.equal(mask[attention > 0.7], torch.ones(int((attention > 0.7).sum())))
    assert torch.equal(mask[attention < 0.2], torch.zeros(int((attention < 0.2).sum())))
    middle = (attention >= 0.2) & (attention <= 0.7)
    assert (mask[middle] == -1).all()
    # too few pixels above `high`: 0.7 x the image's maximum becomes the threshold
    mask = guidance_mask(attention, high=0.999, low=0.2, min_foreground=5)
    assert torch.equal(mask > 0, attention > 0.7)
    # background wins where both hold (high < low)
    mask = guidance_mask(attention, high=0.3, low=0.5, min_foreground=5)
    assert (mask[attention < 0.5] == 0).all() and (mask[attention >= 0.5] == 1).all()


def test_spg_bce_ignores_unlabelled_pixels_and_is_zero_without_any():
    logits = torch.randn(1, 1, 4, 4)
    mask = torch.full((1, 1, 4, 4), -1.0)
    assert masked_bce(logits, mask) == 0
    mask[0, 0, 0, :2] = torch.tensor([1.0, 0.0])
    expected = F.binary_cross_entropy_with_logits(logits[0, 0, 0, :2], torch.tensor([1.0, 0.0]))
    assert torch.allclose(masked_bce(logits, mask), expected)


def test_spg_guidance_masks_use_the_configured_thresholds():
    values = dict(spg_threshold_1h=0.8, spg_threshold_1l=0.3, spg_threshold_2h=0.6, spg_threshold_2l=0.4,
                  spg_threshold_3h=0.9, spg_threshold_3l=0.1)
    method = SPG(_backbone("small"), NUM_CLASSES, **values).train()
    images, labels = torch.randn(2, 3, 64, 64), torch.tensor([0, 1])
    outputs = method(images, labels)
    guide = method.guidance(outputs, labels)
    assert guide["mask_b2"].shape == guide["logits_b2"].shape == (2, 1, 64, 64)
    b2 = torch.sigmoid(guide["logits_b2"].detach())
    assert torch.equal(guide["mask_b1"], guidance_mask(b2, 0.6, 0.4, 30 * 64 * 64 / 224 ** 2))
    class_map = F.interpolate(outputs["class_maps"].detach()[torch.arange(2), labels].unsqueeze(1),
                              size=(64, 64), mode="bilinear", align_corners=False)
    attention = normalize_per_map(class_map)
    assert (guide["mask_b2"][attention < 0.3] == 0).all()
    assert (guide["mask_b2"][(attention >= 0.3) & (attention <= 0.8)] == -1).all()
    loss = method.loss(outputs, TrainingBatch(images, labels))

    def bce_over_labelled(logits, mask):  # written out: mean over pixels whose mask is 0 or 1
        labelled = mask >= 0
        x, m = logits[labelled].double(), mask[labelled].double()
        return -(m * F.logsigmoid(x) + (1 - m) * F.logsigmoid(-x)).mean()

    terms = [bce_over_labelled(guide[f"logits_{k}"].detach(), guide[f"mask_{k}"]) for k in ("b2", "b1", "c")]
    assert all(term > 0.01 for term in terms)  # each term counts, so a dropped one shows
    expected = F.cross_entropy(outputs["logits"].detach().double(), labels) + sum(terms)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)


def test_spg_cam_is_the_raw_class_map():
    method = SPG(_backbone("small"), NUM_CLASSES).eval()
    images, labels = torch.randn(2, 3, 64, 64), torch.tensor([2, 0])
    with torch.no_grad():
        outputs = method(images)
        assert torch.equal(method.cams(images, labels, outputs), outputs["class_maps"][torch.arange(2), labels])
        assert torch.allclose(outputs["logits"], outputs["class_maps"].mean(dim=(2, 3)))


# ----------------------------------------------------------------------- ADL
def test_adl_drops_the_most_activated_region_in_training_only():
    features = torch.rand(2, 4, 6, 6)
    features[0, :, 2, 3] += 5.0  # the most activated position of image 0
    layer = ADL(drop_rate=1.0, threshold=0.9).train()
    dropped = layer(features)
    attention = features.mean(dim=1, keepdim=True)
    expected = features * (attention < 0.9 * attention.flatten(1).amax(1).view(-1, 1, 1, 1)).float()
    assert torch.equal(dropped, expected)
    assert (dropped[0, :, 2, 3] == 0).all()
    assert torch.equal(ADL(drop_rate=0.0, threshold=0.9).train()(features), features * torch.sigmoid(attention))
    assert ADL(drop_rate=1.0, threshold=0.9).eval()(features) is features


def test_adl_drop_rate_is_the_fraction_of_batches_that_drop():
    torch.manual_seed(0)
    layer = ADL(drop_rate=0.75, threshold=0.5).train()
    features = torch.rand(1, 2, 4, 4) + 1
    drops = sum(bool((layer(features) == 0).any()) for _ in range(2000))
    assert abs(drops / 2000 - 0.75) < 0.04


@pytest.mark.parametrize("backbone,count", [("small", 2), ("resnet50", 3), ("vgg16", 3), ("inception_v3", 3)])
def test_adl_layers_sit_at_the_benchmark_positions(backbone, count):
    method = ADLMethod(_backbone(backbone), NUM_CLASSES, adl_drop_rate=0.3, adl_threshold=0.6)
    layers = [m for m in method.modules() if isinstance(m, ADL)]
    assert len(layers) == count == len(method.adl_layers)
    assert all(layer.drop_rate == 0.3 and layer.threshold == 0.6 for layer in layers)
    named = {name for name, module in method.backbone.named_modules() if isinstance(module, ADL)}
    expected = {"small": {"after_block3", "after_block4"},
                "resnet50": {"layer3.0.1", "layer4.0.1", "after_layer4"},
                "vgg16": {"after_conv1_3", "conv4.6", "after_conv5"},
                "inception_v3": {"after_mixed5", "after_mixed6", "after_head"}}[backbone]
    assert named == expected
    if backbone == "vgg16":
        assert isinstance(method.backbone.conv4[7], torch.nn.MaxPool2d)  # ADL before pool4


def test_adl_network_in_eval_equals_the_network_without_adl():
    method = ADLMethod(_backbone("small"), NUM_CLASSES, adl_drop_rate=1.0).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        with_adl = method(images)["features"]
        for layer in method.adl_layers:
            layer.train()  # active again: the output changes
        assert not torch.equal(method(images)["features"], with_adl)
        method.backbone.stage_hooks.clear()
        assert torch.equal(method.backbone.eval()(images), with_adl)


# -------------------------------------------------------------------- CutMix
def test_cutmix_mixes_labels_in_proportion_to_the_pasted_area():
    torch.manual_seed(3)
    images = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 3, 32, 32).contiguous()
    labels = torch.arange(8)
    for _ in range(20):
        batch = cutmix(images, labels, beta=1.0)
        own = (batch.images[:, 0] == images[:, 0]).float().mean(dim=(1, 2))
        moved = labels != batch.mixed_labels
        assert torch.allclose(own[moved], torch.full_like(own[moved], batch.mix_weight))
        # the pasted pixels carry the label named in mixed_labels
        pasted = batch.images[:, 0] != images[:, 0]
        for i in torch.nonzero(moved).flatten().tolist():
            assert (batch.images[i, 0][pasted[i]] == batch.mixed_labels[i].float()).all()
    assert torch.equal(images[:, 0, 0, 0], torch.arange(8, dtype=torch.float32))  # input untouched


def test_cutmix_loss_mixes_the_cross_entropies():
    logits = torch.randn(4, NUM_CLASSES)
    batch = TrainingBatch(torch.zeros(4, 3, 8, 8), torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 0, 0]), 0.25)
    expected = 0.25 * F.cross_entropy(logits, batch.labels) + 0.75 * F.cross_entropy(logits, batch.mixed_labels)
    assert torch.allclose(mixed_cross_entropy(logits, batch), expected)


def test_cutmix_probability_and_beta_zero():
    images, labels = torch.randn(4, 3, 16, 16), torch.arange(4)
    never = CutMix(_backbone("small"), NUM_CLASSES, cutmix_prob=0.0)
    assert never.augment(images, labels).mixed_labels is None
    off = CutMix(_backbone("small"), NUM_CLASSES, cutmix_beta=0.0)
    assert off.augment(images, labels).images is images
    torch.manual_seed(0)
    half = CutMix(_backbone("small"), NUM_CLASSES, cutmix_prob=0.5)
    mixed = sum(half.augment(images, labels).mixed_labels is not None for _ in range(400))
    assert abs(mixed / 400 - 0.5) < 0.08


def test_cutmix_box_area_follows_beta_on_average():
    torch.manual_seed(1)
    images, labels = torch.zeros(2, 3, 64, 64), torch.arange(2)
    weights = [cutmix(images, labels, beta=1.0).mix_weight for _ in range(500)]
    # lam ~ U(0, 1): the kept fraction averages about 1/2 (a bit more: boxes are clipped at borders)
    assert 0.5 < sum(weights) / len(weights) < 0.7
    assert all(0.0 <= w <= 1.0 for w in weights) and not math.isnan(sum(weights))


# ------------------------------------------------------------- search spaces
@pytest.mark.parametrize("method_name", ["base", "has", "acol", "spg", "adl", "cutmix"])
def test_search_space_file_fits_the_method(method_name):
    import pathlib

    import yaml

    path = pathlib.Path(__file__).resolve().parents[2] / "configs" / "search" / f"{method_name}.yaml"
    space = yaml.safe_load(path.read_text())
    assert space["fixed"] == {"model.wsol_method": method_name}
    hparams = get_method(method_name).hyperparameters
    searched = {key[len("model."):] for key in space["parameters"] if key.startswith("model.")}
    assert set(hparams) <= searched  # every knob of the method is searched
    for key, spec in space["parameters"].items():
        name = key[len("model."):]
        if name in hparams:
            low, high = hparams[name].valid
            assert spec["type"] == "float" and low <= spec["low"] < spec["high"] <= high, key
    assert space["parameters"]["model.lr"] == {"type": "float", "low": 1e-5, "high": 1.0, "log": True}
    assert space["parameters"]["data.batch_size"] == {"type": "categorical", "choices": [32, 64]}
