"""Shared test set-up: two CPU threads, quiet Lightning, deterministic seeds."""

import os
import warnings

import pytest
import torch

os.environ.setdefault("PYTHONHASHSEED", "0")
torch.set_num_threads(2)
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*GPU available but not used.*")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
