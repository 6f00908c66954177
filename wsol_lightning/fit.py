"""``fit.py``: one training run, then the test split, then the CAM figure."""

from __future__ import annotations

import sys
import time
from typing import Optional, Sequence

from wsol_lightning.cli import build_run, fit_and_test, format_metrics
from wsol_lightning.errors import exit_on_input_error, fail
from wsol_lightning.module import NonFiniteLossError


@exit_on_input_error
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``fit.py`` with ``argv``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    run = build_run(argv)
    if run.trainer.is_global_zero:
        print(f"run directory: {run.run_dir}", flush=True)
    started = time.perf_counter()
    try:
        metrics = fit_and_test(run)
    except NonFiniteLossError as error:
        fail(str(error))
    if run.trainer.is_global_zero:
        print(f"finished in {time.perf_counter() - started:.0f} s; run directory: {run.run_dir}")
        print("\n".join(format_metrics(metrics)))
        if "figure" in metrics:
            print(f"CAM figure: {metrics['figure']}")
    return 0
