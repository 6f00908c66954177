"""WSOL with PyTorch Lightning and Optuna; importing it silences known third-party noise (see ``quiet``)."""

from wsol_lightning.quiet import install_warning_filters as _install_warning_filters

_install_warning_filters()  # and wsol_lightning.module installs the log filter
