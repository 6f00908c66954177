#!/usr/bin/env python
"""Evaluate a checkpoint and export its score maps: ``python scripts/predict.py --ckpt_path CKPT --split test``.

``--save_scoremaps DIR`` writes ``DIR/<image_id>.npy`` (wsolevaluation's layout),
``--json PATH`` the metrics, ``--figure PATH`` the CAM grid; ``--data.*`` flags
override the checkpoint's data settings; ``python scripts/predict.py --help``.
"""

from __future__ import annotations

import sys

from wsol_lightning.predict import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
