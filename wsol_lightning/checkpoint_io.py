"""Checkpoint files that are whole or absent, whatever signal stops the run while one is written.

Lightning 2.6 writes a local checkpoint through an fsspec transaction whose
temporary file lies in the system's temporary directory, then moves it onto
the target. When that directory is on another filesystem than the run
directory (``/tmp`` against a scratch disk, ``/dev/shm`` or a network mount,
as on most clusters), the move is a copy: a Ctrl-C, SIGTERM or SIGKILL during
it leaves a truncated ``last.ckpt`` and the previous epoch's one is gone too
(seen here: SIGINT at the first ``last.ckpt`` of a run under ``/dev/shm``).

:class:`AtomicCheckpointIO` writes the file beside its target (same
directory, so the same filesystem), flushes it to disk and renames it over
the target (:func:`wsol_lightning.files.replaced_atomically`): a reader sees
the old checkpoint or the new one.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Trainer

from wsol_lightning.files import replaced_atomically


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's :class:`TorchCheckpointIO` with an atomic local save (remote URLs keep Lightning's)."""

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        """Write ``checkpoint`` to ``path``: a temporary file in its directory, fsync, rename over ``path``."""
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        with replaced_atomically(path, durable=True) as file:
            torch.save(checkpoint, file)


def use_atomic_checkpoints(trainer: Trainer) -> None:
    """Give ``trainer``'s strategy an :class:`AtomicCheckpointIO` unless it was given another checkpoint plugin."""
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()
