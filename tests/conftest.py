"""Shared test set-up: two CPU threads, quiet Lightning, deterministic seeds."""

import os
import warnings

import pytest
import torch

os.environ.setdefault("PYTHONHASHSEED", "0")
torch.set_num_threads(2)
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*GPU available but not used.*")


def pytest_configure(config):
    """pytest resets warning filters for each test: apply the package's narrow third-party filters there too."""
    from wsol_lightning.quiet import THIRD_PARTY_WARNINGS

    for message, category, module in THIRD_PARTY_WARNINGS:
        config.addinivalue_line("filterwarnings", f"ignore:{message}:{category.__name__}:{module}")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
