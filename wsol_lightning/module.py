"""``WSOLModule``: the LightningModule that trains a WSOL network and scores its CAMs.

Training: the method's batch augmentation (HaS, CutMix, ...), its forward pass
and loss (cross-entropy, plus method terms); SGD with Nesterov momentum 0.9,
weight decay 1e-4, new layers at ``lr * lr_classifier_ratio`` and step decay
(x0.1 every ``lr_decay_frequency`` epochs), as wsolevaluation trains; or, with
``lr_schedule="cosine"``, a cosine decay to 0 over the run's optimizer steps
(what tune.py's short trials use: the last epoch is not noisier than the first).

Validation and test: the CAM of the ground-truth class becomes a 224x224 score
map (:func:`cams_to_scoremaps`); torchmetrics metrics accumulate per batch and
are logged once per epoch under stable names (users monitor them):

``{stage}/top1``, ``{stage}/MaxBoxAcc``, ``{stage}/MaxBoxAccV2``,
``{stage}/MaxBoxAccV2_IoU{30,50,70}``, ``{stage}/top1_loc`` on box datasets,
``{stage}/PxAP`` on mask datasets, and ``{stage}/localization`` =
MaxBoxAccV2 on box datasets, PxAP on mask-only datasets.

Mixed precision (``--trainer.precision bf16-mixed``, or ``16-mixed`` on a GPU) runs the
network under autocast for every method and backbone; CAMs are computed in float32
and turned into score maps with autocast off, so score maps and metrics are float32
whatever the precision. ``--model.channels_last`` (``auto``: on when training on a
CUDA device, off on CPU) puts weights and input batches in channels-last memory
format, the layout in which cuDNN's half-precision convolutions run fastest.

Training batches may arrive as uint8 ``[B, H, W, 3]`` from the data module's
loader; its ``on_after_batch_transfer`` crops, flips and normalizes them on the
device before :meth:`WSOLModule.training_step` sees them.

Method hyperparameters (``bg_grid_size``, ``has_drop_rate``, ...) are keyword
arguments of the module, so they are ``--model.<name>`` flags, part of
``hparams`` and of every checkpoint. Their list is generated from the method
registry: adding a method adds its flags.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Dict, Literal, Optional, Tuple, Union, get_args

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from torch import nn

from wsol_lightning.errors import WSOLInputError
from wsol_lightning.metrics.localization import BoxLocalization, MaskLocalization
from wsol_lightning.models.backbones import BACKBONE_NAMES, build_backbone
from wsol_lightning.models.methods.base import WSOLMethod
from wsol_lightning.models.methods.common import autocast_off
from wsol_lightning.models.methods.registry import METHODS, all_hyperparameters, get_method
from wsol_lightning.models.scoremaps import cams_to_scoremaps
from wsol_lightning.quiet import install_log_filter

install_log_filter()  # no LitLogger tip from the Trainers that run this module (see wsol_lightning.quiet)

BackboneName = Literal[BACKBONE_NAMES]  # type: ignore[valid-type]
MethodName = Literal[tuple(METHODS)]  # type: ignore[valid-type]
LRSchedule = Literal["step", "cosine"]
ChannelsLast = Union[bool, Literal["auto"]]

#: The metric every run monitors and every trial reports.
MONITOR = "val/localization"


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite (diverged)."""


class WSOLModule(LightningModule):
    """A CAM-style WSOL network with its loss, optimizer and localization metrics.

    Args:
        num_classes: number of classes (linked from the data module by the CLI).
        backbone: feature extractor, see :mod:`wsol_lightning.models.backbones`.
        wsol_method: WSOL method, see :mod:`wsol_lightning.models.methods`.
        pretrained: start from ImageNet weights (torchvision's weights API, or
            ``pretrained_path`` when given).
        pretrained_path: local ``.pth`` file with the backbone's ImageNet weights.
        lr: learning rate of the pretrained layers.
        lr_classifier_ratio: multiplier of ``lr`` for new layers (classifier, ...).
        momentum: SGD momentum (Nesterov).
        weight_decay: SGD weight decay.
        lr_decay_frequency: epochs between x0.1 learning-rate steps (``lr_schedule="step"``).
        lr_schedule: ``"step"`` (x0.1 every ``lr_decay_frequency`` epochs, wsolevaluation's) or
            ``"cosine"`` (per optimizer step, from ``lr`` to 0 at the run's last step).
        cam_curve_interval: spacing of the CAM thresholds of the box/mask metrics.
        channels_last: channels-last memory format for weights and inputs; ``"auto"``
            (default): on when the trainer runs on a CUDA device (cuDNN's fastest layout
            for bf16/fp16 convolutions), off on CPU.
        **method_hparams: the methods' knobs (``bg_grid_size``, ``has_drop_rate``,
            ...); only those of ``wsol_method`` act, all are recorded.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: BackboneName = "small",
        wsol_method: MethodName = "has",
        pretrained: bool = False,
        pretrained_path: Optional[str] = None,
        lr: float = 0.005,
        lr_classifier_ratio: float = 10.0,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        lr_decay_frequency: int = 30,
        lr_schedule: LRSchedule = "cosine",
        cam_curve_interval: float = 0.01,
        channels_last: ChannelsLast = "auto",
        **method_hparams: Any,
    ) -> None:
        super().__init__()
        _check_range("num_classes", num_classes, 2, math.inf, flag="--data (num_classes)")
        _check_range("lr", lr, 1e-8, 10.0, open_low=False)
        _check_range("lr_classifier_ratio", lr_classifier_ratio, 0.0, 1e4)
        _check_range("momentum", momentum, 0.0, 1.0, open_high=True)
        _check_range("weight_decay", weight_decay, 0.0, 1.0)
        _check_range("lr_decay_frequency", lr_decay_frequency, 1, 10**6)
        _check_range("cam_curve_interval", cam_curve_interval, 0.0, 0.5, open_low=True)
        if lr_schedule not in get_args(LRSchedule):
            choices = ", ".join(repr(choice) for choice in get_args(LRSchedule))
            raise WSOLInputError(f"--model.lr_schedule: {lr_schedule!r} is not one of {choices}")
        if not (isinstance(channels_last, bool) or channels_last == "auto"):
            raise WSOLInputError(f"--model.channels_last={channels_last!r} must be true, false or auto")
        known = all_hyperparameters()
        unknown = sorted(set(method_hparams) - set(known))
        if unknown:
            raise WSOLInputError(f"--model.{unknown[0]}: unknown hyperparameter; known: {sorted(known)}")
        values = {name: spec.default for name, spec in known.items()}
        values.update(method_hparams)
        for name, value in values.items():
            known[name].validate(name, value)
        self._record_hyperparameters({
            "num_classes": num_classes, "backbone": backbone, "wsol_method": wsol_method,
            "pretrained": pretrained, "pretrained_path": pretrained_path, "lr": lr,
            "lr_classifier_ratio": lr_classifier_ratio, "momentum": momentum, "weight_decay": weight_decay,
            "lr_decay_frequency": lr_decay_frequency, "lr_schedule": lr_schedule,
            "cam_curve_interval": cam_curve_interval, "channels_last": channels_last, **values})

        method_cls = get_method(wsol_method)
        if backbone in method_cls.unsupported_backbones:
            raise WSOLInputError(f"--model.wsol_method={wsol_method} cannot serve --model.backbone={backbone}")
        weights = (pretrained_path or "DEFAULT") if pretrained else None
        if pretrained_path is not None and not pretrained:
            weights = pretrained_path
        own = {name: values[name] for name in method_cls.hyperparameters}
        self.method: WSOLMethod = method_cls(build_backbone(backbone, weights), num_classes, **own)
        self.metrics = nn.ModuleDict({
            stage: nn.ModuleDict({
                "box": BoxLocalization(cam_curve_interval=cam_curve_interval),
                "mask": MaskLocalization(cam_curve_interval=cam_curve_interval),
            })
            for stage in ("val", "test")
        })
        self._top1_counts: Dict[str, torch.Tensor] = {}
        self._updated: Dict[str, set] = {"val": set(), "test": set()}
        #: CAM threshold that maximized MaxBoxAcc at the last evaluation (for figures).
        self.best_cam_threshold: Optional[float] = None
        #: The same per stage ("val", "test"), for figures of either split (predict.py).
        self.best_cam_thresholds: Dict[str, float] = {}
        #: Memory format of weights and inputs (set in :meth:`setup`).
        self.memory_format = torch.contiguous_format
        #: Read the loss's finiteness on the host only every few steps (default: on CUDA devices); see _watch_loss.
        self.defer_loss_check: Optional[bool] = None
        self._first_bad_loss: Optional[torch.Tensor] = None

    def _record_hyperparameters(self, values: Dict[str, Any]) -> None:
        """``save_hyperparameters`` with an explicit dict, called outside ``__init__``.

        The signature of ``__init__`` is generated (see
        :func:`_expose_method_hyperparameters`), so Lightning's inspection of the
        ``__init__`` frame would look for the method knobs as local variables;
        giving the values through Lightning's ``_given_hyperparameters`` (what
        LightningCLI and ``load_from_checkpoint`` set) skips that inspection.
        """
        token = _given_hyperparameters.set(dict(values)) if _given_hyperparameters.get() is None else None
        try:
            self.save_hyperparameters(values)
        finally:
            if token is not None:
                _given_hyperparameters.reset(token)

    # ------------------------------------------------------------------- layout
    def setup(self, stage: str) -> None:
        """Switch weights to channels-last when ``channels_last`` asks for it (``auto``: on CUDA)."""
        wanted = self.hparams.channels_last
        if wanted == "auto":
            wanted = self._trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        if wanted:
            self.method.to(memory_format=torch.channels_last)
            self.memory_format = torch.channels_last

    def model_input(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` in the network's memory format; refuses undecoded uint8 batches in one line."""
        if images.dtype == torch.uint8:
            raise TypeError("the batch's images are uint8 [B, H, W, 3]: train with datamodule=WSOLDataModule(...) "
                            "so its on_after_batch_transfer crops and normalizes them on the device")
        return images.contiguous(memory_format=self.memory_format)

    # ----------------------------------------------------------------- training
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of images."""
        return self.method(self.model_input(images))["logits"]

    def training_step(self, batch: Dict[str, Any], batch_idx: int) -> torch.Tensor:  # noqa: D102
        training_batch = self.method.augment(self.model_input(batch["image"]), batch["label"])
        outputs = self.method(self.model_input(training_batch.images), training_batch.labels)
        loss = self.method.loss(outputs, training_batch)
        self._watch_loss(loss)
        accuracy = (outputs["logits"].argmax(1) == batch["label"]).float().mean() * 100
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["label"]))
        self.log("train/top1", accuracy, on_step=False, on_epoch=True, batch_size=len(batch["label"]))
        return loss

    def _watch_loss(self, loss: torch.Tensor) -> None:
        """Raise :class:`NonFiniteLossError` once a training loss is NaN or infinite.

        Reading a device value on the host waits for the device to finish: done every
        step, it would stall a GPU's queue between steps. So on CUDA (``defer_loss_check``)
        the first non-finite step and loss are recorded on the device, and the host reads
        them every ``log_every_n_steps`` steps (when Lightning reads the logged loss anyway)
        and at the epoch's end; on CPU every step is checked at once.
        """
        value = loss.detach().float()
        defer = value.device.type == "cuda" if self.defer_loss_check is None else self.defer_loss_check
        if not defer:
            if not torch.isfinite(value):
                self._raise_non_finite(float(value), self.global_step)
            return
        if self._first_bad_loss is None or self._first_bad_loss.device != value.device:
            self._first_bad_loss = torch.full((2,), math.nan, device=value.device)
        step = torch.full((), float(self.global_step), device=value.device)
        first = ~torch.isfinite(value) & torch.isnan(self._first_bad_loss[0])
        self._first_bad_loss = torch.where(first, torch.stack([step, value]), self._first_bad_loss)
        interval = self.trainer.log_every_n_steps if self._trainer is not None else 1
        if (self.global_step + 1) % max(1, interval) == 0:
            self._check_deferred_loss()

    def _check_deferred_loss(self) -> None:
        if self._first_bad_loss is not None:
            step, value = self._first_bad_loss.tolist()
            if not math.isnan(step):
                self._raise_non_finite(value, int(step))

    def _raise_non_finite(self, value: float, step: int) -> None:
        raise NonFiniteLossError(f"training loss is {value} at epoch {self.current_epoch}, step {step} "
                                 f"(diverged): lower --model.lr (now {self.hparams.lr})")

    def on_train_epoch_end(self) -> None:  # noqa: D102
        self._check_deferred_loss()

    def build_optimizer(self) -> torch.optim.Optimizer:
        """SGD over two groups: the backbone at ``lr``, the method's new layers at ``lr * lr_classifier_ratio``."""
        prefixes = self.method.new_layer_prefixes()
        new_params, old_params = [], []
        for name, parameter in self.method.named_parameters():
            (new_params if any(name.startswith(p) for p in prefixes) else old_params).append(parameter)
        groups = [{"params": old_params, "lr": self.hparams.lr},
                  {"params": new_params, "lr": self.hparams.lr * self.hparams.lr_classifier_ratio}]
        return torch.optim.SGD([g for g in groups if g["params"]], lr=self.hparams.lr,
                               momentum=self.hparams.momentum, weight_decay=self.hparams.weight_decay,
                               nesterov=self.hparams.momentum > 0)

    def configure_optimizers(self):  # noqa: D102
        optimizer = self.build_optimizer()
        if self.hparams.lr_schedule == "cosine":  # over the run's steps: needs the trainer
            total_steps = max(1, int(self.trainer.estimated_stepping_batches))
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=self.hparams.lr_decay_frequency, gamma=0.1)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # --------------------------------------------------------------- evaluation
    def scoremaps(self, images: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Logits and 224x224 float32 score maps of the given classes for a batch.

        The CAMs are cast to float32 and resized with autocast off, so under mixed
        precision the metrics see the same kind of maps as in a float32 run.
        """
        images = self.model_input(images)
        outputs = self.method(images)
        cams = self.method.cams(images, labels, outputs).float()
        with autocast_off(cams):
            return outputs["logits"], cams_to_scoremaps(cams)

    def _evaluation_step(self, batch: Dict[str, Any], stage: str) -> Dict[str, torch.Tensor]:
        labels = batch["label"]
        logits, maps = self.scoremaps(batch["image"], labels)
        correct = logits.argmax(1) == labels
        counts = torch.stack([correct.sum(), torch.tensor(len(labels), device=correct.device)]).float()
        self._top1_counts[stage] = self._top1_counts.get(stage, torch.zeros_like(counts)) + counts
        metrics = self.metrics[stage]
        if "gt_boxes" in batch:
            metrics["box"].update(maps, batch["gt_boxes"], correct)
            self._updated[stage].add("box")
        if "gt_mask" in batch:
            metrics["mask"].update(maps, batch["gt_mask"])
            self._updated[stage].add("mask")
        return {"scoremaps": maps}  # for callbacks (predict.py saves them); Lightning keeps no outputs

    def validation_step(self, batch: Dict[str, Any], batch_idx: int) -> Dict[str, torch.Tensor]:  # noqa: D102
        return self._evaluation_step(batch, "val")

    def test_step(self, batch: Dict[str, Any], batch_idx: int) -> Dict[str, torch.Tensor]:  # noqa: D102
        return self._evaluation_step(batch, "test")

    def on_validation_epoch_end(self) -> None:  # noqa: D102
        self._log_evaluation("val")

    def on_test_epoch_end(self) -> None:  # noqa: D102
        self._log_evaluation("test")

    def _log_evaluation(self, stage: str) -> None:
        results: Dict[str, torch.Tensor] = {}
        counts = self._top1_counts.pop(stage, None)
        if counts is not None:
            counts = self.all_gather(counts).reshape(-1, 2).sum(0) if self.trainer.world_size > 1 else counts
            results["top1"] = 100.0 * counts[0] / counts[1].clamp(min=1)
        metrics = self.metrics[stage]
        if "box" in self._updated[stage]:
            box = metrics["box"].compute()
            results.update(box)
            self.best_cam_thresholds[stage] = float(metrics["box"].best_threshold())
            if stage == "val":
                self.best_cam_threshold = self.best_cam_thresholds[stage]
        if "mask" in self._updated[stage]:
            results.update(metrics["mask"].compute())
        if "MaxBoxAccV2" in results:
            results["localization"] = results["MaxBoxAccV2"]
        elif "PxAP" in results:
            results["localization"] = results["PxAP"]
        for metric in metrics.values():
            metric.reset()
        self._updated[stage] = set()
        for key, value in results.items():
            # Values are already reduced across processes (torchmetrics states, gathered counts).
            self.log(f"{stage}/{key}", torch.as_tensor(value, dtype=torch.float32),
                     prog_bar=key in ("localization", "top1"))


def _check_range(name: str, value: Any, low: float, high: float, open_low: bool = False,
                 open_high: bool = False, flag: Optional[str] = None) -> None:
    """Refuse ``value`` outside [low, high] (or open ends) with a one-line error naming the flag."""
    flag = flag or f"--model.{name}"
    ok = isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value))
    if ok:
        ok = (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
    if not ok:
        left, right = "(" if open_low else "[", ")" if open_high else "]"
        raise WSOLInputError(f"{flag}={value} is out of range {left}{low}, {high}{right}")


def _expose_method_hyperparameters() -> None:
    """Give ``WSOLModule.__init__`` a signature listing every method knob as a keyword.

    LightningCLI (jsonargparse) builds ``--model.*`` flags from this signature, so
    a method registered in ``models/methods/registry.py`` gets its flags without
    touching this module.
    """
    signature = inspect.signature(WSOLModule.__init__)
    parameters = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    for name, spec in sorted(all_hyperparameters().items()):
        annotation = type(spec.default)
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=spec.default,
                                            annotation=annotation))
    WSOLModule.__init__.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    doc_lines = [f"        {name}: {spec.help} (default {spec.default}; search "
                 f"{list(spec.search)}{', log' if spec.log else ''})"
                 for name, spec in sorted(all_hyperparameters().items())]
    WSOLModule.__init__.__doc__ = (WSOLModule.__init__.__doc__ or "") + "\n".join(doc_lines)


_expose_method_hyperparameters()
