"""The limits, shown: what the run's own log says it did to the API.

Every request a process sends is one entry of its `RequestLog`: when it was sent (on the
store's clock, the one the rate limiter schedules by), the status it got, when, and how long
the answer asked the whole run to wait (`Retry-After` on a 429 or 503, the reset of a
rate-limit header family at 0 left). Workers hand their entries to the controller with each
attempt's report; `compliance` turns the run's entries into the report's compliance section:
the most requests sent in any one-second window against the rate limit, the refusals by
status, the time paused by the server's words, and the requests sent during such a pause.
So a user can see that the limits held without the server's log. This module knows nothing
of pytest.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_roadmap.pacing import parse_limits, parse_token_limits
from pytest_roadmap.results import RunRecord, iso_utc
from pytest_roadmap.windows import busiest_window

REFUSED_STATUSES = (429, 503)

# One entry on the wire: [sent, status or None, answered or None, wait seconds, words].
Entry = list[Any]


def asked_wait(
    status: int | None,
    headers: Mapping[str, str],
    retry_after: float | None,
    now: float | None = None,
) -> tuple[float, str]:
    """How long an answer asked the whole run to wait, and in which words ((0, "") if not);
    `now` places a gateway's budget with no reset (see `pacing.parse_limits`)."""
    wait, words = 0.0, ""
    if status in REFUSED_STATUSES and retry_after is not None and retry_after > 0:
        wait, words = retry_after, f"Retry-After {retry_after:g} s on a {status}"
    if status is not None:
        for limits in (parse_limits(headers, now), parse_token_limits(headers, now)):
            if limits is not None and limits.remaining <= 0 and limits.reset > wait:
                wait, words = limits.reset, f"{limits.source} 0 for {limits.reset:g} s"
    return wait, words


class RequestLog:
    """One process's log of the requests it sent, taken away with each attempt's report."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[Entry] = []
        self._open: dict[int, Entry] = {}

    def sent(self, ticket: object, at: float) -> None:
        entry: Entry = [at, None, None, 0.0, ""]
        with self._lock:
            self._entries.append(entry)
            self._open[id(ticket)] = entry

    def answered(
        self,
        ticket: object,
        status: int | None,
        headers: Mapping[str, str],
        retry_after: float | None,
        at: float,
        own_wait: float | None = None,
    ) -> None:
        """`own_wait`: the answer said 0 left, and the run's own sends filled the window
        (`Pacer.own_wait`); the pause it asked lasts until the oldest of them leaves it."""
        with self._lock:
            entry = self._open.pop(id(ticket), None)
        if entry is None:
            return
        wait, words = asked_wait(status, headers, retry_after, at)
        if own_wait is not None and wait > own_wait:
            wait, words = own_wait, f"{words}: the run's own requests fill the window"
        entry[1:] = [status, at, wait, words]

    def take(self) -> list[Entry]:
        """The entries since the last take. A request still unanswered stays for a later
        take: with --roadmap-inflight other requests of this process are in flight when one
        attempt's report takes the log. One that never gets its answer is never taken."""
        with self._lock:
            still = {id(entry) for entry in self._open.values()}
            taken = [e for e in self._entries if id(e) not in still]
            self._entries = [e for e in self._entries if id(e) in still]
            return taken


@dataclass(frozen=True)
class Pause:
    """A stretch in which the server's words asked the run to send nothing."""

    at: float
    seconds: float
    reason: str


@dataclass
class Compliance:
    """The compliance section of a run's report."""

    requests: int
    rate_limit: float
    burst: int
    max_per_second: int  # the most requests sent in any window [t, t + 1 s)
    busiest_at: float | None  # when that window began
    statuses: dict[int, int] = field(default_factory=dict)  # answers per HTTP status
    no_answer: int = 0  # requests that got no HTTP answer (timeouts, cut connections)
    pauses: list[Pause] = field(default_factory=list)
    sent_while_paused: int = 0

    @property
    def allowed_per_second(self) -> int | None:
        """The most any one-second window may hold under the rate limit: the rate, plus the
        requests the burst lets go back to back beyond the first (None: no finite limit)."""
        if not math.isfinite(self.rate_limit):
            return None
        return max(1, math.ceil(self.rate_limit)) + self.burst - 1

    @property
    def held(self) -> bool:
        allowed = self.allowed_per_second
        return allowed is None or self.max_per_second <= allowed

    @property
    def refusals(self) -> dict[int, int]:
        return {s: n for s, n in sorted(self.statuses.items()) if s in REFUSED_STATUSES}

    @property
    def paused_s(self) -> float:
        return sum(p.seconds for p in self.pauses)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "rate_limit": self.rate_limit if math.isfinite(self.rate_limit) else None,
            "burst": self.burst,
            "allowed_per_second": self.allowed_per_second,
            "max_per_second": self.max_per_second,
            "busiest_second_at": iso_utc(self.busiest_at) if self.busiest_at else None,
            "held": self.held,
            "statuses": [{"status": s, "count": n} for s, n in sorted(self.statuses.items())],
            "no_answer": self.no_answer,
            "refusals": {
                "total": sum(self.refusals.values()),
                "by_status": [{"status": s, "count": n} for s, n in self.refusals.items()],
            },
            "paused_s": round(self.paused_s, 3),
            "pauses": [
                {"at": iso_utc(p.at), "seconds": round(p.seconds, 3), "reason": p.reason}
                for p in self.pauses
            ],
            "sent_while_paused": self.sent_while_paused,
        }


def _pauses(entries: Iterable[Entry], until: float | None) -> list[Pause]:
    """The stretches the answers asked for, overlapping ones merged, cut at `until` (the
    run's end: a Retry-After of an hour that stopped the run paused nothing after it)."""
    asked = sorted(
        (float(e[2]), float(e[2]) + float(e[3]), str(e[4]))
        for e in entries
        if e[2] is not None and e[3] and float(e[3]) > 0
    )
    merged: list[list[Any]] = []
    for start, end, reason in asked:
        if until is not None:
            end = min(end, until)
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end, reason])
    return [Pause(start, end - start, reason) for start, end, reason in merged]


def compliance(
    entries: Iterable[Entry], rate_limit: float, burst: int = 1, until: float | None = None
) -> Compliance:
    """The compliance section from the run's log entries (from every process)."""
    kept = [e for e in entries if isinstance(e, list | tuple) and len(e) == 5]
    times = sorted(float(e[0]) for e in kept)
    most, at = busiest_window(times)
    statuses: dict[int, int] = {}
    for e in kept:
        if e[1] is not None:
            statuses[int(e[1])] = statuses.get(int(e[1]), 0) + 1
    pauses = _pauses(kept, until)
    starts = [p.at for p in pauses]
    inside = 0
    for sent in times:
        n = bisect.bisect_left(starts, sent) - 1  # the last pause that began before it
        if n >= 0 and sent < pauses[n].at + pauses[n].seconds:
            inside += 1
    return Compliance(
        requests=len(kept),
        rate_limit=rate_limit,
        burst=burst,
        max_per_second=most,
        busiest_at=at,
        statuses=statuses,
        no_answer=sum(1 for e in kept if e[1] is None),
        pauses=pauses,
        sent_while_paused=inside,
    )


def of_record(record: RunRecord) -> Compliance:
    """The compliance section of a whole run."""
    return compliance(
        record.requests, record.rate_limit, record.burst, until=record.finished or None
    )


def compliance_rows(section: Compliance) -> list[tuple[str, str]]:
    """The section for people, as (label, plain text) rows: report.md and report.html
    escape them each their own way."""
    held = "held" if section.held else "OVER THE LIMIT"
    burst = f", burst {section.burst}" if section.burst > 1 else ""
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(section.statuses.items())) or "none"
    refusals = section.refusals
    refused = sum(refusals.values())
    by_status = ", ".join(f"{n} of status {s}" for s, n in refusals.items())
    reasons = sorted({p.reason for p in section.pauses})
    count = len(section.pauses)
    paused = f"{section.paused_s:.1f} s in {count} pause{'' if count == 1 else 's'}" + (
        f" ({'; '.join(reasons)})" if reasons else ""
    )
    return [
        ("Requests sent", f"{section.requests:,}, health probes and redirect hops included"),
        (
            "Busiest second",
            f"{section.max_per_second} requests, against at most {section.allowed_per_second} "
            f"at {section.rate_limit:g} requests/s{burst}: {held}"
            if section.allowed_per_second is not None
            else f"{section.max_per_second} requests (no rate limit)",
        ),
        ("Answers by status", statuses + f"; no answer: {section.no_answer}"),
        ("Refused for load", f"{refused} ({by_status})" if refused else "0"),
        ("Paused by the server's words", paused),
        ("Sent during those pauses", str(section.sent_while_paused)),
    ]
