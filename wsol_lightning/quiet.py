"""Narrow silencing of third-party noise that we cannot fix at its source.

The warning filters are installed once when the package is imported
(``wsol_lightning/__init__.py``), so fit.py, tune.py and the tests start quiet;
the log filter when :mod:`wsol_lightning.module` is (every Trainer of ours
trains or evaluates a ``WSOLModule``): importing ``logging`` costs ~8 ms that
``evaluate.py``, which starts no Trainer, would pay on every run. Each warning
filter names the message, the category and the module the warning is
attributed to, so anything about our own code, or a new warning of these
libraries, still shows; the test configuration applies the same list
(``tests/conftest.py``).
"""

from __future__ import annotations

import warnings
from typing import Tuple, Type

#: ``(message regex, category, module regex)`` of each silenced warning, and why.
THIRD_PARTY_WARNINGS: Tuple[Tuple[str, Type[Warning], str], ...] = (
    # Lightning 2.6 builds torch's deprecated LeafSpec whenever it flattens a logged dict (every step).
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"lightning\.pytorch\.utilities\._pytree"),
    # LightningCLI itself calls jsonargparse APIs that jsonargparse 4.x deprecates for v5 (raised in
    # Lightning's cli.py; the same deprecations raised from our code are not filtered).
    (r"\s*(By default only one JsonargparseDeprecationWarning|.*deprecated in v4\.\d+\.\d+ and will be removed in v5)",
     DeprecationWarning, r"lightning\.pytorch\.cli"),
    # Under DDP our epoch metrics are logged already reduced (torchmetrics sync, all_gather of the top-1
    # counts), so Lightning's advice to add sync_dist=True would only average equal values again.
    (r"It is recommended to use `self\.log\(.*sync_dist=True\)` when logging on epoch level in distributed "
     r"setting", UserWarning, r"lightning\.pytorch\.trainer\.connectors\.logger_connector\.result"),
)

#: Logger of Lightning's rank-zero messages, and what is dropped from it: the advertisement for
#: LitLogger that every Trainer prints (an INFO record, not a warning).
LIGHTNING_INFO_LOGGER = "lightning.pytorch.utilities.rank_zero"


def _drop_litlogger_tip(record) -> bool:
    """A log filter (a callable, as ``logging`` accepts): False for the LitLogger advertisement."""
    return not str(record.msg).startswith("💡 Tip: For seamless cloud logging")


def install_warning_filters() -> None:
    """Add the warning filters (idempotent)."""
    for message, category, module in THIRD_PARTY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def install_log_filter() -> None:
    """Drop the LitLogger tip from Lightning's rank-zero logger (idempotent)."""
    import logging

    logger = logging.getLogger(LIGHTNING_INFO_LOGGER)
    if _drop_litlogger_tip not in logger.filters:
        logger.addFilter(_drop_litlogger_tip)


def install() -> None:
    """Add the warning filters and the log filter (idempotent)."""
    install_warning_filters()
    install_log_filter()
