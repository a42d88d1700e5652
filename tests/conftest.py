"""Shared pytest fixtures and settings."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests (tests/test_properties.py): a fixed seed and 50 examples per property in CI; more on request with
# `--hypothesis-profile=thorough`. No deadline: the first example of a property pays for imports and kernels.
settings.register_profile("ci", max_examples=50, derandomize=True, deadline=None, print_blob=True)
settings.register_profile("thorough", max_examples=500, deadline=None, print_blob=True)
settings.load_profile("ci")


def pytest_configure(config):
    """Remote code loaded in this process (`trust_remote_code=True`) is copied into a throwaway modules folder."""
    if "HF_MODULES_CACHE" not in os.environ:
        config.hf_modules_cache = tempfile.mkdtemp(prefix="hf-tinylm-tests-modules-")
        os.environ["HF_MODULES_CACHE"] = config.hf_modules_cache


def pytest_unconfigure(config):
    if getattr(config, "hf_modules_cache", None):
        shutil.rmtree(config.hf_modules_cache, ignore_errors=True)


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
