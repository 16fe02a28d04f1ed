"""Judging a run from the sandbox's request log: the busiest window, the most in flight,
the achieved rate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from pytest_roadmap.sandbox.paths import CHAT_PATH
from pytest_roadmap.windows import busiest_window


def _select(entries: Iterable[Mapping[str, Any]], path: str | None) -> list[Mapping[str, Any]]:
    return [entry for entry in entries if path is None or entry.get("path") == path]


def max_in_window(
    entries: Iterable[Mapping[str, Any]], window: float = 1.0, path: str | None = None
) -> int:
    """The most requests whose arrival falls in any half-open window [t, t + window)."""
    times = sorted(float(entry["arrived"]) for entry in _select(entries, path))
    return busiest_window(times, window)[0]


def max_tokens_in_window(entries: Iterable[Mapping[str, Any]], window: float = 60.0) -> int:
    """The most tokens (each answer's `usage` total, at its arrival) in any half-open
    window [t, t + window): what a server counting tokens per sliding window saw."""
    arrivals = sorted(
        (float(entry["arrived"]), int(entry["usage"]["total"]))
        for entry in entries
        if isinstance(entry.get("usage"), Mapping)
    )
    best = total = end = 0
    for start, (first, _) in enumerate(arrivals):
        while end < len(arrivals) and arrivals[end][0] < first + window:
            total += arrivals[end][1]
            end += 1
        best = max(best, total)
        total -= arrivals[start][1]
    return best


def max_in_flight(entries: Iterable[Mapping[str, Any]], path: str | None = CHAT_PATH) -> int:
    """The most requests open at once, from [arrived, answered); unanswered ones never end."""
    events: list[tuple[float, int]] = []
    for entry in _select(entries, path):
        events.append((float(entry["arrived"]), 1))
        answered = entry.get("answered")
        if answered is not None:
            events.append((float(answered), -1))
    # At equal times ends sort first: an answer and the next arrival are not concurrent.
    events.sort()
    best = current = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best


def achieved_rate(entries: Iterable[Mapping[str, Any]], path: str | None = None) -> float:
    """Requests per second between the first and last arrival: (n - 1) / span.

    0.0 for fewer than two requests; infinity if they all arrived at the same instant.
    """
    times = sorted(float(entry["arrived"]) for entry in _select(entries, path))
    if len(times) < 2:
        return 0.0
    span = times[-1] - times[0]
    return (len(times) - 1) / span if span > 0 else math.inf
