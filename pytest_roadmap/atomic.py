"""Whole-file writes that readers never see half done."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterable, Mapping


def write_atomic(path: str | os.PathLike[str], text: str, *, durable: bool = True) -> None:
    """Replace `path` with `text` (UTF-8) in one step.

    The text goes to a temporary file in the same folder (os.replace is atomic only
    within one file system), is flushed and fsynced, then renamed over `path`. On any
    error the temporary file is removed and the old file is left as it was.

    `durable=False` skips both fsyncs: the file is still never seen half written by a
    reader or after the writer is killed, only a power cut could lose it. An OSError names
    `path` in its `filename`, never the temporary file.
    """
    target = os.fspath(path)
    folder, name = os.path.split(target)
    try:
        mode: int | None = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = None
    _replace(folder, name, text, secrets.token_hex(6), durable=durable, mode=mode)
    if durable:
        sync_folder(folder or ".")


def write_many_atomic(
    folder: str | os.PathLike[str],
    files: Iterable[tuple[str, str]],
    existing: Mapping[str, os.DirEntry[str]] | None = None,
    *,
    keep_going: bool = False,
) -> list[tuple[str, OSError | ValueError]]:
    """Write each `(name, text)` into `folder` as `write_atomic(durable=False)` would, then
    make them durable with one sync of the folder.

    For thousands of small files (a report's task outputs): one fsync per file would cost
    most of a run's tail, and the per-file stat of the old file is replaced by one listing
    (`existing`, from `list_folder`, if the caller has it already). An OSError names the
    file it failed on in its `filename` (as with `write_atomic`); the files before it are
    written, the one it failed on is left as it was.

    `keep_going=True`: a file that fails (a full disk, a name too long, text it cannot
    encode) is left as it was and the others are still written; returns `(name, error)` of
    each that failed (none without `keep_going`, which raises the first error instead).
    """
    where = os.fspath(folder)
    if existing is None:
        existing = list_folder(where)
    token = secrets.token_hex(6)
    failed: list[tuple[str, OSError | ValueError]] = []
    for number, (name, text) in enumerate(files):
        try:
            entry = existing.get(name)
            mode = stat.S_IMODE(entry.stat().st_mode) if entry is not None else None
            _replace(where, name, text, f"{token}{number}", durable=False, mode=mode)
        except (OSError, ValueError) as exc:
            if not keep_going:
                raise
            failed.append((name, exc))
    sync_folder(where)
    return failed


def list_folder(folder: str | os.PathLike[str]) -> dict[str, os.DirEntry[str]]:
    """The entries of `folder` by name, from one listing."""
    with os.scandir(folder) as entries:
        return {entry.name: entry for entry in entries}


def _replace(
    folder: str, name: str, text: str, tag: str, *, durable: bool, mode: int | None
) -> None:
    # os.path on strings, not pathlib: a report writes two files per passed task, and
    # pathlib's per-call cost showed in benchmarks/report_bench.py's profile.
    target = os.path.join(folder, name)
    try:
        _write_then_rename(target, os.path.join(folder, f".{name}.{tag}.tmp"), text, durable, mode)
    except OSError as exc:
        exc.filename = target  # the file the caller asked for, not the temporary one
        raise


def _write_then_rename(target: str, tmp: str, text: str, durable: bool, mode: int | None) -> None:
    data = text.encode("utf-8")  # before anything exists: text it cannot encode leaves no trace
    # os.open with 0o666 lets the umask decide the mode, as a plain open() would;
    # mkstemp would leave every report readable by its owner only.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if mode is not None:  # keep the old file's mode, as writing in place would
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def sync_folder(folder: str | os.PathLike[str]) -> None:
    """Make the renames in `folder` durable; best effort, as not every system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
