"""The controller's monitor: every health interval, adjust the concurrency limit and report;
and the points of the report's limit and rate charts."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from pytest_roadmap.gate import AdaptiveLimit
from pytest_roadmap.health import HEALTH_KEY, probed_down
from pytest_roadmap.pacing import REFUSED_KEY, Event, Pacer, describe
from pytest_roadmap.recorder import RunRecorder
from pytest_roadmap.results import (
    FAILED,
    PASSED,
    RERUN,
    ConcurrencyChange,
    PaceChange,
    Sample,
)
from pytest_roadmap.safeguards import GATE_KEY, REQUESTS_KEY
from pytest_roadmap.sequencing import CURRENT_BATCH_KEY
from pytest_roadmap.store.base import Store, StoreError, TicketLost

# CI shards sharing a run id share the concurrency limit, so they share its steering too:
# each monitor adds the attempts its controller saw to two counters in the store, and one
# of them, the leader (the holder of a one-slot gate, handed on when it ends or dies),
# decides from the run's totals. One decision per interval for the whole run, whatever the
# worker or shard count; with one shard this is the monitor's own count.
LEADER_KEY = "adaptive:leader"
ENDED_KEY = "adaptive:ended"
FAILED_KEY = "adaptive:failed"
# The learned pace changes on every worker's answers; the monitor shows its changes this
# often, between its status lines.
SAMPLE_EVERY = 0.25
# The charts' points: one at the start, one at every change of the pace, one every
# interval and one at the end. A point this close to the one before would make the rate
# between them a spike of noise (one request in a millisecond is 1000/s), so it is left
# out, or at the end takes that point's place.
MIN_SPAN = 0.1


class Monitor:
    """Looks at the attempts that ended in each interval and steers the shared limit.

    Runs in a daemon thread on the controller only, so there is one decision per interval
    for the whole run, whatever the worker count (and, through the store, the shard count).
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
        holder: str = "controller",
        pacer: Pacer | None = None,
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
        self._holder = holder  # names this controller's leader ticket in the store
        self._ticket: int | None = None
        self._leading = False
        self._seen = (0, 0)  # the run's (ended, failed) totals at the last decision
        self._pacer = pacer
        self._events_seen = 0
        self._events_lock = threading.Lock()
        # (time, requests sent) at each of the charts' points, as record.samples holds them.
        self._marks: list[tuple[float, int]] = []

    def start(self) -> None:
        if self._adaptive is not None:
            self.lead()  # a lone controller leads from the first interval on
        self.sample()  # the charts start where the run does
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        with contextlib.suppress(StoreError):
            self.show_pace_changes()  # the last ones, for the report
            self.sample(last=True)  # ... and the charts end where the run does
        if self._ticket is not None:  # the next shard's monitor takes over at once
            with contextlib.suppress(StoreError):
                self._store.gate_release(LEADER_KEY, self._ticket)
            self._ticket, self._leading = None, False

    def lead(self) -> bool:
        """Whether this monitor decides this interval; queues for the lead if it does not
        have it. A monitor that just took over decides from the next interval on."""
        lease = 3 * self._interval  # renewed every interval; expires if this one dies
        try:
            if self._ticket is None:
                self._ticket = self._store.gate_enqueue(LEADER_KEY, self._holder, lease)
            if self._leading:
                self._leading = self._store.gate_renew(LEADER_KEY, self._ticket, lease)
                if not self._leading:
                    self._ticket = None  # taken for dead: queue again next time
                return self._leading
            if self._store.gate_try_acquire(LEADER_KEY, self._ticket, lease):
                self._leading = True
                self._seen = self._totals()
        except TicketLost:
            self._ticket, self._leading = None, False
        return False

    def _totals(self) -> tuple[int, int]:
        return self._store.incr(ENDED_KEY, 0), self._store.incr(FAILED_KEY, 0)

    def _run(self) -> None:
        due = self._clock() + self._interval
        while not self._stop.wait(min(SAMPLE_EVERY, self._interval)):
            try:
                changed = self._pacer is not None and bool(self.show_pace_changes())
                if self._clock() >= due:
                    due += self._interval
                    self.tick()  # a point of the charts too
                elif changed:
                    self.sample()
            except Exception as exc:  # a monitoring hiccup must never take the run down
                self._write(f"roadmap: monitor skipped a tick: {type(exc).__name__}: {exc}")

    def show_pace_changes(self) -> list[Event]:
        """Print and record the learned pace's changes since the last look (every shard's)."""
        if self._pacer is None:
            return []
        with self._events_lock:
            self._events_seen, events = self._pacer.events_since(self._events_seen)
        record = self._recorder.record
        for event in events:
            if event.kind == "concurrency":
                change = ConcurrencyChange(event.at, int(event.old), int(event.new), event.reason)
                record.concurrency_changes.append(change)
            else:
                record.pace_changes.append(
                    PaceChange(event.at, event.kind, event.old, event.new, event.reason)
                )
                if event.kind == "stop":
                    record.stopped = event.reason
            self._write(describe(event, self._pacer.ceiling))
        return events

    def sample(self, last: bool = False) -> Sample | None:
        """One point of the report's charts, now; `last`: the run's end, which is always
        kept. Returns it, or None when it came too soon after the one before."""
        limit = self._store.gate_limit(GATE_KEY)
        running, _waiting = self._store.gate_state(GATE_KEY)
        healthy = not probed_down(self._store.get(HEALTH_KEY))
        requests = self._store.incr(REQUESTS_KEY, 0)
        return self._point(self._clock(), limit, requests, running, healthy, last)

    def _point(
        self, now: float, limit: int, requests: int, running: int, healthy: bool, last: bool
    ) -> Sample | None:
        """Add a point: the limit in force, the request rate since the point before."""
        samples = self._recorder.record.samples
        if self._marks and now - self._marks[-1][0] < MIN_SPAN:
            if not last:
                return None
            if len(self._marks) > 1:  # the end takes the place of the point just before it
                self._marks.pop()
                samples.pop()
        rate = 0.0  # the first point closes no span
        if self._marks:
            at, sent = self._marks[-1]
            rate = (requests - sent) / max(now - at, 1e-3)
        self._marks.append((now, requests))
        sample = Sample(now, limit, rate, running, healthy)
        samples.append(sample)
        return sample

    def tick(self) -> None:
        """One look: adjust the limit if the failure rate says so, then one status line."""
        now = self._clock()
        ended = self._recorder.take_ended()
        # An answer that failed its checks is the model's failure, not the API's.
        failed = sum(
            1
            for a in ended
            if a.outcome in (FAILED, RERUN) and (a.checks is None or a.checks.passed)
        )
        record = self._recorder.record
        if self._adaptive is not None:
            self._store.incr(ENDED_KEY, len(ended))
            self._store.incr(FAILED_KEY, failed)
        limit = self._store.gate_limit(GATE_KEY)
        if self._adaptive is not None and self.lead():
            totals = self._totals()
            run_ended, run_failed = totals[0] - self._seen[0], totals[1] - self._seen[1]
            self._seen = totals
            # Another shard's monitor may have moved it (within its own worker count).
            self._adaptive.value = max(1, min(limit, self._adaptive.maximum))
            change = self._adaptive.observe(run_ended, run_failed)
            if change is not None:
                self._store.gate_set_limit(GATE_KEY, change.new)
                record.concurrency_changes.append(
                    ConcurrencyChange(now, change.old, change.new, change.reason)
                )
                self._write(f"roadmap: concurrency {change.old} -> {change.new}: {change.reason}")
                limit = change.new
        requests = self._store.incr(REQUESTS_KEY, 0)
        rate = (requests - self._last_requests) / max(1e-6, now - self._last_at)
        healthy = not probed_down(self._store.get(HEALTH_KEY))
        if not healthy:
            record.unhealthy_s += now - self._last_at
        self._last_at, self._last_requests = now, requests
        running, _waiting = self._store.gate_state(GATE_KEY)
        counts = self._recorder.counts()
        done = sum(counts.values())
        queued = max(0, self._expected() - done - running)
        ran = counts[PASSED] + counts[FAILED]
        success = f"{100.0 * counts[PASSED] / ran:.0f}%" if ran else "-"
        self._point(now, limit, requests, running, healthy, last=False)
        batch = self._store.get(CURRENT_BATCH_KEY)
        pace = ""
        if self._pacer is not None:
            learned = self._pacer.read()
            store_now = self._store.clock()
            allowed = learned.rate(self._pacer.ceiling, store_now)
            refused = self._store.incr(REFUSED_KEY, 0)
            pace = f" (rate {allowed:.3g}/s of {self._pacer.ceiling:g}/s"
            pace += (
                f", paused {learned.until - store_now:.1f} s" if learned.until > store_now else ""
            )
            pace += f", {refused} refused)"
        self._write(
            f"roadmap: running {running}, queued {queued}, completed {counts[PASSED]}, "
            f"failed {counts[FAILED]}, success {success}, limit {limit}, "
            f"{rate:.1f} req/s{pace}, health {'ok' if healthy else 'DOWN'}"
            + (f", batch {batch!r}" if batch else "")
        )
