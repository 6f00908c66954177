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
* ``--ckpt_path PATH|last``: resume a run (see :mod:`wsol_lightning.resume`);
  a checkpoint inside a run directory continues that run (its directory and
  logger version), ``last`` is the newest ``last.ckpt`` under ``--run_dir``;
* ``--checkpoint.*``: a ModelCheckpoint keeping the best ``val/localization``;
  ``last.ckpt`` is written after every epoch besides it (:class:`LastCheckpoint`);
* ``data.num_classes`` is linked into ``model.num_classes``;
* checkpoints are written atomically (:mod:`wsol_lightning.checkpoint_io`).

:func:`build_run` returns the instantiated trainer, model and data module;
:func:`fit_and_test` trains (or resumes), tests the best checkpoint and draws the CAM figure.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, NoReturn, Optional, Sequence

from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info

from wsol_lightning.checkpoint_io import use_atomic_checkpoints
from wsol_lightning.data.datamodule import WSOLDataModule
from wsol_lightning.errors import WSOLInputError
from wsol_lightning.files import check_writable
from wsol_lightning.module import MONITOR, WSOLModule
from wsol_lightning.resume import LastCheckpoint, RandomStateCallback, check_resumable, read_checkpoint, \
    resolve_checkpoint, run_layout

#: Trainer defaults of a run (any ``--trainer.*`` flag overrides them).
TRAINER_DEFAULTS: Dict[str, Any] = {
    "max_epochs": 8,
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


def one_line_parser_error(message: str) -> str:
    """jsonargparse's error message as one line that starts with the flag at fault.

    ``Parser key "model.lr":`` + detail lines (``Given value: abc`` among them)
    becomes ``--model.lr abc: <details joined by "; ">``; other messages have
    their lines joined.
    """
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    if not lines:
        return "invalid arguments"
    key = re.match(r'Parser key "([^"]+)":\s*(.*)', lines[0])
    if key is None:
        return "; ".join(lines)
    details = [key.group(2), *lines[1:]]
    given = [line.split(":", 1)[1].strip() for line in details if line.startswith("Given value:")]
    kept = [re.sub(r"<class '([\w.]+)'>", r"\1", line.lstrip("- ").strip()) for line in details
            if line and not line.startswith("Given value") and not line.endswith(":")]
    flag = f"--{key.group(1)}" + (f" {given[0]}" if given else "")
    return f"{flag}: " + "; ".join(line for line in kept if line)


class OneLineErrorParser(LightningArgumentParser):
    """LightningCLI's parser, refusing bad flags with one line (:class:`WSOLInputError`) instead of printing its
    usage (90 lines) and a multi-line message: the scripts' guard prints it, tune.py can say where it came from."""

    def error(self, message: str, ex: Optional[Exception] = None) -> NoReturn:  # noqa: D102
        raise WSOLInputError(one_line_parser_error(message)) from ex


class WSOLCLI(LightningCLI):
    """LightningCLI of :class:`WSOLModule` + :class:`WSOLDataModule` (see module docstring)."""

    #: Parsers built in this process, by what they were built from. Building one reads the signatures and
    #: docstrings of the Trainer, the module, the data module and ModelCheckpoint (~0.2 s of CPU); a study pays
    #: it for every trial and every dry-build corner. Parsing and instantiating leave a parser unchanged, so
    #: runs built from the same settings share one.
    _parsers: Dict[str, LightningArgumentParser] = {}

    def setup_parser(self, add_subcommands: bool, main_kwargs: Dict[str, Any],
                     subparser_kwargs: Dict[str, Any]) -> None:  # noqa: D102
        key = repr((type(self), add_subcommands, sorted(main_kwargs.items()), sorted(subparser_kwargs.items()),
                    self.model_class, self.datamodule_class, self.trainer_class, sorted(self.trainer_defaults.items()),
                    self.seed_everything_default, self.auto_configure_optimizers))
        if key not in WSOLCLI._parsers:
            super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
            WSOLCLI._parsers[key] = self.parser
        self.parser = WSOLCLI._parsers[key]

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:  # noqa: D102
        parser.add_argument("--bg-grid-size", "--bg_grid_size", dest="bg_grid_size", type=Optional[float],
                            default=None, help="HaS cell side as a fraction of the crop (shortcut for "
                                               "--model.bg_grid_size)")
        parser.add_argument("--run_dir", type=Optional[str], default=None,
                            help="run directory (default: runs/fit-<time>; with --ckpt_path, the checkpoint's run)")
        parser.add_argument("--ckpt_path", type=Optional[str], default=None,
                            help="resume from this checkpoint at its next epoch ('last': the newest last.ckpt "
                                 "under --run_dir)")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": MONITOR,
            "checkpoint.mode": "max",
            "checkpoint.save_last": False,  # LastCheckpoint writes last.ckpt after every epoch
            # Best checkpoints at validation end, before on_train_epoch_end: so last.ckpt's copy of this
            # callback's state already has the epoch's score (Lightning would otherwise save at train epoch end).
            "checkpoint.save_on_train_epoch_end": False,
            "checkpoint.save_top_k": 1,
            "checkpoint.filename": "best-epoch{epoch:02d}",
            "checkpoint.auto_insert_metric_name": False,
        })

    def before_instantiate_classes(self) -> None:  # noqa: D102
        config = self.config
        if config.get("bg_grid_size") is not None:
            config.model.bg_grid_size = config.bg_grid_size
        # One run directory: --run_dir, else a --trainer.default_root_dir given without it, else the resumed
        # checkpoint's run, else a new one; the trainer writes there, whatever a loaded config had pinned.
        root_dir = config.trainer.get("default_root_dir")
        if not config.get("run_dir") and root_dir not in (None, os.getcwd(), "."):
            config.run_dir = root_dir
        if config.get("ckpt_path"):
            config.ckpt_path, config.run_dir = resolve_checkpoint(config.ckpt_path, config.get("run_dir"))
        if not config.get("run_dir"):
            config.run_dir = new_run_dir()
        config.trainer.default_root_dir = config.run_dir
        check_writable(config.run_dir, "--run_dir", directory=True)


class _SaveConfig(SaveConfigCallback):
    """Saves the run's config without ``--ckpt_path`` and without its run directory: ``fit.py --config`` re-runs
    a run from the start, in a new run directory (or ``--run_dir``), never into the saved run's own."""

    def __init__(self, parser: LightningArgumentParser, config: Any, *args: Any, **kwargs: Any) -> None:
        config = config.clone()
        config.ckpt_path = None
        config.run_dir = None
        config.trainer.default_root_dir = None
        super().__init__(parser, config, *args, **kwargs)


@dataclass
class Run:
    """An instantiated run: what ``fit.py`` trains and what a trial trains.

    Attributes:
        ckpt_path: the checkpoint the run resumes from (None: from the start).
    """

    trainer: Trainer
    model: WSOLModule
    datamodule: WSOLDataModule
    run_dir: Path
    ckpt_path: Optional[str] = None


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
    cli.trainer.callbacks.extend([LastCheckpoint(), RandomStateCallback(), *callbacks])
    use_atomic_checkpoints(cli.trainer)
    ckpt_path = cli.config.get("ckpt_path")
    if ckpt_path:
        _prepare_resume(cli, ckpt_path)
    return Run(cli.trainer, cli.model, cli.datamodule, Path(cli.config.run_dir), ckpt_path)


def _prepare_resume(cli: WSOLCLI, ckpt_path: str) -> None:
    """Check that ``ckpt_path`` fits the built model, and log into its logger version when it is this run's."""
    checkpoint = read_checkpoint(ckpt_path, hint="; a backbone's weights go to --model.pretrained_path")
    differences = check_resumable(ckpt_path, checkpoint, cli.model.hparams)
    if differences:
        rank_zero_info(f"resuming {ckpt_path} with settings that differ from its own: {'; '.join(differences)}")
    layout = run_layout(ckpt_path)
    logger = cli.trainer.logger
    if layout is None or cli.config.trainer.get("logger") not in (None, True) or logger is None:
        return
    # Lightning's default logger, created with a fresh version: continue the checkpoint's version instead.
    if Path(logger.root_dir).resolve() == layout[0] / layout[1]:
        cli.trainer.logger = type(logger)(save_dir=logger.save_dir, name=logger.name, version=layout[2])


def _make_cli(args: Sequence[str]) -> WSOLCLI:
    return WSOLCLI(
        WSOLModule,
        WSOLDataModule,
        args=list(args),
        run=False,
        trainer_defaults=dict(TRAINER_DEFAULTS),
        seed_everything_default=0,
        save_config_callback=_SaveConfig,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": "Train a CAM-style WSOL network (wsol_lightning)."},
        parser_class=OneLineErrorParser,
    )


def fit_and_test(run: Run, test: bool = True, figure: bool = True) -> Dict[str, float]:
    """Train (or resume ``run.ckpt_path``), test the best checkpoint on the test split, draw the CAM figure.

    The test uses the checkpoint with the best ``val/localization`` (Lightning's
    ``ckpt_path="best"``), or the trained weights when there is none (validation disabled).

    Returns:
        The logged metrics (``val/...`` of the last epoch, ``test/...``) as floats.
    """
    with warnings.catch_warnings():
        if run.ckpt_path is not None:  # a resumed run continues in its own, non-empty checkpoint folder
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty",
                                    category=UserWarning)
        run.trainer.fit(run.model, datamodule=run.datamodule, ckpt_path=run.ckpt_path, weights_only=True)
    metrics = {k: float(v) for k, v in run.trainer.callback_metrics.items()}
    if test:
        callback = run.trainer.checkpoint_callback
        checkpoint = "best" if callback is not None and getattr(callback, "best_model_path", "") else None
        results = run.trainer.test(run.model, datamodule=run.datamodule, ckpt_path=checkpoint, verbose=False,
                                   weights_only=True)
        for result in results:
            metrics.update({k: float(v) for k, v in result.items()})
    if figure and run.trainer.is_global_zero:
        from wsol_lightning.visualize import save_cam_grid

        path = save_cam_grid(run.model, run.datamodule, run.run_dir / "cam_grid.png")
        metrics["figure"] = str(path)  # type: ignore[assignment]
    return metrics


def format_metrics(metrics: Dict[str, Any], prefixes: Sequence[str] = ("val/", "test/")) -> List[str]:
    """Lines ``name  value`` of the metrics with the given prefixes, sorted."""
    lines = []
    for key in sorted(metrics):
        if key.startswith(tuple(prefixes)) and isinstance(metrics[key], float):
            lines.append(f"  {key:<26s} {metrics[key]:8.2f}")
    return lines
