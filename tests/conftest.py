"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder named by $HF_TINYLM_TEST_DATA; skips the test without it."""
    value = os.environ.get("HF_TINYLM_TEST_DATA")
    if not value:
        pytest.skip("HF_TINYLM_TEST_DATA is not set (point it at the shared 'data' folder)")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"HF_TINYLM_TEST_DATA={value} is not a folder")
    return path
