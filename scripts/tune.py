#!/usr/bin/env python
"""Tune WSOL hyperparameters with Optuna: ``python scripts/tune.py`` (see ``--help``).

Every fit.py flag (``--trainer.*``, ``--model.*``, ``--data.*``, ``--config``)
also works here and applies to every trial.
"""

from __future__ import annotations

import sys

from wsol_lightning.tuning.main import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
