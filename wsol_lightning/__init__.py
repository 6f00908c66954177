"""WSOL with PyTorch Lightning and Optuna; importing it silences known third-party noise (see ``quiet``)."""

from wsol_lightning.quiet import install as _install_quiet

_install_quiet()
