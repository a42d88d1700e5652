"""Write a folder all at once: work happens in a temporary sibling that replaces the target only on success."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output_folder(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`; move it to `target` when the block succeeds.

    On any exception the temporary folder is deleted and `target` is left as it was, so a failed conversion or
    training run never leaves a half-written model behind. An existing `target` is refused unless `overwrite`.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"Output folder {target} already exists; pass --overwrite to replace it.")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the finished folder gets the usual permissions
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    staging.rename(target)
