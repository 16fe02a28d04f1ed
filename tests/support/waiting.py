"""Waiting for a condition instead of sleeping for a guess."""

from __future__ import annotations

import time
from collections.abc import Callable

# Generous bound for anything a test waits on; a healthy run needs a small fraction.
PATIENCE = 30.0


def wait_for(
    condition: Callable[[], bool], timeout: float = PATIENCE, every: float = 0.002
) -> None:
    """Return once `condition()` holds; fail the test if it does not within `timeout`.

    `every`: seconds between polls, longer for a condition that asks a server (its log, a
    request), so that the polling does not load what the test measures."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(every)
