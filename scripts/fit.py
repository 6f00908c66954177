#!/usr/bin/env python
"""Train a WSOL network: ``python scripts/fit.py --bg-grid-size 0.4``.

Every Lightning Trainer flag works as ``--trainer.<flag>``; model and data
arguments as ``--model.*`` / ``--data.*``; ``--config run.yaml``;
``python scripts/fit.py --help`` lists them all.
"""

from __future__ import annotations

import sys

from wsol_lightning.fit import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
