"""A batch file's `monitoring` alerts: a warning when the failure rate or the queue passes
its threshold.

Checked by the controller as tasks start and end, so an alert comes when the threshold is
passed rather than at the next monitoring tick. Each alert fires once when its value goes
above the threshold, and again only after the value has come back to it or below.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pytest_roadmap.batches import MonitoringRules
from pytest_roadmap.results import FAILED, PASSED, Alert

FAILURE_RATE, QUEUE_SIZE = "failure_rate", "queue_size"


class RunAlerts:
    """The alert thresholds of one run, and the counts they are judged on."""

    def __init__(
        self, rules: MonitoringRules, source: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._rules = rules
        self._source = source
        self._clock = clock
        self._passed = 0
        self._failed = 0
        self._above: set[str] = set()

    def task_ended(self, outcome: str) -> Alert | None:
        """A task's final outcome; an alert if the failure rate just went above its limit.

        The rate is failed / (passed + failed) over the tasks ended so far."""
        if outcome == PASSED:
            self._passed += 1
        elif outcome == FAILED:
            self._failed += 1
        else:
            return None
        limit = self._rules.alert_on_failure_rate
        if limit is None:
            return None
        ended = self._passed + self._failed
        rate = self._failed / ended
        return self._judge(
            FAILURE_RATE,
            rate > limit,
            f"failure rate {rate:.0%} ({self._failed} of {ended} tasks failed) is above "
            f"alertOnFailureRate {limit:g}",
        )

    def queue(self, queued: int) -> Alert | None:
        """The number of tasks waiting to start; an alert if it just went above its limit."""
        limit = self._rules.alert_on_queue_size
        if limit is None:
            return None
        return self._judge(
            QUEUE_SIZE,
            queued > limit,
            f"{queued} tasks queued, above alertOnQueueSize {limit}",
        )

    def _judge(self, kind: str, above: bool, words: str) -> Alert | None:
        if not above:
            self._above.discard(kind)
            return None
        if kind in self._above:
            return None
        self._above.add(kind)
        return Alert(self._clock(), kind, f"roadmap: ALERT: {words} ({self._source})")
