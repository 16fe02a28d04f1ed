"""Ending a run early: SIGTERM ends it as Ctrl-C does, and no request goes out after that.

CI cancels a job with SIGTERM, whose default action kills the process on the spot: nothing
written, no report. Raised as a KeyboardInterrupt instead, it ends the session the way
Ctrl-C does (pytest writes its summary and exits with status 2, INTERRUPTED), and the
controller writes its reports and the tracker.

When the controller alone is interrupted, its xdist workers run on for a moment (until xdist
tears them down), and each could start another request whose answer nobody would record. So
the controller raises a stop flag in the store first thing, and every worker checks it right
before each send; a worker whose controller is gone (killed outright) stops as well.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

from pytest_roadmap.store.base import Store


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered where Ctrl-C's KeyboardInterrupt would be."""


class RunStopped(Exception):
    """The run was stopped before this request was sent; it was not sent."""


def handle_sigterm() -> Callable[[], None] | None:
    """Make SIGTERM raise `Terminated` in the main thread; returns the undo.

    A handler installed by someone else (the application under test, another plugin) is left
    alone, and so is a process where this is not the main thread: None then.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        return None

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise Terminated("SIGTERM")

    signal.signal(signal.SIGTERM, on_sigterm)

    def undo() -> None:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, previous)

    return undo


def interruption(error: BaseException) -> str:
    """Why the run ended early, in a few words, from what pytest caught."""
    if isinstance(error, Terminated):
        return "SIGTERM"
    text = " ".join(str(error).split())
    if type(error) is KeyboardInterrupt:
        return "Ctrl-C or SIGINT"
    return text or type(error).__name__


def stop_key(instance: str) -> str:
    """The stop flag of one controller (shards sharing a store each have their own)."""
    return f"stop:{instance}"


def stop_run(store: Store, instance: str) -> None:
    """Tell this controller's workers to send nothing more."""
    store.put(stop_key(instance), "1")


class StopCheck:
    """Raises RunStopped once the run has stopped: the controller raised the stop flag, or
    (`parent` given, in a worker) the controller that started this process is gone."""

    def __init__(self, store: Store, instance: str, parent: int | None = None) -> None:
        self._store = store
        self._key = stop_key(instance)
        self._parent = parent

    def __call__(self) -> None:
        if self._parent is not None and os.getppid() != self._parent:
            raise RunStopped("the run's controller has gone; request not sent")
        if self._store.get(self._key) is not None:
            raise RunStopped("the run was interrupted; request not sent")
