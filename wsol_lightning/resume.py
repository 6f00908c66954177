"""Resuming ``fit.py`` runs, and stopping them on Ctrl-C or SIGTERM without losing a completed epoch.

Resume point. ``last.ckpt`` is written at the end of every epoch, after its
validation (:class:`LastCheckpoint`; Lightning 2.6's own ``save_last`` writes
it only in epochs that write a best checkpoint). It is the one point a run
resumes from exactly: Lightning restarts a mid-epoch checkpoint with a fresh
shuffle of the whole epoch's data and warns that results become unreliable
(our loaders are not resumable), so an interrupt does not write a mid-epoch
checkpoint; the interrupted epoch is trained again from its start. Together
with the random-number states saved in every checkpoint
(:class:`RandomStateCallback`), a resumed CPU run repeats the uninterrupted
one (tested: same weights, learning rate and metrics).

Resuming (``fit.py --ckpt_path PATH``, or ``last`` = the newest ``last.ckpt``
under ``--run_dir``) is Lightning's ``trainer.fit(ckpt_path=...)``: model,
optimizer, learning-rate schedule, loops and callbacks (the best checkpoint so
far) are restored and training goes on at the next epoch. A checkpoint inside a
run directory (``<run_dir>/lightning_logs/version_N/checkpoints/``) continues
that run: same run directory, same logger version, so the logs of the resumed
epochs continue the earlier ones (TensorBoard curves go on at the restored
global step) and the best checkpoint keeps competing with the earlier epochs.

Interrupts: SIGINT (Ctrl-C) and SIGTERM (SLURM, Kubernetes) stop the run at
once (:class:`InterruptGuard`); Lightning runs its teardown, and ``fit.py``
prints how many epochs ``last.ckpt`` holds and the exact command that resumes,
then exits with status 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import os
import random
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from lightning.pytorch import Callback, Trainer

from wsol_lightning.argv import has_flag, without_flag
from wsol_lightning.errors import WSOLInputError
from wsol_lightning.interrupt_guard import InterruptGuard
from wsol_lightning.models.weights import read_torch_file

#: File name (without ``.ckpt``) of the checkpoint written at the end of every epoch.
LAST_CHECKPOINT_NAME = "last"

#: Hyperparameters that fix a model's tensors: a checkpoint must agree on them to be resumed.
STRUCTURAL_HPARAMS = ("backbone", "wsol_method", "num_classes")


class LastCheckpoint(Callback):
    """Writes ``last.ckpt`` beside the best checkpoint at the end of every training epoch.

    At ``on_train_epoch_end``: after the epoch's validation and the best checkpoint
    (saved at validation end: ``--checkpoint.save_on_train_epoch_end false``), so
    the saved state of the ModelCheckpoint callback already knows this epoch's score.
    Lightning 2.6's ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` only
    in an epoch that also writes a best checkpoint; a second ModelCheckpoint would
    make ``trainer.test(ckpt_path="best")`` warn about several of them.
    """

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:  # noqa: D102
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        callback = trainer.checkpoint_callback
        directory = getattr(callback, "dirpath", None) or os.path.join(trainer.log_dir or trainer.default_root_dir,
                                                                       "checkpoints")
        trainer.save_checkpoint(os.path.join(directory, f"{LAST_CHECKPOINT_NAME}.ckpt"), weights_only=False)


class RandomStateCallback(Callback):
    """Saves the random-number states in every checkpoint and restores them on resume.

    So the resumed epochs draw the same shuffles and augmentations (HaS grids,
    CutMix boxes) as the uninterrupted run would. States are tensors and lists:
    checkpoints stay loadable with ``weights_only=True``.
    """

    def state_dict(self) -> Dict[str, Any]:  # noqa: D102
        numpy_state = np.random.get_state()
        version, internal, gauss = random.getstate()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
            "python": [version, list(internal), gauss],
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state()  # this process's device (one per DDP rank)
        return state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:  # noqa: D102
        torch.set_rng_state(state_dict["torch"])
        name, keys, *rest = state_dict["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state(state_dict["cuda"])


def find_last_checkpoint(run_dir: os.PathLike | str) -> Optional[Path]:
    """The newest ``last.ckpt`` under ``run_dir`` (any logger version), or None."""
    candidates = [p for p in Path(run_dir).rglob(f"{LAST_CHECKPOINT_NAME}.ckpt") if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def run_layout(checkpoint: os.PathLike | str) -> Optional[Tuple[Path, str, int]]:
    """``(run_dir, logger name, version)`` of ``<run_dir>/<name>/version_<N>/checkpoints/<file>``, else None."""
    path = Path(checkpoint).resolve()
    found = re.fullmatch(r"version_(\d+)", path.parents[1].name) if len(path.parents) > 3 else None
    if path.parent.name != "checkpoints" or found is None:
        return None
    return path.parents[3], path.parents[2].name, int(found.group(1))


def resolve_checkpoint(ckpt_path: str, run_dir: Optional[str]) -> Tuple[str, Optional[str]]:
    """Resolve ``--ckpt_path`` (``last`` or a path) and the run directory it continues.

    Returns:
        ``(checkpoint path, run directory)``; the run directory is ``run_dir`` when
        given, else the checkpoint's own run directory (None if it lies elsewhere).
    """
    if ckpt_path == LAST_CHECKPOINT_NAME:
        if not run_dir:
            raise WSOLInputError("--ckpt_path last: needs --run_dir (the run whose newest last.ckpt to resume)")
        found = find_last_checkpoint(run_dir)
        if found is None:
            raise WSOLInputError(f"--ckpt_path last: no last.ckpt under --run_dir={run_dir}")
        ckpt_path = str(found)
    elif not os.path.isfile(ckpt_path):
        raise WSOLInputError(f"{ckpt_path}: checkpoint not found (--ckpt_path)")
    layout = run_layout(ckpt_path)
    return ckpt_path, run_dir or (str(layout[0]) if layout else None)


def read_checkpoint(path: str, hint: str = "") -> Mapping[str, Any]:
    """A checkpoint of this package (``weights_only=True``), or a one-line error saying what the file is instead.

    Args:
        path: the file.
        hint: appended to the error for a file that is not a checkpoint (where its weights can go instead).
    """
    checkpoint = read_torch_file(path, what="checkpoint")
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, Mapping) else None
    if not isinstance(hparams, Mapping) or not all(k in hparams for k in STRUCTURAL_HPARAMS) \
            or not isinstance(checkpoint.get("state_dict"), Mapping):
        from wsol_lightning.models.weights import describe_state_dict, find_state_dict

        try:
            looks = describe_state_dict(find_state_dict(checkpoint, path), checkpoint)
        except WSOLInputError:
            looks = f"a {type(checkpoint).__name__}"
        raise WSOLInputError(f"{path}: not a checkpoint of wsol_lightning's fit.py (it looks like {looks}){hint}")
    return checkpoint


def check_resumable(path: str, checkpoint: Mapping[str, Any], hparams: Mapping[str, Any]) -> List[str]:
    """Refuse a checkpoint of another model; list the other settings that differ from it.

    Args:
        path: the checkpoint (for messages).
        checkpoint: its contents (:func:`read_checkpoint`).
        hparams: the hyperparameters of the run that resumes it.

    Returns:
        ``--model.<name> <value> (checkpoint: <value>)`` for each other differing hyperparameter.
    """
    saved = checkpoint["hyper_parameters"]
    if any(saved[k] != hparams.get(k) for k in STRUCTURAL_HPARAMS):
        def describe(values: Mapping[str, Any]) -> str:
            return (f"--model.backbone {values.get('backbone')} --model.wsol_method {values.get('wsol_method')} "
                    f"({values.get('num_classes')} classes)")

        raise WSOLInputError(f"{path}: a checkpoint of {describe(saved)}, but this run builds {describe(hparams)}; "
                             f"resume with the run's own flags (its config.yaml: --config)")
    if "optimizer_states" not in checkpoint or "loops" not in checkpoint:
        raise WSOLInputError(f"{path}: holds weights only (no optimizer or loop state): it cannot be resumed")
    return [f"--model.{k} {hparams[k]} (checkpoint: {saved[k]})" for k in sorted(hparams)
            if k in saved and k not in STRUCTURAL_HPARAMS and saved[k] != hparams[k]]


def resume_command(argv: Sequence[str], run_dir: str, checkpoint: str) -> str:
    """The command line that resumes: ``argv`` without its ``--ckpt_path``, plus ``--run_dir`` and ``--ckpt_path``."""
    args = without_flag(argv, "--ckpt_path")
    if not has_flag(args, "--run_dir"):
        args += ["--run_dir", run_dir]
    script = sys.argv[0] if os.path.basename(sys.argv[0]) == "fit.py" else "scripts/fit.py"
    # this interpreter (the project's venv), not whatever "python" the shell finds
    return shlex.join([sys.executable or "python", script, *args, "--ckpt_path", checkpoint])


def interrupt_message(guard: InterruptGuard, argv: Sequence[str], run_dir: str) -> str:
    """What ``fit.py`` prints when interrupted: what ``last.ckpt`` holds and the command that resumes."""
    name = guard.signal_name
    checkpoint = find_last_checkpoint(run_dir)
    if checkpoint is None:
        return (f"interrupted ({name}) before the first epoch ended: no last.ckpt under {run_dir}; "
                f"rerun the command to start again")
    epoch = int(read_torch_file(str(checkpoint), what="checkpoint").get("epoch", -1))
    return (f"interrupted ({name}); {checkpoint} holds the run after {epoch + 1} completed epochs; resume with:\n"
            f"{resume_command(argv, run_dir, str(checkpoint))}")
