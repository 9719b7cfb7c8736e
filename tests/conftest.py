"""Shared fixtures. Tests read their real data (KiTS19 labels, one abdominal CT, reference tables, the bundle
metadata schema) from ``tests/data``, inside the repository; ``tests/data/README.md`` gives each source and licence."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def test_data() -> Path:
    """``tests/data``: ``kits19_labels/``, ``abdomen_ct_3mm/``, ``reference/``, ``schemas/``."""
    return TEST_DATA


@pytest.fixture(autouse=True)
def _two_threads():
    # CI has 2 cores; keep every test on the same budget a user's laptop would give it.
    torch.set_num_threads(2)
    yield
