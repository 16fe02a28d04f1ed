"""The busiest window: the most events in any sliding window, as a server counts requests.

The client's compliance section (compliance.py) and the sandbox's judgement of a run
(sandbox/analysis.py) count the same way, over the client's send times and the server's
arrival times.
"""

from __future__ import annotations

from collections.abc import Sequence


def busiest_window(times: Sequence[float], window: float = 1.0) -> tuple[int, float | None]:
    """The most of the sorted `times` in any half-open window [t, t + window), and its t."""
    best, at, end = 0, None, 0
    # A busiest window can always start at an event, so slide one over the sorted list.
    for start, first in enumerate(times):
        end = max(end, start)
        while end < len(times) and times[end] < first + window:
            end += 1
        if end - start > best:
            best, at = end - start, first
    return best, at
