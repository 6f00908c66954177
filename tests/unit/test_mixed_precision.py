"""bf16 autocast (what --trainer.precision bf16-mixed runs) for every method; channels-last layout."""

import copy

import pytest
import torch

from wsol_lightning.module import WSOLModule

METHODS = ["base", "has", "acol", "spg", "adl", "cutmix"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny inputs: one intra-op thread is faster and steadier on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("backbone,method", [("small", m) for m in METHODS] + [("resnet50", "adl")])
def test_bf16_training_step_and_float32_score_maps(backbone, method):
    torch.manual_seed(0)
    module = WSOLModule(num_classes=3, backbone=backbone, wsol_method=method)
    images, labels = torch.randn(2, 3, 64, 64), torch.tensor([0, 2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        batch = module.method.augment(images, labels)
        outputs = module.method(batch.images, batch.labels)
        loss = module.method.loss(outputs, batch)
    assert outputs["features"].dtype == torch.bfloat16  # the network did run in bf16
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)

    module.eval()
    with torch.no_grad():
        _, maps32 = module.scoremaps(images, labels)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cams = module.method.cams(images, labels)
            logits, maps16 = module.scoremaps(images, labels)
    assert maps16.dtype == torch.float32 and maps16.shape == (2, 224, 224)
    assert 0 <= float(maps16.min()) and float(maps16.max()) <= 1
    if method in ("base", "has", "adl", "cutmix"):  # the CAM's weighted sum runs in float32
        assert cams.dtype == torch.float32
    # bf16 features move the maps by bf16 rounding only (measured: mean |diff| <= 0.009)
    assert float((maps16 - maps32).abs().mean()) < 0.03


def test_channels_last_changes_layout_not_results():
    torch.manual_seed(0)
    plain = WSOLModule(num_classes=3, wsol_method="acol", channels_last=False)
    last = copy.deepcopy(plain)
    last.hparams.channels_last = True
    plain.setup("fit"), last.setup("fit")
    conv = last.method.backbone.block1[0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert plain.method.backbone.block1[0][0].weight.is_contiguous()
    images, labels = torch.randn(2, 3, 64, 64), torch.tensor([1, 2])
    assert last.model_input(images).is_contiguous(memory_format=torch.channels_last)
    plain.eval(), last.eval()
    with torch.no_grad():
        logits_p, maps_p = plain.scoremaps(images, labels)
        logits_l, maps_l = last.scoremaps(images, labels)
    assert torch.allclose(logits_p, logits_l, atol=1e-5) and torch.allclose(maps_p, maps_l, atol=1e-4)


def test_channels_last_auto_is_off_without_a_cuda_device_and_bad_values_are_refused():
    from tests.one_line import one_line_error

    module = WSOLModule(num_classes=3)
    assert module.hparams.channels_last == "auto"
    module.setup("fit")
    assert module.memory_format == torch.contiguous_format
    assert one_line_error(WSOLModule, num_classes=3, channels_last="yes") == \
        "--model.channels_last='yes' must be true, false or auto"


def test_undecoded_uint8_batches_are_refused_with_the_fix():
    module = WSOLModule(num_classes=3)
    batch = {"image": torch.zeros(2, 72, 72, 3, dtype=torch.uint8), "label": torch.tensor([0, 1])}
    with pytest.raises(TypeError, match="datamodule=WSOLDataModule"):
        module.training_step(batch, 0)


@pytest.mark.slow
def test_lightning_bf16_mixed_fit_and_validate_with_channels_last(tmp_path):
    from lightning.pytorch import Trainer

    from wsol_lightning.data.datamodule import WSOLDataModule

    datamodule = WSOLDataModule(data_root=str(tmp_path), synthetic_num_train=16, synthetic_num_val=8,
                                synthetic_num_test=4, batch_size=8, num_workers=0)
    module = WSOLModule(num_classes=datamodule.num_classes, wsol_method="spg", channels_last=True)
    trainer = Trainer(max_epochs=1, precision="bf16-mixed", accelerator="cpu", logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=tmp_path)
    trainer.fit(module, datamodule=datamodule)
    metrics = trainer.callback_metrics
    assert {"val/localization", "val/MaxBoxAccV2", "val/PxAP", "train/loss_epoch"} <= set(metrics)
    assert metrics["val/localization"].dtype == torch.float32 and torch.isfinite(metrics["train/loss_epoch"])
    assert module.method.backbone.block2[0][0].weight.is_contiguous(memory_format=torch.channels_last)
