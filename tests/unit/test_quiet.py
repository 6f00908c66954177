"""The package silences exactly the third-party noise it lists, not warnings in general."""

import logging
import warnings

from wsol_lightning.quiet import install


def test_lightnings_leafspec_deprecation_is_silenced_and_other_warnings_are_not():
    from lightning.pytorch.utilities._pytree import _tree_flatten

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        install()
        _tree_flatten({"loss": 1.0})  # Lightning builds torch's deprecated LeafSpec here
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning)  # same text, from us
        warnings.warn("ours", DeprecationWarning)
    assert [(w.category, str(w.message)) for w in caught] == [
        (FutureWarning, "`isinstance(treespec, LeafSpec)` is deprecated"), (DeprecationWarning, "ours")]


def test_trainer_start_logs_no_litlogger_tip_but_its_other_lines(caplog):
    from lightning.pytorch import Trainer

    install()
    with caplog.at_level(logging.INFO, logger="lightning.pytorch"):
        Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("GPU available:") for m in messages), messages
    assert not any("litlogger" in m.lower() for m in messages), messages


def test_the_log_filter_comes_with_the_module_and_evaluate_py_does_without_logging():
    """Importing the package adds the warning filters only; wsol_lightning.module (which every Trainer of ours
    runs) adds the log filter, so evaluate.py does not pay for importing logging at every start."""
    import subprocess
    import sys

    code = ("import sys, wsol_lightning.evaluate; print('logging' in sys.modules); import wsol_lightning.module, "
            "logging; from wsol_lightning.quiet import LIGHTNING_INFO_LOGGER as name, _drop_litlogger_tip as f; "
            "print(f in logging.getLogger(name).filters)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "True"], result.stderr
