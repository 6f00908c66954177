#!/usr/bin/env python
"""Evaluate saved score maps as wsolevaluation does: ``python scripts/evaluate.py --help``."""

import sys

from wsol_lightning.evaluate import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
