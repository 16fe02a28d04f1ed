"""Running code the model wrote: one command in a scratch folder, its whole process group
killed at the end.

Safe enough, not a sandbox: the command runs with the user's permissions and can read,
write and reach whatever the user can. What a call does see to:

- the command works in a fresh scratch folder from `tempfile` (never the current
  directory, the tasks folder or the checkout), removed afterwards whatever the command
  did to it;
- it leads a session of its own, and its process group is killed (SIGKILL) at the timeout
  and also once it has exited, so no child it left behind outlives the call; a process
  that leaves the group on purpose (setsid, setpgid) escapes this;
- stdout and stderr share one pipe, read as they come, capped, and drained past the cap
  so that the command never blocks on a full pipe;
- its environment is ours without the variables the caller names, without any that holds
  a secret, and without pytest's and xdist's; stdin is /dev/null.

POSIX only: process groups and signals.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pytest_roadmap.errors import RoadmapError, shown
from pytest_roadmap.validation import Range

DEFAULT_MAX_OUTPUT = 64 * 1024
# These names mean the Python running pytest, so `python -m pytest` finds the packages of a
# venv that was never activated (whose python is not first on PATH, or not there at all).
PYTHON_NAMES = frozenset({"python", "python3"})
# pytest's and xdist's variables (PYTEST_XDIST_WORKER, PYTEST_CURRENT_TEST, PYTEST_ADDOPTS,
# ...): a nested pytest run must not take itself for a worker or inherit the outer options.
PYTEST_PREFIX = "PYTEST_"
SCRATCH_PREFIX = "roadmap-run-"

_TIMEOUT = Range(low=0, low_open=True, unit="seconds")
_MAX_OUTPUT = Range(low=0, integer=True, noun="a whole number of bytes")
_CHUNK = 64 * 1024
# Once the group is killed its ends of the pipe close within milliseconds; only a process
# that left the group can keep the pipe open, and the call does not wait for that one.
_DRAIN_GRACE = 0.5
# Where there is no pidfd to wait on (not Linux), how often the exit is polled.
_POLL_TICK = 0.005


@dataclass(frozen=True)
class Execution:
    """What one run of an untrusted command did.

    `exit_code` is None when the command was killed at the timeout, negative when a signal
    ended it (-11: SIGSEGV), as subprocess reports it. `output` is stdout and stderr in the
    order they came, the first `max_output` bytes of it decoded as UTF-8 (errors replaced);
    `truncated` says more came. `seconds` is the command's wall time, start to exit.
    """

    exit_code: int | None
    timed_out: bool
    output: str
    truncated: bool
    seconds: float


class CommandNotFound(RoadmapError):
    """The program of a command does not exist or cannot be executed."""


def run_untrusted(
    command: Sequence[str],
    files: Mapping[str, str | bytes],
    *,
    timeout: float,
    secrets: Sequence[str] = (),
    drop: Collection[str] = (),
    max_output: int = DEFAULT_MAX_OUTPUT,
) -> Execution:
    """Run `command` (argv, no shell) with `files` written into a fresh scratch folder, its
    working directory; see the module's docstring for what is guaranteed.

    `files` maps relative names ("pkg/mod.py") to contents (str is written as UTF-8). A
    relative program ("./run.sh") is looked up in the scratch folder, "python" and
    "python3" mean sys.executable. `secrets`: values that must not reach the command;
    `drop`: variable names it never gets. Raises ValueError for a bad argument or file name,
    CommandNotFound when the program does not exist or cannot be executed, OSError when the
    scratch folder cannot be removed (a process that left the group still writing in it).
    """
    argv = _argv(command)
    _TIMEOUT.check(timeout, "timeout")
    _MAX_OUTPUT.check(max_output, "max_output")
    contents = _checked_files(files)
    env = untrusted_environment(os.environ, secrets=secrets, drop=drop)
    folder = tempfile.mkdtemp(prefix=SCRATCH_PREFIX)
    try:
        _write_files(Path(folder), contents)
        return _run(argv, folder, env, timeout, max_output)
    finally:
        remove_scratch(folder)


def untrusted_environment(
    base: Mapping[str, str], *, secrets: Sequence[str] = (), drop: Collection[str] = ()
) -> dict[str, str]:
    """`base` without the `drop` names, any variable holding a secret (in its value, or
    even its name) and pytest's variables; with PYTHONDONTWRITEBYTECODE=1."""
    # An empty secret is in every string: it would take the whole environment away.
    hidden = [secret for secret in secrets if secret]
    env = {
        name: value
        for name, value in base.items()
        if name not in drop
        and not name.startswith(PYTEST_PREFIX)
        and not any(secret in value or secret in name for secret in hidden)
    }
    # The scratch folder goes away anyway; no cache files left in the user's packages.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def remove_scratch(folder: str) -> None:
    """Remove `folder` and all in it, also what the command made read-only or unwritable."""
    try:
        shutil.rmtree(folder)
    except OSError:
        _open_up(folder)
        shutil.rmtree(folder)


def _open_up(folder: str) -> None:
    """Make every folder under `folder` (itself included) ours to list and empty again.

    Only folders: removing a read-only file needs a writable folder, not a writable file.
    Never through a symlink: the command may have left one pointing anywhere, and chmod
    follows it. (A process that escaped the group could still swap a folder for a symlink
    between lstat and chmod; code that wants to harm the user can do so directly anyway.)
    """
    os.chmod(folder, stat.S_IRWXU)
    for root, folders, _ in os.walk(folder):  # top-down: each opened before it is entered
        for name in folders:
            path = os.path.join(root, name)
            with contextlib.suppress(FileNotFoundError):  # gone since the listing
                if stat.S_ISDIR(os.lstat(path).st_mode):
                    os.chmod(path, stat.S_IRWXU)


def _argv(command: Sequence[str]) -> list[str]:
    # A str is a Sequence[str] too: "python -c pass" would run a program named "p".
    if isinstance(command, str | bytes) or not command:
        raise ValueError(f"command must be a non-empty list of arguments, got {shown(command)}")
    argv = list(command)
    if argv[0] in PYTHON_NAMES and sys.executable:
        argv[0] = sys.executable
    return argv


def _checked_files(files: Mapping[str, str | bytes]) -> dict[PurePosixPath, bytes]:
    """The files by relative path, checked before any folder is made."""
    contents: dict[PurePosixPath, bytes] = {}
    for name, content in files.items():
        if not isinstance(name, str):
            raise ValueError(f"file name must be a str, got {shown(name)}")
        path = PurePosixPath(name)
        if (
            "\0" in name
            or path.is_absolute()
            or ".." in path.parts
            or not path.parts  # "" and "." name the folder itself
        ):
            raise ValueError(
                f"file name must be a relative path inside the scratch folder, got {shown(name)}"
            )
        if path in contents:
            raise ValueError(f"file {shown(name)} is given twice (as {str(path)!r})")
        if isinstance(content, str):
            contents[path] = content.encode("utf-8")
        elif isinstance(content, bytes):
            contents[path] = content
        else:
            raise ValueError(f"file {shown(name)} must be str or bytes, got {shown(content)}")
    return contents


def _write_files(folder: Path, contents: Mapping[PurePosixPath, bytes]) -> None:
    for path, content in contents.items():
        target = folder / path
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        except OSError as error:  # "a" and "a/b": a file where a folder should be
            raise ValueError(f"cannot write file {str(path)!r}: {error.strerror}") from None


def _run(argv: list[str], folder: str, env: dict[str, str], timeout: float, cap: int) -> Execution:
    start = time.perf_counter()
    try:
        process = subprocess.Popen(
            argv,
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError) as error:
        raise CommandNotFound(_not_found(argv[0], error)) from None
    except OSError as error:
        if error.errno == errno.ENOEXEC:  # executable, but neither a binary nor a #! script
            raise CommandNotFound(_not_found(argv[0], error)) from None
        raise
    assert process.stdout is not None
    pipe = process.stdout.fileno()
    os.set_blocking(pipe, False)
    output = _Output(cap)
    exit_watch = _exit_watch(process.pid)
    selector = selectors.DefaultSelector()
    try:
        selector.register(pipe, selectors.EVENT_READ)
        if exit_watch is not None:
            selector.register(exit_watch, selectors.EVENT_READ)
        exited = _pump(process, selector, pipe, exit_watch, output, start + timeout)
        seconds = time.perf_counter() - start
        if exit_watch is not None:
            selector.unregister(exit_watch)  # readable from now on: _drain would spin on it
        # Before the command is reaped, so that its pid (the group's id) cannot be reused.
        _kill_group(process.pid)
        _drain(selector, pipe, output)
    finally:
        _kill_group(process.pid)
        process.wait()
        selector.close()
        process.stdout.close()
        if exit_watch is not None:
            os.close(exit_watch)
    return Execution(
        exit_code=process.returncode if exited else None,
        timed_out=not exited,
        output=output.text(),
        truncated=output.truncated,
        seconds=seconds,
    )


def _not_found(program: str, error: OSError) -> str:
    return f"cannot run {shown(program)}: {error.strerror or error}"


def _exit_watch(pid: int) -> int | None:
    """A pidfd that becomes readable when `pid` exits, without reaping it; None where the
    system has none, and then the exit is polled."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        return int(pidfd_open(pid))
    except OSError:  # a kernel before 5.3, or a seccomp filter that refuses it
        return None


def _pump(
    process: subprocess.Popen[bytes],
    selector: selectors.BaseSelector,
    pipe: int,
    exit_watch: int | None,
    output: _Output,
    deadline: float,
) -> bool:
    """Read output until the command exits (True) or the deadline passes (False)."""
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return False
        wait = remaining if exit_watch is not None else min(remaining, _POLL_TICK)
        for key, _ in selector.select(wait):
            if key.fd == exit_watch:
                return True
            if not output.read(pipe):
                selector.unregister(pipe)  # closed its output, may still be running
        if exit_watch is None and process.poll() is not None:
            return True


def _drain(selector: selectors.BaseSelector, pipe: int, output: _Output) -> None:
    """Read what is left in the pipe, up to its end or for _DRAIN_GRACE at most."""
    if pipe not in {key.fd for key in selector.get_map().values()}:
        return
    deadline = time.perf_counter() + _DRAIN_GRACE
    while (remaining := deadline - time.perf_counter()) > 0:
        for key, _ in selector.select(remaining):
            if key.fd == pipe and not output.read(pipe):
                return


def _kill_group(pgid: int) -> None:
    # ProcessLookupError: the group is gone already. PermissionError: all that is left of it
    # runs as another user (a setuid program), which the user cannot signal anyway.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class _Output:
    """The first `cap` bytes of the output; the rest is read and counted, not kept."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.kept = bytearray()
        self.truncated = False

    def read(self, pipe: int) -> bool:
        """Read what the pipe has; False at its end."""
        try:
            chunk = os.read(pipe, _CHUNK)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        room = self.cap - len(self.kept)
        if len(chunk) > room:
            self.truncated = True
        if room > 0:
            self.kept += chunk[:room]
        return True

    def text(self) -> str:
        # Not final when cut: a character split at the cap is left out, not shown as U+FFFD.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return decoder.decode(bytes(self.kept), final=not self.truncated)
