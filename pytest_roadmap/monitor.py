"""The controller's monitor: every health interval, adjust the concurrency limit and report."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pytest_roadmap.gate import AdaptiveLimit
from pytest_roadmap.health import HEALTH_KEY, OK
from pytest_roadmap.recorder import RunRecorder
from pytest_roadmap.results import FAILED, PASSED, RERUN, ConcurrencyChange, Sample
from pytest_roadmap.safeguards import GATE_KEY, REQUESTS_KEY
from pytest_roadmap.sequencing import CURRENT_BATCH_KEY
from pytest_roadmap.store.base import Store


class Monitor:
    """Looks at the attempts that ended in each interval and steers the shared limit.

    Runs in a daemon thread on the controller only, so there is one decision per interval
    for the whole run, whatever the worker count.
    """

    def __init__(
        self,
        *,
        store: Store,
        recorder: RunRecorder,
        interval: float,
        adaptive: AdaptiveLimit | None,
        expected: Callable[[], int],
        write: Callable[[str], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._recorder = recorder
        self._interval = interval
        self._adaptive = adaptive
        self._expected = expected
        self._write = write
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="roadmap-monitor", daemon=True)
        self._last_at = clock()
        self._last_requests = store.incr(REQUESTS_KEY, 0)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.tick()
            except Exception as exc:  # a monitoring hiccup must never take the run down
                self._write(f"roadmap: monitor skipped a tick: {type(exc).__name__}: {exc}")

    def tick(self) -> Sample:
        """One look: adjust the limit if the failure rate says so, then one status line."""
        now = self._clock()
        ended = self._recorder.take_ended()
        failed = sum(1 for a in ended if a.outcome in (FAILED, RERUN))
        record = self._recorder.record
        limit = self._store.gate_limit(GATE_KEY)
        if self._adaptive is not None:
            change = self._adaptive.observe(len(ended), failed)
            if change is not None:
                self._store.gate_set_limit(GATE_KEY, change.new)
                record.concurrency_changes.append(
                    ConcurrencyChange(now, change.old, change.new, change.reason)
                )
                self._write(f"roadmap: concurrency {change.old} -> {change.new}: {change.reason}")
                limit = change.new
        requests = self._store.incr(REQUESTS_KEY, 0)
        rate = (requests - self._last_requests) / max(1e-6, now - self._last_at)
        healthy = (self._store.get(HEALTH_KEY) or OK) == OK
        if not healthy:
            record.unhealthy_s += now - self._last_at
        self._last_at, self._last_requests = now, requests
        running, _waiting = self._store.gate_state(GATE_KEY)
        counts = self._recorder.counts()
        done = sum(counts.values())
        queued = max(0, self._expected() - done - running)
        ran = counts[PASSED] + counts[FAILED]
        success = f"{100.0 * counts[PASSED] / ran:.0f}%" if ran else "-"
        sample = Sample(now, limit, rate, running, healthy)
        record.samples.append(sample)
        batch = self._store.get(CURRENT_BATCH_KEY)
        self._write(
            f"roadmap: running {running}, queued {queued}, completed {counts[PASSED]}, "
            f"failed {counts[FAILED]}, success {success}, limit {limit}, "
            f"{rate:.1f} req/s, health {'ok' if healthy else 'DOWN'}"
            + (f", batch {batch!r}" if batch else "")
        )
        return sample
