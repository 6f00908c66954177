"""``predict.py``: evaluate a checkpoint on a split, export its score maps the wsolevaluation way.

``python scripts/predict.py --ckpt_path CKPT --split test`` rebuilds the model
recorded in a checkpoint of ``fit.py`` (or of a tuning trial), evaluates it with
Lightning's ``Trainer.test`` / ``Trainer.validate`` and prints the metric lines
``fit.py`` prints (``test/MaxBoxAccV2 ...``). The data are the checkpoint's own
(its recorded ``--data.*`` settings); any ``--data.*`` flag overrides them
(another dataset, root or batch size), any ``--trainer.*`` flag sets the
Trainer (``--trainer.accelerator gpu``, ``--trainer.limit_test_batches 2``).

* ``--save_scoremaps DIR``: every score map as ``DIR/<image_id>.npy`` (224x224
  float32 in [0, 1], subfolders as in the image ids): the layout of
  wsolevaluation's ``evaluate.py`` and of ``scripts/evaluate.py``, whose command
  on these maps is printed (it gives the same numbers);
* ``--json PATH``: the metrics and what they were computed on;
* ``--figure PATH``: the CAM grid of ``fit.py`` for the split's first images, the
  predicted box at the CAM threshold that maximized the split's MaxBoxAcc.

A file that is not a checkpoint of this package, one whose weights do not fit the
model it records, or data whose labels the model does not have: one line naming
the file, exit status 2. Checkpoints are read with ``weights_only=True``.
"""

from __future__ import annotations

import inspect
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence

import numpy as np
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.cli import LightningArgumentParser

from wsol_lightning.cli import OneLineErrorParser, format_metrics
from wsol_lightning.data.datamodule import WSOLDataModule
from wsol_lightning.argv import flag_value
from wsol_lightning.errors import WSOLInputError, exit_on_input_error
from wsol_lightning.files import check_writable, replaced_atomically, write_text_atomically
from wsol_lightning.metrics.scoremaps import scoremap_path
from wsol_lightning.module import WSOLModule
from wsol_lightning.resume import read_checkpoint

#: Trainer settings of an evaluation (any ``--trainer.*`` flag overrides them): nothing written but the outputs asked.
TRAINER_DEFAULTS: Dict[str, Any] = {
    "logger": False,
    "enable_checkpointing": False,
    "enable_model_summary": False,
}


#: Said of a file that is not a checkpoint (a backbone's weights are pretrained weights of a fit.py run).
_NOT_A_CHECKPOINT_HINT = "; a backbone's weights are pretrained weights of fit.py, not a checkpoint to evaluate"


class ScoremapWriter(Callback):
    """Counts the evaluated images and, given a folder, saves their score maps as ``<folder>/<image_id>.npy``.

    Uses the score maps the module's ``validation_step`` / ``test_step`` return,
    so nothing is computed twice. Each file is written to a temporary name and
    renamed: an interrupted export leaves no half-written map.
    """

    def __init__(self, root: Optional[str]) -> None:
        self.root = root
        self.count = 0

    def _write(self, outputs: Any, batch: Mapping[str, Any]) -> None:
        self.count += len(batch["label"])
        if self.root is None:
            return
        maps = outputs["scoremaps"].detach().float().cpu().numpy()
        for image_id, scoremap in zip(batch["image_id"], maps):
            save_scoremap(self.root, image_id, scoremap)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):  # noqa: D102
        self._write(outputs, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):  # noqa: D102
        self._write(outputs, batch)


def save_scoremap(root: str, image_id: str, scoremap: np.ndarray) -> str:
    """Write ``scoremap`` as float32 to ``<root>/<image_id>.npy`` (folders created); returns the path."""
    path = scoremap_path(root, image_id)
    with replaced_atomically(path) as handle:
        np.save(handle, np.ascontiguousarray(scoremap, dtype=np.float32))
    return path


def build_parser() -> LightningArgumentParser:
    """Flags of ``predict.py``: its own, ``--data.*`` (WSOLDataModule) and ``--trainer.*`` (Trainer)."""
    parser = OneLineErrorParser(prog="predict.py", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", type=str, required=True, help="checkpoint of fit.py (or of a tuning trial)")
    parser.add_argument("--split", type=Literal["val", "test"], default="test", help="split to evaluate")
    parser.add_argument("--save_scoremaps", type=Optional[str], default=None,
                        help="write every score map as DIR/<image_id>.npy (224x224 float32 in [0, 1])")
    parser.add_argument("--json", type=Optional[str], default=None, help="write the metrics as JSON here")
    parser.add_argument("--figure", type=Optional[str], default=None,
                        help="draw the CAM grid of the split's first images to this PNG")
    parser.add_class_arguments(WSOLDataModule, "data", fail_untyped=False)
    parser.add_class_arguments(Trainer, "trainer", fail_untyped=False, sub_configs=True)
    parser.set_defaults({f"trainer.{k}": v for k, v in TRAINER_DEFAULTS.items()})
    return parser


def recorded_data_settings(checkpoint: Mapping[str, Any]) -> Dict[str, Any]:
    """The checkpoint's ``--data.*`` settings (``datamodule_hyper_parameters``) that WSOLDataModule still takes."""
    accepted = set(inspect.signature(WSOLDataModule.__init__).parameters) - {"self"}
    recorded = checkpoint.get("datamodule_hyper_parameters") or {}
    return {k: v for k, v in recorded.items() if k in accepted}


def model_from_checkpoint(path: str, checkpoint: Mapping[str, Any]) -> WSOLModule:
    """The model a checkpoint records, with its weights; one-line errors name ``path``.

    Pretrained weights are not loaded again (``pretrained=False``): the
    checkpoint's weights replace them, and their file need not exist any more.
    """
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    hparams.update(pretrained=False, pretrained_path=None)
    try:
        model = WSOLModule(**hparams)
    except WSOLInputError as error:
        raise WSOLInputError(f"{path}: its recorded model settings are refused ({error})") from None
    state_dict = checkpoint["state_dict"]
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    reshaped = [k for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or reshaped:
        def some(keys: List[str]) -> str:
            return ", ".join(keys[:2]) + (f" and {len(keys) - 2} more" if len(keys) > 2 else "")

        problems = [f"{len(keys)} {what} (e.g. {some(keys)})" for what, keys in
                    (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped)) if keys]
        raise WSOLInputError(f"{path}: its weights do not fit the {hparams.get('backbone')} / "
                             f"{hparams.get('wsol_method')} model it records: {'; '.join(problems)}")
    broken = [k for k, v in state_dict.items() if torch.is_tensor(v) and v.is_floating_point()
              and not bool(torch.isfinite(v).all())]
    if broken:
        raise WSOLInputError(f"{path}: {len(broken)} weight tensors hold NaN or infinite values (e.g. {broken[0]}): "
                             f"the checkpoint of a diverged run")
    model.load_state_dict(state_dict)
    return model


def _check_labels(path: str, model: WSOLModule, datamodule: WSOLDataModule, split: str) -> None:
    metadata = datamodule.metadata(split)
    highest = max(metadata.class_labels.values(), default=-1)
    if highest >= model.hparams.num_classes:
        raise WSOLInputError(f"{path}: a model of {model.hparams.num_classes} classes cannot evaluate "
                             f"{datamodule.dataset_name}/{split}, whose labels go up to {highest}")


def evaluate_command(datamodule: WSOLDataModule, split: str, scoremap_root: str, interval: float) -> str:
    """The ``scripts/evaluate.py`` command that recomputes the headline metric from the saved maps."""
    args = ["python", "scripts/evaluate.py", "--scoremap-root", scoremap_root, "--metadata-root",
            str(datamodule.metadata_root), "--dataset-name", datamodule.dataset_name, "--split", split]
    if datamodule.dataset_name == "OpenImages":
        args += ["--mask-root", str(datamodule.mask_dir.parent)]
    else:
        args += ["--multi-contour-eval", "--multi-iou-eval"]
    if interval != 0.01:
        args += ["--cam-curve-interval", str(interval)]
    return shlex.join(args)


@exit_on_input_error
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``predict.py``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    path = flag_value(argv, "--ckpt_path")
    checkpoint = None
    if path is not None and not {"-h", "--help"} & set(argv):
        checkpoint = read_checkpoint(path, hint=_NOT_A_CHECKPOINT_HINT)
        parser.set_defaults({f"data.{k}": v for k, v in recorded_data_settings(checkpoint).items()})
    config = parser.parse_args(argv)
    if checkpoint is None:  # e.g. --ckpt_path given only in a --config file
        checkpoint = read_checkpoint(config.ckpt_path, hint=_NOT_A_CHECKPOINT_HINT)
    path, split = config.ckpt_path, config.split
    for flag, output, directory in (("--json", config.json, False), ("--figure", config.figure, False),
                                    ("--save_scoremaps", config.save_scoremaps, True)):
        if output:
            check_writable(output, flag, directory=directory)
    model = model_from_checkpoint(path, checkpoint)
    # jsonargparse >= 4.49 renamed instantiate_classes (deprecated since) to instantiate.
    objects = getattr(parser, "instantiate", parser.instantiate_classes)(config)
    datamodule, trainer = objects.data, objects.trainer
    _check_labels(path, model, datamodule, split)  # from the metadata, before any image is decoded
    datamodule.setup("validate" if split == "val" else "test")
    writer = ScoremapWriter(config.save_scoremaps)
    trainer.callbacks.append(writer)

    evaluate = trainer.validate if split == "val" else trainer.test
    results = evaluate(model, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for result in results for k, v in result.items()}
    if not trainer.is_global_zero:
        return 0
    hparams = model.hparams
    print(f"checkpoint: {path} ({hparams.backbone}, {hparams.wsol_method}, epoch {checkpoint.get('epoch')})")
    print(f"evaluated {writer.count} images of {datamodule.dataset_name}/{split}")
    print("\n".join(format_metrics(metrics, prefixes=(f"{split}/",))))
    report: Dict[str, Any] = {"checkpoint": path, "split": split, "dataset_name": datamodule.dataset_name,
                              "num_images": writer.count, "metrics": metrics}
    if config.save_scoremaps:
        command = evaluate_command(datamodule, split, config.save_scoremaps, hparams.cam_curve_interval)
        print(f"score maps: {config.save_scoremaps}/<image_id>.npy ({writer.count} files); the same "
              f"{split}/localization from them: {command}")
        report.update(scoremaps=config.save_scoremaps, evaluate_command=command)
    if config.figure:
        from wsol_lightning.visualize import save_cam_grid

        figure = save_cam_grid(model, datamodule, Path(config.figure), split=split,
                               threshold=model.best_cam_thresholds.get(split))
        print(f"CAM figure: {figure}")
        report["figure"] = str(figure)
    if config.json:
        write_text_atomically(config.json, json.dumps(report, indent=2) + "\n")
    return 0
