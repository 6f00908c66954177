"""``python -m wsol_lightning.tuning`` = ``python scripts/tune.py`` (the ``--workers`` supervisor starts this)."""

import sys

from wsol_lightning.tuning.main import main

sys.exit(main())
