"""From tune.py's options to a study: where it lives, what it searches, its budget, and the opened study.

:func:`make_plan` resolves the options (study directory, storage URL, search
space, ``--enqueue`` values, pruner, the budget a grid allows) without touching
the storage; :func:`open_study` creates or resumes the study in the storage
with this worker's sampler and pruner and the enqueued values.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import optuna

from wsol_lightning.tuning.objective import Objective
from wsol_lightning.tuning.options import TUNE_DEFAULT_ARGS
from wsol_lightning.tuning.space import SearchSpace, default_search_space, load_search_space, parse_enqueue
from wsol_lightning.tuning.study import (attach, create_or_load_study, enqueue_once, is_journal, make_pruner,
                                         make_sampler, normalize_url, open_storage, redact, worker_seed)

if TYPE_CHECKING:
    from wsol_lightning.tuning.cluster import Ranks


@dataclass
class StudyPlan:
    """What every trial of one tune.py command shares."""

    options: argparse.Namespace
    space: SearchSpace
    base_args: List[str]
    study_dir: Path
    storage_url: str
    enqueued: List[Dict[str, Any]]
    n_trials: int
    pruner: optuna.pruners.BasePruner
    notes: List[str] = field(default_factory=list)
    ranks: Optional["Ranks"] = None  # ranks launched from outside (torchrun, SLURM, ...), once connected

    @property
    def is_rdb(self) -> bool:
        """Whether the storage is an RDB one (heartbeats, DDP trials), not a journal file."""
        return not is_journal(self.storage_url)

    @property
    def url(self) -> str:
        """The storage URL as opened (``postgresql://`` names the installed driver, see :func:`normalize_url`)."""
        return normalize_url(self.storage_url)

    def objective(self) -> Objective:
        """The objective of this study's trials (rank 0's when ranks are launched from outside)."""
        kwargs = dict(storage_url=self.url if self.is_rdb else None, study_name=self.options.study_name,
                      test=self.options.test, figure=self.options.figure)
        if self.ranks is not None:
            from wsol_lightning.tuning.cluster import LeaderObjective

            return LeaderObjective(self.base_args, self.space, self.study_dir, self.n_trials, ranks=self.ranks,
                                   **kwargs)
        return Objective(self.base_args, self.space, self.study_dir, self.n_trials, **kwargs)

    def header(self, created: bool, existing: int) -> str:
        """What tune.py prints before its first trial."""
        options = self.options
        fixed = f" (fixed: {' '.join(self.space.fixed_args())})" if self.space.fixed else ""
        return "\n".join([
            *self.notes,
            f"study {options.study_name} ({'new' if created else f'resumed, {existing} trials'}) in "
            f"{redact(self.url)}",
            f"study directory: {self.study_dir}",
            f"search space: {self.space.describe()}{fixed}",
            f"{self.n_trials} trials, {options.sampler} sampler, {options.pruner} pruner"])


def make_plan(options: argparse.Namespace, fit_args: List[str]) -> StudyPlan:
    """Resolve the options (nothing is written, the storage is not opened)."""
    study_dir = Path(options.study_dir or Path("runs") / f"tune-{options.study_name}").resolve()
    storage_url = options.storage or f"sqlite:///{study_dir / 'optuna.db'}"
    space = load_search_space(options.search_space) if options.search_space else default_search_space()
    enqueued = parse_enqueue(options.enqueue, space)
    pruner = make_pruner(options.pruner, options.n_startup_trials, options.n_warmup_steps, options.interval_steps,
                         options.percentile, options.patience)
    n_trials, notes = options.n_trials, []
    if options.sampler == "grid":
        grid_size = math.prod(len(values) for values in space.grid(options.grid_points).values())
        if grid_size < n_trials:
            notes.append(f"grid of {grid_size} points: --n-trials {n_trials} lowered to {grid_size}")
            n_trials = grid_size
    return StudyPlan(options, space, [*TUNE_DEFAULT_ARGS, *fit_args], study_dir, storage_url, enqueued, n_trials,
                     pruner, notes)


def open_study(plan: StudyPlan) -> Tuple[optuna.Study, bool, int]:
    """Create or resume the study; returns it (with this worker's sampler and pruner), whether it is new, and
    how many trials it already had."""
    options = plan.options
    storage = open_storage(plan.storage_url, options.heartbeat_interval, options.grace_period, options.max_retry)
    study, created = create_or_load_study(storage, options.study_name, options.direction)
    existing = len(study.get_trials(deepcopy=False))
    sampler = make_sampler(options.sampler, worker_seed(options.seed, created, existing), plan.space,
                           options.grid_points)
    attach(study, sampler, plan.pruner)
    for params in plan.enqueued:
        enqueue_once(study, params)
    return study, created, existing
