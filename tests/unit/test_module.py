"""WSOLModule: optimizer groups as the benchmark, refusals, divergence, metric names."""

import math
import re

import pytest
import torch

from tests.one_line import one_line_error
from wsol_lightning.module import NonFiniteLossError, WSOLModule


def test_new_layers_train_at_lr_times_ratio():
    module = WSOLModule(num_classes=3, backbone="vgg16", wsol_method="base", lr=0.01, lr_classifier_ratio=10,
                        lr_schedule="step")
    optimizer = module.configure_optimizers()["optimizer"]
    by_lr = {group["lr"]: {id(p) for p in group["params"]} for group in optimizer.param_groups}
    assert set(by_lr) == {0.01, 0.1}
    new = {id(p) for name, p in module.method.named_parameters() if name.startswith(("backbone.conv6.", "fc."))}
    assert by_lr[0.1] == new
    assert optimizer.defaults["nesterov"] and optimizer.defaults["momentum"] == 0.9
    assert optimizer.defaults["weight_decay"] == 1e-4


def test_lr_steps_down_every_decay_frequency():
    module = WSOLModule(num_classes=3, lr=0.1, lr_classifier_ratio=1.0, lr_decay_frequency=2, lr_schedule="step")
    config = module.configure_optimizers()
    scheduler = config["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(5):
        lrs.append(config["optimizer"].param_groups[0]["lr"])
        config["optimizer"].step()
        scheduler.step()
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")  # on purpose
def test_cosine_schedule_falls_from_lr_to_zero_over_the_runs_steps(tmp_path):
    from lightning.pytorch import Callback, Trainer
    from torch.utils.data import DataLoader

    seen = []

    class RecordLR(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append([group["lr"] for group in trainer.optimizers[0].param_groups])

    module = WSOLModule(num_classes=3, wsol_method="base", lr=0.1, lr_classifier_ratio=10.0, lr_schedule="cosine")
    batches = [{"image": torch.randn(2, 3, 64, 64), "label": torch.tensor([0, 1])} for _ in range(3)]
    trainer = Trainer(max_epochs=2, limit_val_batches=0, callbacks=[RecordLR()], logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    total = 6  # 2 epochs x 3 batches
    expected = [(1 + math.cos(math.pi * step / total)) / 2 for step in range(total)]
    start = {group["initial_lr"] for group in trainer.optimizers[0].param_groups}
    assert start <= {0.1, 1.0} and start  # lr, and lr x ratio for the new layers
    for group, initial in enumerate(group["initial_lr"] for group in trainer.optimizers[0].param_groups):
        assert [lrs[group] for lrs in seen] == pytest.approx([initial * f for f in expected])


@pytest.mark.parametrize("kwargs,message", [
    ({"bg_grid_size": 1.5}, r"--model.bg_grid_size=1.5 is out of range \[0.0, 1.0\]"),
    ({"lr": 0.0}, r"--model.lr=0.0 is out of range"),
    ({"has_drop_rate": -0.1}, r"--model.has_drop_rate=-0.1 is out of range"),
    ({"cam_curve_interval": 0.0}, r"--model.cam_curve_interval=0.0 is out of range"),
    ({"lr_schedule": "linear"}, r"--model.lr_schedule: 'linear' is not one of 'step', 'cosine'"),
    ({"nonsense": 1}, r"--model.nonsense: unknown hyperparameter"),
    ({"wsol_method": "magic"}, r"--model.wsol_method=magic: unknown method"),
])
def test_out_of_range_values_are_refused_in_one_line(kwargs, message):
    assert re.search(message, one_line_error(WSOLModule, num_classes=3, **kwargs))


def test_method_hyperparameters_are_recorded_in_hparams():
    module = WSOLModule(num_classes=3, bg_grid_size=0.4)
    assert module.hparams.bg_grid_size == 0.4
    assert module.hparams.has_drop_rate == 0.5
    assert module.method.hparams_values["bg_grid_size"] == 0.4


def test_diverging_loss_raises_a_named_error():
    module = WSOLModule(num_classes=3, wsol_method="base")
    with torch.no_grad():
        module.method.fc.weight.fill_(math.nan)
    batch = {"image": torch.randn(2, 3, 64, 64), "label": torch.tensor([0, 1])}
    with pytest.raises(NonFiniteLossError, match=r"training loss is nan at epoch 0.*lower --model.lr"):
        module.training_step(batch, 0)


def test_deferred_loss_check_reports_the_first_bad_step_at_the_next_check():
    """On CUDA the host reads finiteness every log_every_n_steps steps (no stall per step); forced here on CPU."""
    from types import SimpleNamespace

    module = WSOLModule(num_classes=3, wsol_method="base")
    module.defer_loss_check = True
    module.trainer = SimpleNamespace(global_step=0, current_epoch=2, log_every_n_steps=3)
    module._watch_loss(torch.tensor(1.0))                   # step 0
    module.trainer.global_step = 1
    module._watch_loss(torch.tensor(math.inf))              # step 1: recorded on the device, not read yet
    module.trainer.global_step = 2
    with pytest.raises(NonFiniteLossError, match=r"training loss is inf at epoch 2, step 1 \(diverged\)"):
        module._watch_loss(torch.tensor(math.nan))          # step 2: the third step reads it
    module._first_bad_loss = None
    module.trainer.global_step = 3
    module._watch_loss(torch.tensor(math.nan))              # step 3: recorded...
    with pytest.raises(NonFiniteLossError, match=r"training loss is nan at epoch 2, step 3 "):
        module.on_train_epoch_end()                         # ...and read at the epoch's end
