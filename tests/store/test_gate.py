"""Concurrency slots across threads and processes, and the adaptive limit rule."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event

import pytest

from pytest_roadmap.gate import AdaptiveLimit, Change, ConcurrencyGate, GateTimeout, Slot
from pytest_roadmap.monitor import Monitor
from pytest_roadmap.recorder import RunRecorder
from pytest_roadmap.results import RunRecord
from pytest_roadmap.safeguards import GATE_KEY, REQUESTS_KEY
from pytest_roadmap.store import Store, open_store
from pytest_roadmap.tasks import Task
from pytest_roadmap.wire import AttemptEnded
from tests.support.stores import spawn, wait_past
from tests.support.waiting import PATIENCE, wait_for


class Waiter:
    """A thread that acquires a slot of `gate` and signals when it has one."""

    def __init__(self, gate: ConcurrencyGate, timeout: float = PATIENCE) -> None:
        self.gate = gate
        self.acquired = threading.Event()
        self.slot: Slot | None = None
        self.error: BaseException | None = None
        self.at = 0.0
        self._thread = threading.Thread(target=self._run, args=(timeout,), daemon=True)
        self._thread.start()

    def _run(self, timeout: float) -> None:
        try:
            self.slot = self.gate.acquire(timeout)
            self.at = time.time()
            self.acquired.set()
        except BaseException as exc:
            self.error = exc

    def join(self) -> Slot:
        assert self.acquired.wait(PATIENCE), self.error
        assert self.slot is not None
        return self.slot


def state_is(gate: ConcurrencyGate, holding: int, waiting: int) -> Callable[[], bool]:
    """A condition for `wait_for`: the gate has this many holders and waiters."""
    return lambda: gate.state() == (holding, waiting)


# -- one process -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lease", "poll"), [(0.0, 0.01), (-1.0, 0.01), (1.0, 0.0), (1.0, 1.0), (1.0, 2.0)]
)
def test_rejects_bad_timings(store: Store, lease: float, poll: float) -> None:
    with pytest.raises(ValueError):
        ConcurrencyGate(store, "gw0", lease=lease, poll=poll)


def test_slot_release_is_idempotent_and_a_context_manager(store: Store) -> None:
    with ConcurrencyGate(store, "gw0") as gate:
        with gate.acquire() as slot:
            assert slot.held
            assert gate.state() == (1, 0)
        assert not slot.held and not slot.lost
        slot.release()
        assert gate.state() == (0, 0)


def test_timeout_leaves_no_ticket_behind(store: Store) -> None:
    with ConcurrencyGate(store, "gw0") as gate, ConcurrencyGate(store, "gw1") as other:
        slot = gate.acquire()
        with pytest.raises(GateTimeout, match="gate"):
            other.acquire(timeout=0.1)
        assert gate.state() == (1, 0)
        slot.release()
        other.acquire(timeout=0).release()


def test_fifo_across_threads(store: Store) -> None:
    order: list[int] = []
    with ConcurrencyGate(store, "gw0", poll=0.002) as gate:
        first = gate.acquire()

        def take_turn(index: int) -> None:
            with gate.acquire(PATIENCE):
                order.append(index)

        threads = []
        for index in range(5):
            thread = threading.Thread(target=take_turn, args=(index,))
            thread.start()
            threads.append(thread)
            # Start the next thread only once this one is queued, to fix the order. A
            # process queues its threads itself, behind one ticket in the store.
            wait_for(lambda queued=index + 1: gate.queued == queued)
            # The first thread enters the line before its ticket reaches the store.
            wait_for(state_is(gate, 1, 1))
        first.release()
        for thread in threads:
            thread.join(PATIENCE)
    assert order == [0, 1, 2, 3, 4]


def test_raised_limit_lets_a_waiter_in(store: Store) -> None:
    with ConcurrencyGate(store, "gw0") as gate:
        assert gate.limit == 1
        held = gate.acquire()
        waiter = Waiter(gate)
        wait_for(state_is(gate, 1, 1))
        gate.set_limit(2)
        assert gate.limit == 2
        second = waiter.join()
        assert gate.state() == (2, 0)
        # Lowered below the holders: both keep their slots, a newcomer waits.
        gate.set_limit(1)
        held.release()
        with pytest.raises(GateTimeout):
            gate.acquire(timeout=0.1)
        second.release()
        gate.acquire(timeout=0).release()


def test_heartbeat_keeps_a_long_holder_alive(store: Store) -> None:
    with ConcurrencyGate(store, "gw0", lease=0.3) as gate:
        slot = gate.acquire()
        acquired = store.clock()
        wait_past(store, acquired + 4 * gate.lease)
        assert slot.held and not slot.lost
        assert gate.state() == (1, 0)
        with ConcurrencyGate(store, "gw1") as other, pytest.raises(GateTimeout):
            other.acquire(timeout=0)
        slot.release()
        assert gate.state() == (0, 0)


def test_reclaim_frees_a_holder_at_once(store: Store) -> None:
    # A lease long enough that only the reclaim can explain a quick hand-over.
    with ConcurrencyGate(store, "gw1", lease=3.0) as doomed, ConcurrencyGate(store, "gw2") as gate:
        slot = doomed.acquire()
        waiter = Waiter(gate)
        wait_for(state_is(gate, 1, 1))
        reclaimed_at = time.time()
        assert gate.reclaim("gw1") == 1
        waiter.join().release()
        assert waiter.at - reclaimed_at < 1.0
        # The holder's heartbeat notices within a beat; releasing it is then harmless.
        wait_for(lambda: slot.lost)
        assert not slot.held
        slot.release()


def test_reclaimed_waiter_queues_again(store: Store) -> None:
    with ConcurrencyGate(store, "gw0") as holder, ConcurrencyGate(store, "gw1") as gate:
        held = holder.acquire()
        waiter = Waiter(gate)
        wait_for(state_is(gate, 1, 1))
        assert gate.reclaim("gw1") == 1
        wait_for(state_is(gate, 1, 1))
        held.release()
        waiter.join().release()


def test_close_releases_held_slots(store: Store) -> None:
    gate = ConcurrencyGate(store, "gw0")
    slot = gate.acquire()
    gate.close()
    assert not slot.held
    assert gate.state() == (0, 0)
    with pytest.raises(RuntimeError, match="closed"):
        gate.acquire()


# -- several processes -------------------------------------------------------------------


def _hold_in_turns(url: str, holder: str, go: Event, peaks: Queue[tuple[str, int]]) -> None:
    """Take a slot ten times, counting holders through the store while inside."""
    with open_store(url) as shared, ConcurrencyGate(shared, holder, poll=0.002) as gate:
        go.wait(PATIENCE)
        peak = 0
        for _ in range(10):
            with gate.acquire(PATIENCE):
                peak = max(peak, shared.incr("inside"))
                time.sleep(0.02)  # the task's work, done while holding the slot
                shared.incr("inside", -1)
    peaks.put((holder, peak))


def test_limit_holds_across_processes(store: Store) -> None:
    store.gate_set_limit("gate", 2)
    go = spawn.Event()
    peaks: Queue[tuple[str, int]] = spawn.Queue()
    procs = [
        spawn.Process(target=_hold_in_turns, args=(store.url, f"gw{index}", go, peaks))
        for index in range(4)
    ]
    for proc in procs:
        proc.start()
    go.set()
    results = dict(peaks.get(timeout=PATIENCE) for _ in procs)
    for proc in procs:
        proc.join(PATIENCE)
        assert proc.exitcode == 0
    assert sorted(results) == ["gw0", "gw1", "gw2", "gw3"]
    assert max(results.values()) == 2
    assert store.gate_state("gate") == (0, 0)


def _hold_until_killed(url: str, lease: float, held: Queue[int]) -> None:
    shared = open_store(url)
    gate = ConcurrencyGate(shared, "gw9", lease=lease)
    held.put(gate.acquire(PATIENCE).ticket)
    threading.Event().wait()  # hold the slot until the parent kills this process


@pytest.mark.slow
def test_killed_holder_loses_its_slot_at_lease_expiry(store: Store) -> None:
    lease = 1.0
    held: Queue[int] = spawn.Queue()
    child = spawn.Process(target=_hold_until_killed, args=(store.url, lease, held), daemon=True)
    child.start()
    try:
        held.get(timeout=PATIENCE)
        acquired = store.clock()
        with ConcurrencyGate(store, "gw0", lease=lease) as gate:
            waiter = Waiter(gate)
            # Alive, the child keeps its slot past its lease thanks to the heartbeat.
            wait_past(store, acquired + 1.5 * lease)
            assert not waiter.acquired.is_set()
            child.kill()
            killed = time.time()
            child.join(PATIENCE)
            waiter.join().release()
        # At the latest one lease after the last renewal, which came before the kill.
        assert waiter.at - killed <= lease + 0.5
    finally:
        if child.is_alive():
            child.kill()


# -- the adaptive limit ------------------------------------------------------------------


def test_adaptive_limit_starts_at_the_maximum_unless_told() -> None:
    assert AdaptiveLimit(4).value == 4
    assert AdaptiveLimit(4, start=2).value == 2


@pytest.mark.parametrize(("maximum", "start"), [(0, None), (4, 0), (4, 5)])
def test_adaptive_limit_rejects_bad_bounds(maximum: int, start: int | None) -> None:
    with pytest.raises(ValueError):
        AdaptiveLimit(maximum, start)


@pytest.mark.parametrize(("ended", "failed"), [(5, 6), (5, -1), (-1, 0)])
def test_adaptive_limit_rejects_impossible_counts(ended: int, failed: int) -> None:
    with pytest.raises(ValueError):
        AdaptiveLimit(4).observe(ended, failed)


def test_adaptive_limit_steps_down_above_ten_percent() -> None:
    limit = AdaptiveLimit(4)
    assert limit.observe(25, 3) == Change(4, 3, "12% of 25 attempts failed in the last 5 s (> 10%)")
    assert limit.value == 3


def test_adaptive_limit_never_goes_below_one() -> None:
    limit = AdaptiveLimit(4, start=1)
    assert limit.observe(10, 10) is None
    assert limit.value == 1


def test_adaptive_limit_steps_up_below_five_percent() -> None:
    limit = AdaptiveLimit(4, start=2)
    assert limit.observe(50, 1) == Change(2, 3, "2% of 50 attempts failed in the last 5 s (< 5%)")
    assert limit.observe(1, 0) == Change(3, 4, "0% of 1 attempt failed in the last 5 s (< 5%)")
    assert limit.value == 4


def test_adaptive_limit_never_goes_above_the_maximum() -> None:
    limit = AdaptiveLimit(4)
    assert limit.observe(100, 0) is None
    assert limit.value == 4


@pytest.mark.parametrize(("ended", "failed"), [(20, 1), (14, 1), (10, 1)])
def test_adaptive_limit_holds_from_five_to_ten_percent(ended: int, failed: int) -> None:
    limit = AdaptiveLimit(4, start=2)
    assert limit.observe(ended, failed) is None
    assert limit.value == 2


def test_adaptive_limit_holds_when_nothing_ended() -> None:
    limit = AdaptiveLimit(4, start=2)
    assert limit.observe(0, 0) is None
    assert limit.value == 2


def test_adaptive_limit_reason_keeps_a_decimal_when_it_matters() -> None:
    change = AdaptiveLimit(4, interval=2.5).observe(19, 2)
    assert change is not None
    assert change.reason == "10.5% of 19 attempts failed in the last 2.5 s (> 10%)"


def test_change_is_frozen() -> None:
    change = Change(2, 3, "why")
    with pytest.raises(dataclasses.FrozenInstanceError):
        change.new = 4  # type: ignore[misc]


# -- the monitors of CI shards sharing one run ------------------------------------------


def shard_monitor(store: Store, name: str, workers: int = 4) -> tuple[Monitor, RunRecorder]:
    """A controller's monitor and recorder, as one shard of a run sharing `store` has."""
    recorder = RunRecorder(
        RunRecord(
            api="http://a",
            sandbox=False,
            model="m",
            workers=workers,
            rate_limit=10.0,
            started=time.time(),
        )
    )
    monitor = Monitor(
        store=store,
        recorder=recorder,
        interval=60.0,  # ticked by hand below; the lease on the lead is 3 intervals
        adaptive=AdaptiveLimit(workers, interval=60.0),
        expected=lambda: 0,
        write=lambda line: None,
        holder=f"{name}:monitor",
    )
    return monitor, recorder


def attempts(recorder: RunRecorder, shard: str, passed: int, failed: int) -> None:
    ended = AttemptEnded(task=Task(id="t", title="T", prompt="p", month=1, week=1), attempt=1)
    for n in range(passed + failed):
        outcome = "rerun" if n < failed else "passed"
        recorder.attempt(f"{shard}::t{n}", ended, outcome)


def test_shards_steer_one_limit_one_step_per_interval(store: Store) -> None:
    store.gate_set_limit(GATE_KEY, 4)
    first, first_seen = shard_monitor(store, "a")
    second, second_seen = shard_monitor(store, "b")
    assert first.lead() is False and second.lead() is False  # a takes the lead, b queues
    # Both shards see overload: the run's limit goes down by one, not by one per shard.
    # (Each tick adds that shard's counts; a follower's counts that come in after the
    # leader's tick count in the leader's next interval.)
    attempts(first_seen, "a", passed=2, failed=2)
    attempts(second_seen, "b", passed=2, failed=2)
    second.tick()
    first.tick()
    assert store.gate_limit(GATE_KEY) == 3
    # Only b saw a failure this time: 1 of the run's 10 attempts, 10%, so no change,
    # though b alone saw 100%.
    attempts(first_seen, "a", passed=9, failed=0)
    attempts(second_seen, "b", passed=0, failed=1)
    second.tick()
    first.tick()
    assert store.gate_limit(GATE_KEY) == 3
    # ... and when the leader ends, b takes over and goes on from the run's limit.
    first.stop()
    assert second.lead() is False  # took over; decides from the next interval
    attempts(second_seen, "b", passed=0, failed=3)
    second.tick()
    assert store.gate_limit(GATE_KEY) == 2
    changes = first_seen.record.concurrency_changes + second_seen.record.concurrency_changes
    assert [(c.old, c.new) for c in changes] == [(4, 3), (3, 2)]
    second.stop()


# -- the points of report.html's limit and rate charts --------------------------------------


def charted_monitor(store: Store, clock: Callable[[], float]) -> tuple[Monitor, RunRecorder]:
    """A lone controller's monitor whose interval never comes in the test: only the points
    the run's start, its end and the test itself ask for."""
    recorder = RunRecorder(
        RunRecord(api="http://a", sandbox=False, model="m", workers=2, rate_limit=10.0, started=0)
    )
    store.gate_set_limit(GATE_KEY, 2)
    monitor = Monitor(
        store=store,
        recorder=recorder,
        interval=3600.0,
        adaptive=None,
        expected=lambda: 0,
        write=lambda line: None,
        clock=clock,
    )
    return monitor, recorder


def test_a_run_shorter_than_the_interval_has_a_point_at_its_start_and_its_end(
    store: Store,
) -> None:
    now = [1000.0]
    monitor, recorder = charted_monitor(store, lambda: now[0])
    monitor.start()
    store.incr(REQUESTS_KEY, 6)
    now[0] = 1002.0
    monitor.stop()
    points = [(s.at, s.limit, s.requests_per_s) for s in recorder.record.samples]
    assert points == [(1000.0, 2, 0.0), (1002.0, 2, 3.0)]  # 6 requests in 2 s


def test_a_point_too_close_to_the_last_is_left_out_and_the_end_takes_its_place(
    store: Store,
) -> None:
    now = [1000.0]
    monitor, recorder = charted_monitor(store, lambda: now[0])
    monitor.start()
    store.incr(REQUESTS_KEY, 2)
    now[0] = 1001.0
    assert monitor.sample() is not None  # a change of the pace, a second in
    now[0] = 1001.05
    assert monitor.sample() is None  # 50 ms later: a rate over it would be noise
    store.incr(REQUESTS_KEY, 3)
    now[0] = 1001.08
    monitor.stop()  # the end, 80 ms after the last point, takes that point's place
    points = [(s.at, s.requests_per_s) for s in recorder.record.samples]
    assert points == [(1000.0, 0.0), (1001.08, pytest.approx(5 / 1.08))]
