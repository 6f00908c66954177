"""``fit.py``: one training run (or the rest of one, ``--ckpt_path``), then the test split, then the CAM figure.

Ctrl-C or SIGTERM stops the run; ``last.ckpt`` (written after every epoch) is
kept, the command that resumes is printed, and the exit status is 130 or 143
(see :mod:`wsol_lightning.resume`).
"""

from __future__ import annotations

import sys
import time
from typing import Optional, Sequence

from wsol_lightning.cli import build_run, fit_and_test, format_metrics
from wsol_lightning.errors import exit_on_input_error, fail
from wsol_lightning.interrupt_guard import InterruptGuard
from wsol_lightning.module import NonFiniteLossError
from wsol_lightning.resume import interrupt_message


@exit_on_input_error
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``fit.py`` with ``argv``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    run = None
    with InterruptGuard() as guard:
        try:
            run = build_run(argv)
            if run.trainer.is_global_zero:
                resumed = f" (resuming {run.ckpt_path})" if run.ckpt_path else ""
                print(f"run directory: {run.run_dir}{resumed}", flush=True)
            started = time.perf_counter()
            metrics = fit_and_test(run)
        except NonFiniteLossError as error:
            fail(str(error))
        except (KeyboardInterrupt, SystemExit):
            if guard.signal is None:  # a SystemExit of someone else, or KeyboardInterrupt raised by hand
                raise
            if run is None:
                print("interrupted before training started; nothing to resume", file=sys.stderr, flush=True)
            elif run.trainer.is_global_zero:
                print(interrupt_message(guard, argv, str(run.run_dir)), file=sys.stderr, flush=True)
            return guard.exit_status
    if run.trainer.is_global_zero:
        print(f"finished in {time.perf_counter() - started:.0f} s; run directory: {run.run_dir}")
        print("\n".join(format_metrics(metrics)))
        if "figure" in metrics:
            print(f"CAM figure: {metrics['figure']}")
    return 0
