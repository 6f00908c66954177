"""One way to build a run, for ``fit.py`` and every ``tune.py`` trial.

:class:`WSOLCLI` is a LightningCLI (jsonargparse), so every Trainer flag works
as ``--trainer.<flag>``, model and data arguments as ``--model.*`` / ``--data.*``,
``--config file.yaml`` and ``--seed_everything`` as in any Lightning project;
LightningCLI was chosen over a hand-written argparse because it derives the
flags from the classes' signatures and saves the resolved config next to the
logs, which is what makes a tuned trial re-runnable with ``fit.py --config``.

Additions:

* ``--bg-grid-size X``: shortcut for ``--model.bg_grid_size X`` (the HaS knob);
* ``--run_dir DIR``: where checkpoints, logs, the config and figures go
  (default ``runs/fit-<time>``); printed at start;
* ``--checkpoint.*``: a ModelCheckpoint keeping the best ``val/localization``
  and the last epoch;
* ``data.num_classes`` is linked into ``model.num_classes``.

:func:`build_run` returns the instantiated trainer, model and data module;
:func:`fit_and_test` trains, tests the best checkpoint and draws the CAM figure.
"""

from __future__ import annotations

import datetime as _dt
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from lightning.pytorch import Callback, LightningDataModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from wsol_lightning.data.datamodule import WSOLDataModule
from wsol_lightning.module import MONITOR, WSOLModule

#: Trainer defaults of a run (any ``--trainer.*`` flag overrides them).
TRAINER_DEFAULTS: Dict[str, Any] = {
    "max_epochs": 6,
    "log_every_n_steps": 10,
    "num_sanity_val_steps": 0,
}


def new_run_dir(prefix: str = "fit", root: str = "runs") -> str:
    """A fresh directory name ``runs/<prefix>-YYYYmmdd-HHMMSS[-n]`` (not created)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate = os.path.join(root, f"{prefix}-{stamp}")
    suffix = 1
    while os.path.exists(candidate):
        suffix += 1
        candidate = os.path.join(root, f"{prefix}-{stamp}-{suffix}")
    return candidate


class WSOLCLI(LightningCLI):
    """LightningCLI of :class:`WSOLModule` + :class:`WSOLDataModule` (see module docstring)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:  # noqa: D102
        parser.add_argument("--bg-grid-size", "--bg_grid_size", dest="bg_grid_size", type=Optional[float],
                            default=None, help="HaS cell side as a fraction of the crop (shortcut for "
                                               "--model.bg_grid_size)")
        parser.add_argument("--run_dir", type=Optional[str], default=None,
                            help="run directory (default: runs/fit-<time>)")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": MONITOR,
            "checkpoint.mode": "max",
            "checkpoint.save_last": True,
            "checkpoint.save_top_k": 1,
            "checkpoint.filename": "best-epoch{epoch:02d}",
            "checkpoint.auto_insert_metric_name": False,
        })

    def before_instantiate_classes(self) -> None:  # noqa: D102
        config = self.config
        if config.get("bg_grid_size") is not None:
            config.model.bg_grid_size = config.bg_grid_size
        if not config.get("run_dir"):
            config.run_dir = new_run_dir()
        if config.trainer.get("default_root_dir") in (None, os.getcwd(), "."):
            config.trainer.default_root_dir = config.run_dir


@dataclass
class Run:
    """An instantiated run: what ``fit.py`` trains and what a trial trains."""

    trainer: Trainer
    model: WSOLModule
    datamodule: WSOLDataModule
    run_dir: Path


def build_run(args: Sequence[str], callbacks: Sequence[Callback] = ()) -> Run:
    """Parse fit.py-style arguments and instantiate trainer, model and data.

    Args:
        args: command-line arguments (``--trainer.max_epochs 3 --model.lr 0.1 ...``).
        callbacks: extra callbacks appended to the trainer's (a tuning trial adds
            its pruning callback here).

    Returns:
        The :class:`Run`; nothing has been trained yet.
    """
    with warnings.catch_warnings():
        # fit.py passes its own sys.argv[1:] as args; LightningCLI warns about that.
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
        cli = _make_cli(args)
    cli.trainer.callbacks.extend(callbacks)
    return Run(cli.trainer, cli.model, cli.datamodule, Path(cli.config.run_dir))


def _make_cli(args: Sequence[str]) -> WSOLCLI:
    return WSOLCLI(
        WSOLModule,
        WSOLDataModule,
        args=list(args),
        run=False,
        trainer_defaults=dict(TRAINER_DEFAULTS),
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": "Train a CAM-style WSOL network (wsol_lightning)."},
    )


def fit_and_test(run: Run, test: bool = True, figure: bool = True) -> Dict[str, float]:
    """Train, then evaluate the test split with the best checkpoint and draw the CAM figure.

    Returns:
        The logged metrics (``val/...`` of the last epoch, ``test/...``) as floats.
    """
    run.trainer.fit(run.model, datamodule=run.datamodule)
    metrics = {k: float(v) for k, v in run.trainer.callback_metrics.items()}
    if test:
        checkpoint = _best_checkpoint(run.trainer)
        results = run.trainer.test(run.model, datamodule=run.datamodule, ckpt_path=checkpoint, verbose=False)
        for result in results:
            metrics.update({k: float(v) for k, v in result.items()})
    if figure and run.trainer.is_global_zero:
        from wsol_lightning.visualize import save_cam_grid

        path = save_cam_grid(run.model, run.datamodule, run.run_dir / "cam_grid.png")
        metrics["figure"] = str(path)  # type: ignore[assignment]
    return metrics


def _best_checkpoint(trainer: Trainer) -> Optional[str]:
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.best_model_path:
            return callback.best_model_path
    return None


def format_metrics(metrics: Dict[str, Any], prefixes: Sequence[str] = ("val/", "test/")) -> List[str]:
    """Lines ``name  value`` of the metrics with the given prefixes, sorted."""
    lines = []
    for key in sorted(metrics):
        if key.startswith(tuple(prefixes)) and isinstance(metrics[key], float):
            lines.append(f"  {key:<26s} {metrics[key]:8.2f}")
    return lines
