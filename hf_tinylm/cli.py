"""The `tinylm` command (also `python -m hf_tinylm`); each subcommand is a module of `hf_tinylm.commands`.

Errors a user can fix (missing files, bad values, a folder that is not TinyLM...) are raised by the commands as
ValueError or OSError and printed here as one line, `tinylm: error: <message>`, on stderr with exit status 1;
argparse usage errors exit with 2 and Ctrl-C with 130.
"""

import argparse
import gc
import importlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from importlib.metadata import PackageNotFoundError, version

from .commands import COMMANDS
from .flags import HelpFormatter, add_flags, settings_from
from .terminal import OutputOptions, library_output

PROG = "tinylm"


def main(argv: list[str] | None = None) -> int:
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    command = commands[args.command]
    with _ctrl_c_recorded() as interrupted:
        try:
            settings = settings_from(args, command.SETTINGS)
            output = (library_output(settings.progress, settings.quiet) if isinstance(settings, OutputOptions)
                      else nullcontext())
            with output:
                result = command.run(settings)
        except KeyboardInterrupt as error:
            return _interrupted(error)
        except (ValueError, OSError) as error:
            if interrupted:  # a library turned the KeyboardInterrupt into an error of its own
                return _interrupted(error)
            print(f"{PROG}: error: {error}", file=sys.stderr)
            return 1
    return result


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """The parser, with a subparser per command whose flags come from the command's settings dataclass, and the
    command modules by name."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train, inspect, convert and generate with TinyLM models (Hugging Face Transformers).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands = {}
    for name in COMMANDS:
        command = importlib.import_module(f".commands.{name}", __package__)
        subparser = subparsers.add_parser(
            name, help=command.HELP, description=command.DESCRIPTION, formatter_class=HelpFormatter
        )
        add_flags(subparser, command.SETTINGS)
        commands[name] = command
    return parser, commands


def _version() -> str:
    try:
        return version("hf-tinylm")
    except PackageNotFoundError:
        return "unknown"


def _interrupted(error: BaseException) -> int:
    """Report Ctrl-C in one line. Objects whose construction the interrupt cut short (a progress bar half-built,
    say) are freed here first with their destructors' errors dropped: otherwise they print a traceback at exit."""
    previous_hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        while error is not None:  # the KeyboardInterrupt may be the context of a library's own error
            traceback.clear_frames(error.__traceback__)
            error = error.__cause__ or error.__context__
        gc.collect()
    finally:
        sys.unraisablehook = previous_hook
    print(f"{PROG}: interrupted", file=sys.stderr)
    return 130


@contextmanager
def _ctrl_c_recorded() -> Iterator[list]:
    """Ctrl-C raises KeyboardInterrupt as usual, and is also recorded in the yielded list: some libraries (torch's
    storage code under safetensors, for one) catch the KeyboardInterrupt and raise another error instead."""
    received: list = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def on_sigint(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield received
    finally:
        signal.signal(signal.SIGINT, previous)
