"""The shared rate limiter, alone and saturated by several processes at once."""

from __future__ import annotations

import time
from collections import Counter
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from pytest_roadmap.ratelimit import MARGIN, RateLimiter
from pytest_roadmap.store import Store, open_store
from tests.support.redis_server import private_server, run_url
from tests.support.stores import spawn
from tests.support.waiting import PATIENCE, wait_for

RATE = 20.0
PROCS = 4
BUSY = 3.5


@pytest.mark.parametrize(
    ("rate", "burst", "margin", "message"),
    [
        (0, 1, 0.01, "rate"),
        (-5, 1, 0.01, "rate"),
        (float("inf"), 1, 0.01, "rate"),
        (float("nan"), 1, 0.01, "rate"),
        (10, 0, 0.01, "burst"),
        (10, 1, -0.1, "margin"),
        (10, 1, 1.0, "margin"),
    ],
)
def test_rejects_bad_settings(
    store: Store,
    rate: float,
    burst: int,
    margin: float,
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        RateLimiter(store, rate, burst, margin=margin)


def test_interval_carries_the_safety_margin(store: Store) -> None:
    assert RateLimiter(store, 20).interval == pytest.approx((1 + MARGIN) / 20)
    assert RateLimiter(store, 20, margin=0).interval == pytest.approx(1 / 20)


def test_acquire_sleeps_for_the_reserved_delay(store: Store) -> None:
    slept: list[float] = []
    limiter = RateLimiter(store, 10, sleep=slept.append)
    assert limiter.acquire() == 0.0
    assert slept == []
    waited = limiter.acquire()
    assert waited == pytest.approx(0.101, abs=0.01)
    assert slept == [waited]


def test_late_wake_up_moves_the_schedule_back(store: Store) -> None:
    def oversleep(seconds: float) -> None:
        time.sleep(seconds + 0.05)  # a starved CPU wakes this process late

    limiter = RateLimiter(store, 10, sleep=oversleep)
    limiter.acquire()
    assert limiter.acquire() == pytest.approx(0.1, abs=0.01)
    # The next slot counts from the late send, not from where that send should have gone.
    assert store.reserve("rate", limiter.interval, 1) - store.clock() > 0.08


def test_burst_lets_the_first_requests_straight_through(store: Store) -> None:
    slept: list[float] = []
    limiter = RateLimiter(store, 10, burst=3, sleep=slept.append)
    assert [limiter.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire() > 0.09
    assert len(slept) == 1


def test_limiters_on_different_keys_do_not_share(store: Store) -> None:
    slept: list[float] = []
    one = RateLimiter(store, 1, key="one", sleep=slept.append)
    two = RateLimiter(store, 1, key="two", sleep=slept.append)
    assert one.acquire() == 0.0
    assert two.acquire() == 0.0
    assert slept == []


def _saturate(
    url: str,
    ready: Queue[str],
    go: Event,
    admits: Queue[list[float]],
    busy: float = BUSY,
    count: Synchronized[int] | None = None,
) -> None:
    """Acquire as fast as the limiter allows for `busy` seconds; report the admit times."""
    with open_store(url) as shared:
        limiter = RateLimiter(shared, RATE)
        ready.put("ready")
        go.wait(PATIENCE)
        times: list[float] = []
        end = time.time() + busy
        while time.time() < end:
            limiter.acquire()
            times.append(time.time())
            if count is not None:
                with count.get_lock():
                    count.value += 1
    admits.put(times)


def max_in_window(times: list[float], window: float) -> int:
    """The most admits in any closed window of `window` seconds."""
    ordered = sorted(times)
    most, start = 0, 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] > window:
            start += 1
        most = max(most, end - start + 1)
    return most


def test_max_in_window() -> None:
    assert max_in_window([], 1.0) == 0
    assert max_in_window([0.0, 0.5, 1.0, 1.5], 1.0) == 3
    assert max_in_window([0.0, 0.5, 1.01, 2.5], 1.0) == 2


@pytest.mark.slow
def test_processes_share_one_rate(store: Store) -> None:
    ready: Queue[str] = spawn.Queue()
    admits: Queue[list[float]] = spawn.Queue()
    go = spawn.Event()
    procs = [
        spawn.Process(target=_saturate, args=(store.url, ready, go, admits)) for _ in range(PROCS)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=PATIENCE)
    go.set()
    per_process = [admits.get(timeout=PATIENCE) for _ in procs]
    for proc in procs:
        proc.join(PATIENCE)
        assert proc.exitcode == 0

    times = sorted(moment for share in per_process for moment in share)
    achieved = (len(times) - 1) / (times[-1] - times[0])
    assert max_in_window(times, 1.0) <= RATE
    assert achieved >= 0.97 * RATE
    mean = len(times) / PROCS
    counts = Counter({index: len(share) for index, share in enumerate(per_process)})
    for count in counts.values():
        assert abs(count - mean) <= 0.2 * mean, counts


@pytest.mark.slow
@pytest.mark.redis
def test_redis_restart_mid_run_never_lets_requests_through_unlimited(tmp_path: Path) -> None:
    server = private_server(tmp_path)
    try:
        # A short recovery pause keeps the test short; it still outlasts every send
        # handed out before the restart (PROCS intervals ahead at most).
        url = run_url(server.url, recovery=1)
        open_store(url, create=True).close()
        ready: Queue[str] = spawn.Queue()
        admits: Queue[list[float]] = spawn.Queue()
        go = spawn.Event()
        count: Synchronized[int] = spawn.Value("i", 0)
        procs = [
            spawn.Process(target=_saturate, args=(url, ready, go, admits, 4.0, count))
            for _ in range(PROCS)
        ]
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.get(timeout=PATIENCE)
        go.set()
        wait_for(lambda: count.value >= RATE)  # about a second into the run
        stopped = time.time()
        server.restart()  # an empty Redis: every schedule, ticket and value is gone
        back = time.time()
        per_process = [admits.get(timeout=PATIENCE) for _ in procs]
        for proc in procs:
            proc.join(PATIENCE)
            assert proc.exitcode == 0
    finally:
        server.stop()

    times = sorted(moment for share in per_process for moment in share)
    assert max_in_window(times, 1.0) <= RATE
    # The run went on after the restart, in every process.
    assert all(share and share[-1] > back for share in per_process)
    assert sum(1 for moment in times if moment < stopped) >= RATE
