"""``tune.py --workers N``: N worker processes on this machine run the study's trials concurrently.

The command a user starts (the supervisor) checks everything, creates or
resumes the study and prints its header; then it starts N workers, copies of
the command with ``--workers 1`` (``python -m wsol_lightning.tuning``), which
share the study through its storage and so its exact ``--n-trials`` budget
(:class:`~wsol_lightning.tuning.study.Budget`), with heartbeats on RDB
storages. Each worker runs in its own session, so a terminal's Ctrl-C reaches
only the supervisor, which forwards every SIGINT and SIGTERM to all workers:
one Ctrl-C stops all (each running trial ends FAIL ``interrupted`` and is
queued again, :mod:`~wsol_lightning.tuning.interrupts`), a second one makes
them exit at once. A worker whose supervisor died interrupts itself.

Devices (:func:`worker_environments`): with CUDA GPUs visible, worker ``i``
sees one of them, round-robin through ``CUDA_VISIBLE_DEVICES`` (several
workers per GPU: 8 workers on 2 GPUs = 4 per GPU); the CPU cores are split
between the workers (``OMP_NUM_THREADS``/``MKL_NUM_THREADS``, which torch's
intra-op threads follow).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, List, Mapping, Sequence

from wsol_lightning.argv import without_flag
from wsol_lightning.machine import usable_cpus

#: Set in each worker's environment: the supervisor's process id.
SUPERVISOR_ENV = "WSOL_TUNE_SUPERVISOR"


def visible_gpus(environ: Mapping[str, str], device_count: int) -> List[str]:
    """The CUDA devices this process may hand out: ``CUDA_VISIBLE_DEVICES`` if set, else ``0..count-1``."""
    if "CUDA_VISIBLE_DEVICES" in environ:
        return [d.strip() for d in environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    return [str(i) for i in range(device_count)]


def worker_environments(n_workers: int, gpus: Sequence[str], cpus: int) -> List[Dict[str, str]]:
    """Environment variables of each worker: its GPU (round-robin) and its share of the CPU cores.

    Args:
        n_workers: ``--workers``.
        gpus: the visible CUDA devices (:func:`visible_gpus`; empty on a CPU machine).
        cpus: the cores this process may use.

    Returns:
        One mapping per worker (``CUDA_VISIBLE_DEVICES`` only when there are GPUs).
    """
    threads = str(max(1, cpus // n_workers))
    environments = []
    for index in range(n_workers):
        env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
        environments.append(env)
    return environments


def worker_argv(argv: Sequence[str]) -> List[str]:
    """The supervisor's arguments with ``--workers N`` replaced by ``--workers 1``."""
    return [*without_flag(argv, "--workers"), "--workers", "1"]


def start_workers(n_workers: int, argv: Sequence[str]) -> List[subprocess.Popen]:
    """Start the workers (see module docstring); they print their trial lines to this process's output."""
    import torch

    gpus = visible_gpus(os.environ, torch.cuda.device_count() if torch.cuda.is_available() else 0)
    from wsol_lightning.tuning.interrupts import unblock

    command = [sys.executable, "-m", "wsol_lightning.tuning", *worker_argv(argv)]
    return [subprocess.Popen(command, env={**os.environ, **env, SUPERVISOR_ENV: str(os.getpid())},
                             start_new_session=True, preexec_fn=unblock)
            for env in worker_environments(n_workers, gpus, usable_cpus())]


def forward_signals(workers: List[subprocess.Popen]):
    """The hook that passes each SIGINT/SIGTERM the supervisor receives on to its workers."""
    def forward(signum: int) -> None:
        for worker in workers:
            if worker.poll() is None:
                try:
                    worker.send_signal(signum)
                except ProcessLookupError:
                    pass
    return forward


def run_workers(n_workers: int, argv: Sequence[str]) -> List[int]:
    """Start the workers, pass them every SIGINT/SIGTERM, wait for all; returns their exit statuses."""
    from wsol_lightning.tuning import interrupts

    workers: List[subprocess.Popen] = []
    with interrupts.on_signal(forward_signals(workers)):
        with interrupts.deferred():  # a signal while starting them reaches them all, once
            if interrupts.requested() is None:
                workers.extend(start_workers(n_workers, argv))
        return [worker.wait() for worker in workers]


def supervisor_pid() -> int:
    """This worker's supervisor (0 when this process is not a worker of ``--workers N``)."""
    return int(os.environ.get(SUPERVISOR_ENV, "0") or 0)


def watch_supervisor(pid: int, every: float = 1.0) -> None:
    """In a worker: SIGTERM this process (an ordinary interrupt) when its supervisor ``pid`` is gone."""
    def watch() -> None:
        while os.getppid() == pid:
            time.sleep(every)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="wsol-watch-supervisor", daemon=True).start()
