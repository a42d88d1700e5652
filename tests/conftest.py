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


# The real GPT-2 files, WikiText-2 and TinyShakespeare: `$HF_TINYLM_TEST_DATA`, else `../shared/data` beside the clone.
NEIGHBOUR_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NO_SHARED_DATA = "no shared real-data folder (set HF_TINYLM_TEST_DATA to it)"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder. Without it the test is skipped (and counted in the summary), except where
    $HF_TINYLM_REQUIRE_TEST_DATA is set (CI), where that is a failure."""
    value = os.environ.get("HF_TINYLM_TEST_DATA")
    path = Path(value) if value else NEIGHBOUR_DATA
    if path.is_dir():
        return path
    problem = f"HF_TINYLM_TEST_DATA={value} is not a folder" if value else NO_SHARED_DATA
    if os.environ.get("HF_TINYLM_REQUIRE_TEST_DATA"):
        pytest.fail(f"{problem}; CI requires it.")
    pytest.skip(problem)


def pytest_terminal_summary(terminalreporter):
    """One loud line when tests were skipped for want of the shared data."""
    skipped = [report for report in terminalreporter.stats.get("skipped", [])
               if "HF_TINYLM_TEST_DATA" in str(report.longrepr)]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} tests SKIPPED: {NO_SHARED_DATA}; they check real GPT-2 weights, OpenAI's TensorFlow "
            f"release format and real text, and CI runs them.", yellow=True, bold=True)
