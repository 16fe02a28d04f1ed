"""What counts as a transient failure, and how long to wait before the next attempt.

pytest-rerunfailures runs the attempts (the `flaky` marker, `--reruns`, the R in the
terminal); the wait itself is computed here because its fixed `delay * factor**n` schedule
cannot honour `Retry-After`, add jitter, or stop growing at a cap.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pytest_roadmap.display import escape_controls

# Statuses that say "try again later" rather than "your request is wrong".
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
OVERLOAD_STATUSES = frozenset({429, 503})


class TaskFailure(Exception):
    """A task attempt that did not get a usable answer from the API.

    `reason` is one token-free paragraph for the user, control characters escaped (it may
    quote the API, and it reaches terminals and reports). `transient` failures are retried;
    `overload` ones (429, 503, timeouts, connection errors) also tell the adaptive
    concurrency control to back off. `refused` ones (429, 503, or a request held back
    because the run is paused or the API looks down) did not run the task: waiting them out
    spends no retry. `status` is the API's answer, if there was one.
    """

    def __init__(
        self,
        reason: str,
        *,
        transient: bool,
        overload: bool = False,
        retry_after: float | None = None,
        refused: bool = False,
        status: int | None = None,
    ) -> None:
        reason = escape_controls(reason, keep="\n")
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.overload = overload
        self.retry_after = retry_after
        self.refused = refused
        self.status = status

    @property
    def outage(self) -> bool:
        """Whether the API may be down: it answered 503, or gave no answer for load (a
        refused or cut connection, a timeout). A 429 is no outage: the API answered."""
        return self.status == 503 or (self.overload and not self.refused)

    def __str__(self) -> str:
        return self.reason


class Abandoned(TaskFailure):
    """A request ended by its own side: the attempt it belonged to is no longer waited for
    (its item timed out, or the run was interrupted). Nobody reports it as the attempt's
    outcome; it only tells the safeguards what became of the request."""

    def __init__(self, reason: str, *, sent: bool) -> None:
        # Cut mid-request, the API may have done the work: the budgets keep its worst case.
        super().__init__(reason, transient=True, overload=sent)
        self.sent = sent

    @property
    def outage(self) -> bool:
        return False  # ended here: it says nothing of the API


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter and a cap: the wait after failed attempt n."""

    delay: float  # seconds before the first retry
    factor: float
    max_delay: float
    jitter: float = 0.1  # up to this share added at random, so workers do not retry in step

    def wait(
        self,
        failed_attempts: int,
        retry_after: float | None = None,
        rng: random.Random | None = None,
    ) -> float:
        """Seconds to wait after `failed_attempts` attempts (1 after the first) have failed.

        `delay * factor**(n-1)` as in the original system, plus jitter, capped at
        `max_delay`; a `Retry-After` from the server is a floor that the cap does not lower.
        """
        base = self.delay * self.factor ** max(0, failed_attempts - 1)
        spread = (rng or random).uniform(0.0, self.jitter) * base
        wait = min(self.max_delay, base + spread)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait


FINAL = "roadmap_final"  # set on a failure that must not be retried (a run-wide budget)


def make_final(error: BaseException) -> None:
    """No retry for this failure, whatever it is (the run's retry budget is spent)."""
    setattr(error, FINAL, True)


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds from a Retry-After header, in either of its forms (RFC 9110 10.2.3):
    delta-seconds, or an HTTP date, counted from `now()`. None if absent or odd; at most
    an hour, so a confused server cannot park a run."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000": not an HTTP date, which is always GMT
            return None
        seconds = max(0.0, when.timestamp() - now())
    if seconds < 0 or seconds != seconds:
        return None
    return min(seconds, 3600.0)


def retry_after_of(
    headers: Mapping[str, str], now: Callable[[], float] = time.time
) -> float | None:
    """The wait an answer asks for: `Retry-After`, or where it is absent a gateway's copy
    of a provider's, under a prefix (a LiteLLM proxy sends `llm_provider-retry-after` and no
    `Retry-After`); None if none parses. `-retry-after-ms` and other units are not read."""
    lowered = {name.lower(): value for name, value in headers.items()}
    if "retry-after" in lowered:
        return parse_retry_after(lowered["retry-after"], now)
    for name in sorted(lowered):  # sorted: two prefixes give the same answer every time
        if name.endswith("-retry-after"):
            found = parse_retry_after(lowered[name], now)
            if found is not None:
                return found
    return None
