"""Whole-file writes that readers never see half done."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path


def write_atomic(path: Path, text: str, *, durable: bool = True) -> None:
    """Replace `path` with `text` (UTF-8) in one step.

    The text goes to a temporary file in the same folder (os.replace is atomic only
    within one file system), is flushed and fsynced, then renamed over `path`. On any
    error the temporary file is removed and the old file is left as it was.

    `durable=False` skips both fsyncs: the file is still never seen half written by a
    reader or after the writer is killed, only a power cut could lose it. Callers writing
    many files use it and sync the folder once with `sync_folder`.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # os.open with 0o666 lets the umask decide the mode, as a plain open() would;
    # mkstemp would leave every report readable by its owner only.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """Make the rename itself durable; best effort, as not every system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
