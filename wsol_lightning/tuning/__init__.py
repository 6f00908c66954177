"""Everything about a study, one job per module (``scripts/tune.py`` and ``python -m wsol_lightning.tuning``
call :func:`main.main`).

* ``main``: the entry point: parse, check, plan, open the study, run the loop, print.
* ``options``: tune.py's flags, their defaults (``TUNE_DEFAULT_ARGS``) and checks.
* ``plan``: the options resolved into a study (directory, storage URL, space, budget), and the opened study.
* ``checks``: the dry build of the runs a study can make and the trainer settings it refuses.
* ``loop``: one worker's study loop until the budget is used.
* ``workers``: ``--workers N``: N worker processes on this machine (GPUs round-robin, cores split).
* ``interrupts``: Ctrl-C / SIGTERM: the running trial ends FAIL ``interrupted`` and is queued again.
* ``objective``: a trial = fit.py's run with the suggested values and the pruning callback.
* ``record``: what a trial leaves in the storage (outcome, user attributes).
* ``space``: search-space files, their validation, suggestion and grids.
* ``study``: storage, sampler, pruner, study creation and the trial budget.
* ``ddp``: DDP trials whose ranks Lightning starts (``ddp_spawn``, plain ``ddp``).
* ``cluster``: DDP trials whose ranks a launcher starts (torchrun, SLURM ``srun``, MPI): one trial for all.
* ``report``: the line per trial, the summary, the table and the plots.
"""
