"""Trials whose ranks are launched from outside: torchrun / TorchElastic, SLURM ``srun``, MPI, LSF.

Such a launcher starts ``tune.py`` once per rank, every rank with the same
command; Lightning's cluster environments tell each process its rank
(:func:`external_world`). Left alone, every rank would run its own study loop
and train other values in one process group (optuna#4835). Instead:

* before any trial, every rank joins one process group (:class:`Ranks`, built
  with the trainer's backend and reused by Lightning's DDP) plus a gloo group
  for tune.py's own messages, kept apart from the training collectives;
* global rank 0 (the leader) alone opens the storage, asks the study for
  trials and runs the budget loop; before each trial it sends the other ranks
  (followers, :func:`follow`) the word ``trial``;
* the suggestions reach every rank through optuna-integration's
  ``TorchDistributedTrial`` (the leader's draws, broadcast; the exact values
  are taken from its broadcast ``params``, its ``suggest_float`` returns a
  float32), so every rank trains the same fit.py arguments and seed;
* :class:`DistributedPruning` calls ``TorchDistributedTrial.report`` and
  ``should_prune`` on every rank each epoch: only rank 0 reports to the
  storage and asks the pruner, the decision is broadcast, every rank stops at
  the same epoch. optuna-integration's ``PyTorchLightningPruningCallback``
  cannot do this here: it reads ``trial.study`` on every rank, which a
  follower's ``TorchDistributedTrial`` does not have;
* the budget is the leader's loop, so a trial counts once;
* an interrupt on any rank is shared at the next batch (:class:`SyncedStop`)
  and at every message, so all ranks stop together and the leader records the
  trial ``interrupted``.

A rank that fails alone (out of memory, killed) leaves the others in a DDP
collective: it records its error in the storage, and if the ranks cannot meet
again within :data:`MEET_TIMEOUT` seconds (a gloo ``monitored_barrier``), each
rank exits; gloo collectives fail at once when a peer process is gone, others
time out after ``--dist-timeout``. The leader records the trial FAIL with the
rank's error and exits 1; rerunning the launch command (``torchrun
--max-restarts``, a SLURM requeue) resumes the study. Ranks that all fail at
the same step (a diverged loss) meet again and the study goes on.
"""

from __future__ import annotations

import datetime
import os
import time
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import optuna
from lightning.pytorch import Callback

from wsol_lightning.errors import WSOLInputError
from wsol_lightning.tuning import interrupts
from wsol_lightning.tuning.objective import Objective

#: Seconds ranks wait for each other after a trial raised (a rank that fails alone: the others never come).
MEET_TIMEOUT = 60
#: The leader sends "wait" this often while it waits for other workers' trials (followers' collectives stay live).
TICK_SECONDS = 1.0


@dataclass(frozen=True)
class World:
    """This process's place among ranks launched from outside."""

    rank: int
    size: int
    environment: str
    main_address: str
    main_port: int
    backend: str


def external_world(trainer) -> Optional[World]:
    """The ranks a cluster launcher started, seen from ``trainer`` (None: Lightning starts them, or one process).

    Raises:
        WSOLInputError: the launcher started several ranks but the trainer runs one process (every rank would
            run its own study).
    """
    environment = trainer._accelerator_connector.cluster_environment  # what Lightning detected
    if not environment.creates_processes_externally or environment.world_size() <= 1:
        return None
    name = type(environment).__name__
    if trainer.world_size <= 1:
        raise WSOLInputError(
            f"tune.py runs as rank {environment.global_rank()} of {environment.world_size()} ({name}) but the "
            f"trainer is one process, so every rank would run its own study: pass --trainer.strategy ddp "
            f"--trainer.devices <ranks per node> --trainer.num_nodes <nodes>")
    # Lightning's own choice of backend (nccl on CUDA, gloo on CPU, or the strategy's): the group built here
    # is the one its DDP will use.
    backend = trainer.strategy._get_process_group_backend()
    return World(environment.global_rank(), environment.world_size(), name, environment.main_address,
                 environment.main_port, backend)


class Ranks:
    """The process group of externally launched ranks, and tune.py's messages between them.

    Args:
        world: :func:`external_world`.
        timeout: seconds a collective waits (``--dist-timeout``).
    """

    def __init__(self, world: World, timeout: float) -> None:
        import torch.distributed as dist

        self.world = world
        self.timeout = timeout
        self.broken = False
        self.stopped = False  # a "stop" went round: no message follows
        self._last_tick = 0.0
        os.environ["MASTER_ADDR"] = world.main_address
        os.environ["MASTER_PORT"] = str(world.main_port)
        limit = datetime.timedelta(seconds=timeout)
        if not dist.is_initialized():
            dist.init_process_group(world.backend, rank=world.rank, world_size=world.size, timeout=limit)
        self.group = dist.new_group(backend="gloo", timeout=limit)

    @property
    def leader(self) -> bool:
        """Whether this is global rank 0 (it alone talks to the study)."""
        return self.world.rank == 0

    def exchange(self, command: Optional[Tuple[Any, ...]]) -> Tuple[Any, ...]:
        """Every rank calls this at the same point; returns the leader's ``command``, or ``("stop",)`` if any
        rank was interrupted (then every rank is: :func:`interrupts.request`)."""
        import torch.distributed as dist

        gathered: list = [None] * self.world.size
        dist.all_gather_object(gathered, (interrupts.requested(), command), group=self.group)
        signals = [signum for signum, _ in gathered if signum]
        if signals:
            interrupts.request(signals[0])
            self.stopped = True
            return ("stop",)
        command = gathered[0][1]
        self.stopped = command[0] in ("stop", "error")
        return command

    def any_interrupted(self) -> bool:
        """Whether any rank was interrupted (a collective: every rank asks at the same batch)."""
        import torch
        import torch.distributed as dist

        flag = torch.tensor([interrupts.requested() or 0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        if flag.item():
            interrupts.request(int(flag.item()))
        return bool(flag.item())

    def meet(self) -> bool:
        """After a trial raised: whether every rank arrives within :data:`MEET_TIMEOUT` s (else ``broken``)."""
        import torch.distributed as dist

        try:
            dist.monitored_barrier(group=self.group, timeout=datetime.timedelta(seconds=min(MEET_TIMEOUT,
                                                                                              self.timeout)),
                                   wait_all_ranks=True)
        except Exception:  # noqa: BLE001 - a rank is gone or stuck: this group is done
            self.broken = True
        return not self.broken

    def leader_should_stop(self) -> bool:
        """The leader's loop asks this before each trial and while it waits: followers hear ``wait`` at most
        every :data:`TICK_SECONDS` and their interrupts come back."""
        if self.broken or self.stopped:
            return True
        if time.monotonic() - self._last_tick >= TICK_SECONDS:
            self._last_tick = time.monotonic()
            self.exchange(("wait",))
        return interrupts.requested() is not None

    def share(self, trial: optuna.Trial):
        """Leader: tell the followers a trial starts; returns the ``TorchDistributedTrial`` all ranks draw from."""
        from optuna_integration import TorchDistributedTrial

        if self.exchange(("trial", trial._trial_id))[0] == "stop":
            interrupts.check_trial(trial)
        return TorchDistributedTrial(trial, group=self.group)

    def stop_followers(self, status: int) -> None:
        """Leader, at the end: the followers exit with ``status``."""
        if not self.broken and not self.stopped:
            self.exchange(("stop", status))


class SyncedStop(interrupts.StopOnInterrupt):
    """:class:`~interrupts.StopOnInterrupt` for ranks: an interrupt on any rank stops all at the same batch."""

    def __init__(self, ranks: Ranks) -> None:
        self.ranks = ranks

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: D102
        self.ranks.any_interrupted()
        interrupts.check()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: D102
        self.on_train_batch_start(trainer, pl_module, batch, batch_idx)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: D102
        self.on_train_batch_start(trainer, pl_module, batch, batch_idx)


class DistributedPruning(Callback):
    """Per-epoch report and pruning through a ``TorchDistributedTrial`` (called on every rank, see module)."""

    def __init__(self, trial, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.pruned_epoch: Optional[int] = None

    def on_validation_end(self, trainer, pl_module) -> None:  # noqa: D102
        score = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or score is None:
            return
        self.trial.report(float(score), step=trainer.current_epoch)
        if self.trial.should_prune():
            self.pruned_epoch = trainer.current_epoch
            trainer.should_stop = True

    def check_pruned(self) -> None:
        """After ``fit``: raise ``TrialPruned`` on every rank if the pruner stopped the trial."""
        if self.pruned_epoch is not None:
            raise optuna.TrialPruned(f"Trial was pruned at epoch {self.pruned_epoch}.")


@dataclass
class LeaderObjective(Objective):
    """Rank 0's objective: the trial is shared with the followers (:meth:`Ranks.share`); after it, the ranks
    meet (:meth:`Ranks.meet`)."""

    ranks: Optional[Ranks] = None
    _joined: bool = False

    def share(self, trial: optuna.Trial):  # noqa: D102
        self._joined = True
        return self.ranks.share(trial)

    def callbacks(self, shared) -> list:  # noqa: D102
        from wsol_lightning.module import MONITOR

        return [DistributedPruning(shared, MONITOR), SyncedStop(self.ranks)]

    def __call__(self, trial: optuna.Trial) -> float:  # noqa: D102
        self._joined = False
        try:
            return super().__call__(trial)
        finally:
            if self._joined and not self.ranks.stopped:
                self.ranks.meet()  # a rank that failed alone never comes: the group is broken


def follow(ranks: Ranks, objective: Objective, storage_url: str) -> int:
    """A follower rank: train each trial the leader announces, with the leader's values; returns the exit status.

    Args:
        ranks: the connected ranks (this one is not the leader).
        objective: the study's objective (its fit.py arguments, space, study directory, ``--test``).
        storage_url: where a rank that fails alone records its error for the leader.
    """
    from optuna_integration import TorchDistributedTrial

    from wsol_lightning.cli import build_run, fit_and_test
    from wsol_lightning.module import MONITOR
    from wsol_lightning.tuning.record import release

    while True:
        command = ranks.exchange(None)
        if command[0] == "stop":
            return command[1] if len(command) > 1 else interrupts.exit_status()
        if command[0] == "error":  # the leader could not open the study: the same one line here
            raise WSOLInputError(command[1])
        if command[0] != "trial":
            continue
        shared = TorchDistributedTrial(None, group=ranks.group)
        pruning = DistributedPruning(shared, MONITOR)
        failure: Optional[BaseException] = None
        try:
            run = build_run(objective.arguments(shared), callbacks=[pruning, SyncedStop(ranks)])
            interrupts.keep_signals_here(run.trainer)
            try:
                fit_and_test(run, test=objective.test, figure=False)
            finally:
                release(run)
            pruning.check_pruned()
        except (optuna.TrialPruned, interrupts.TrialInterrupted):
            pass
        except Exception as error:  # noqa: BLE001 - the leader records the trial; this rank says why
            failure = error
        if not ranks.meet():
            if failure is not None:
                record_rank_error(storage_url, command[1], ranks.world.rank, failure)
            return 1


def record_rank_error(storage_url: str, trial_id: int, rank: int, error: BaseException) -> None:
    """Leave the leader the reason this rank failed (it only sees a broken collective); best effort."""
    from wsol_lightning.tuning.ddp import RANK_ERROR_PREFIX
    from wsol_lightning.tuning.study import open_storage

    try:
        storage = open_storage(storage_url, heartbeat_interval=None)
        storage.set_trial_system_attr(trial_id, f"{RANK_ERROR_PREFIX}{rank}",
                                      f"{type(error).__name__}: {' '.join(str(error).split())}"[:1000])
    except Exception:  # noqa: BLE001 - the storage may be unreachable from this node
        pass
