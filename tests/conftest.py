"""Shared fixtures. Tests may read ``../shared`` (reference tables, real KiTS19 labels, one real CT); CI has it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"{SHARED} is missing: the test suite needs the shared reference data next to the checkout")
    return SHARED


@pytest.fixture(autouse=True)
def _two_threads():
    # CI has 2 cores; keep every test on the same budget a user's laptop would give it.
    torch.set_num_threads(2)
    yield
