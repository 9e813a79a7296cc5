"""Fixtures shared by every test module."""

import os
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state, so a failure reproduces."""
    torch.manual_seed(0)


@pytest.fixture
def data_root() -> Path:
    """The real data folder named by INCEPTORCH_DATA; tests that need it skip without it."""
    root = os.environ.get("INCEPTORCH_DATA")
    if not root:
        pytest.skip("real data not available: set INCEPTORCH_DATA to the data folder (for instance ../shared/data)")
    return Path(root)
