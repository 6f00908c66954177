"""Before any trial: build (not train) the runs a study can make, and refuse what a trial cannot honour.

A refusal is a one-line :class:`~wsol_lightning.errors.WSOLInputError`; nothing
has been recorded in the storage yet.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from wsol_lightning.errors import WSOLInputError
from wsol_lightning.tuning import ddp
from wsol_lightning.tuning.space import SearchSpace, trial_args

if TYPE_CHECKING:
    from wsol_lightning.tuning.cluster import World


def check_trainer(trainer, storage_is_rdb: bool, workers: int = 1) -> None:
    """Refuse settings a pruned trial cannot honour.

    * ``val_check_interval`` other than once per epoch: the pruning callback
      reports with step = epoch, so a second validation in an epoch would be
      dropped (Optuna ignores a step reported twice);
    * DDP without an RDB storage: optuna-integration's callback needs one;
    * DDP with ``--workers`` > 1: each worker is given one device.
    """
    interval = trainer.val_check_interval
    if not (isinstance(interval, float) and interval == 1.0):
        raise WSOLInputError(
            f"--trainer.val_check_interval={interval}: tune.py reports val/localization once per epoch (step = "
            f"epoch) and would drop the other validations; use 1.0 (--trainer.check_val_every_n_epoch N validates "
            f"every N epochs)")
    if ddp.is_distributed(trainer) and not storage_is_rdb:
        raise WSOLInputError(f"--trainer.strategy {ddp.strategy_name(trainer)}: DDP trials need an RDB --storage "
                             f"(sqlite:///..., postgresql://...), not a journal file")
    if ddp.is_distributed(trainer) and workers > 1:
        raise WSOLInputError(f"--workers {workers}: each worker trains on one device; DDP trials "
                             f"(--trainer.strategy {ddp.strategy_name(trainer)}) take one tune.py per machine "
                             f"(leave out --workers)")


def corners(space: SearchSpace) -> List[Dict[str, Any]]:
    """Every parameter at its low end, then at its high end, then each other choice of each categorical."""
    ends = [{p.name: (getattr(p, end) if p.type != "categorical" else p.choices[0]) for p in space.parameters}
            for end in ("low", "high")]
    return ends + [{**ends[0], p.name: choice} for p in space.parameters for choice in p.choices[1:]]


def dry_build(args: Sequence[str], space: SearchSpace, study_dir: Path, storage_is_rdb: bool,
              workers: int = 1) -> Optional[World]:
    """Build (not train) a run at each of the space's :func:`corners` and check its trainer.

    Catches what only the module or data module knows (``--data.batch_size 0``,
    unknown flags, ...) before any trial; the one-line error is theirs.

    Returns:
        The ranks a cluster launcher started (torchrun, SLURM, ...), or None
        (:func:`~wsol_lightning.tuning.cluster.external_world`).
    """
    from wsol_lightning.cli import build_run
    from wsol_lightning.tuning.cluster import external_world

    world = None
    for values in corners(space):
        try:
            run = build_run([*args, *space.fixed_args(), *trial_args(values), "--run_dir", str(study_dir / "_check")])
        except WSOLInputError as error:
            raise WSOLInputError(_from_the_space(str(error), space, values)) from error
        check_trainer(run.trainer, storage_is_rdb, workers)
        world = world or external_world(run.trainer)
        del run
    return world


def _from_the_space(message: str, space: SearchSpace, values: Dict[str, Any]) -> str:
    """``message`` naming the search space as its source when the flag at fault came from it (not from the user's
    own fit.py flags): ``<space>: fixed <key>: ...`` or ``<space>: <key> at <value>: ...``."""
    for key in space.fixed:
        if re.match(rf"--{re.escape(key)}\b", message):
            return f"{space.source}: fixed {key}: {message}"
    for key, value in values.items():
        if re.match(rf"--{re.escape(key)}\b", message):
            return f"{space.source}: {key} at {value}: {message}"
    return message
