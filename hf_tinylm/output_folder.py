"""Write a folder all at once: work happens in a temporary sibling that replaces the target only on success."""

import os
import shutil
import signal
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output_folder(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`; move it to `target` when the block succeeds.

    On any exception, Ctrl-C included, the temporary folder is deleted and `target` is left as it was, so a failed
    conversion or training run never leaves a half-written model behind. An existing `target` is refused unless
    `overwrite`; it is replaced only once the new folder is in place (see `_move_into_place`).
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"Output folder {target} already exists; pass --overwrite to replace it.")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = None
    try:
        with _interrupts_deferred():  # a Ctrl-C held here arrives after `staging` is set, so it is cleaned up
            staging = _new_staging_folder(target)
        yield staging
    except BaseException:
        if staging is not None:
            with _interrupts_deferred():
                shutil.rmtree(staging, ignore_errors=True)
        raise
    _move_into_place(staging, target)


def _new_staging_folder(target: Path) -> Path:
    """An empty hidden folder beside `target`, with the permissions of any new folder (mkdtemp's is private)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    return staging


def _move_into_place(staging: Path, target: Path) -> None:
    """Rename `staging` to `target`. An old `target` is first renamed aside, restored if the move fails, and deleted
    once the new folder is in place; Ctrl-C is held until all of that is done, so `target` is always whole."""
    with _interrupts_deferred():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}") if target.exists() else None
        if old is not None:
            target.rename(old)
        try:
            staging.rename(target)
        except BaseException:
            if old is not None:
                old.rename(target)
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old) if old.is_dir() else old.unlink()


@contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) that arrives during the block and deliver it right after; outside the main thread,
    where no signal handler can be set, the block runs unprotected."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield
        return
    received = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            signal.raise_signal(signal.SIGINT)  # now handled as usual: KeyboardInterrupt by default
