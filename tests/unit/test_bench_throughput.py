"""benchmarks/bench_throughput.py's bare training step ((b) and (d)) on a module with fit.py's defaults."""

import torch

from benchmarks.bench_throughput import _Stepper
from wsol_lightning.module import WSOLModule


def test_the_bare_step_trains_a_module_without_a_trainer():
    module = WSOLModule(num_classes=5)  # fit.py's defaults: cosine schedule, whose length needs a Trainer
    assert module.hparams.lr_schedule == "cosine"
    stepper = _Stepper(module, torch.device("cpu"), "32")
    assert [group["lr"] for group in stepper.optimizer.param_groups] == \
        [group["lr"] for group in module.build_optimizer().param_groups]
    before = [p.detach().clone() for p in module.parameters()]
    stepper(torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3]))
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, module.parameters()))
