"""What the commands print besides their results: progress bars and log messages, ours and the libraries'."""

import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import datasets
import huggingface_hub.utils as hub_utils
from transformers.utils import logging as transformers_logging

from .flags import option


@dataclasses.dataclass(kw_only=True)
class OutputOptions:
    """The output flags every long-running command has."""

    progress: bool = option(True, flags=("--no-progress",), help="no progress bars")
    quiet: bool = option(False, flags=("--quiet", "-q"),
                         help="print only results and errors: no progress bars, training log or library messages")

    @property
    def show_progress(self) -> bool:
        return self.progress and not self.quiet


@contextmanager
def library_output(progress: bool, quiet: bool) -> Iterator[None]:
    """Progress bars of Transformers, Datasets and the Hub on or off, and their (and our) log messages limited to
    errors when `quiet`; everything is restored on exit, so a caller in the same process is unaffected."""
    bars = not quiet and progress
    switches = [
        (transformers_logging.is_progress_bar_enabled(),
         transformers_logging.enable_progress_bar, transformers_logging.disable_progress_bar),
        (datasets.is_progress_bar_enabled(), datasets.enable_progress_bars, datasets.disable_progress_bars),
        (not hub_utils.are_progress_bars_disabled(), hub_utils.enable_progress_bars, hub_utils.disable_progress_bars),
    ]
    verbosity = transformers_logging.get_verbosity()
    datasets_verbosity = datasets.logging.get_verbosity()
    ours = logging.getLogger("hf_tinylm")
    our_level = ours.level
    for _, enable, disable in switches:
        (enable if bars else disable)()
    if quiet:
        transformers_logging.set_verbosity_error()
        datasets.logging.set_verbosity_error()
        ours.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for was_enabled, enable, disable in switches:
            (enable if was_enabled else disable)()
        transformers_logging.set_verbosity(verbosity)
        datasets.logging.set_verbosity(datasets_verbosity)
        ours.setLevel(our_level)
