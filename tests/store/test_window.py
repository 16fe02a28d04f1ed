"""The sliding-window log (`Store.window_reserve`, `window_settle`) over each store.

Most tests use a long window and read the send times the store hands out, without
sleeping: the rule is about those times. The bound is checked on them directly: for every
entry's time t, the entries in (t - window, t] hold at most the limit.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event

import pytest

from pytest_roadmap.store import Store, open_store
from pytest_roadmap.store.base import window_fits, window_place
from tests.support.stores import spawn, wait_past

PATIENCE = 60.0  # safety net for threads and processes; each ends long before
EPS = 1e-6


def most_in_a_window(placed: list[tuple[float, int]], window: float) -> int:
    """The most that any window (t - window, t] ending at an entry holds."""
    return max(
        sum(amount for at, amount in placed if end - window < at <= end) for end, _ in placed
    )


def test_a_full_windows_worth_goes_at_once(store: Store) -> None:
    now = store.clock()
    times = [store.window_reserve("w", amount, 30.0, 100)[1] for amount in (40, 40, 20)]
    assert all(now - 0.5 <= t <= store.clock() for t in times)
    # The next waits until the first leaves the window; the one after that, the second.
    assert store.window_reserve("w", 10, 30.0, 100)[1] == pytest.approx(times[0] + 30.0, abs=1e-6)
    assert store.window_reserve("w", 40, 30.0, 100)[1] == pytest.approx(times[1] + 30.0, abs=1e-6)


def test_the_next_goes_once_the_oldest_has_left(store: Store) -> None:
    first = store.window_reserve("w", 100, 0.3, 100)[1]
    wait_past(store, first + 0.3)
    before = store.clock()
    second = store.window_reserve("w", 100, 0.3, 100)[1]
    assert before <= second <= store.clock()


def test_entry_ids_are_distinct_and_keys_independent(store: Store) -> None:
    ids = [store.window_reserve("a", 10, 30.0, 100)[0] for _ in range(5)]
    assert len(set(ids)) == 5
    _, at = store.window_reserve("b", 100, 30.0, 100)  # another key: room of its own
    assert at <= store.clock()


def test_giving_back_lets_the_next_go_sooner(store: Store) -> None:
    entry, first = store.window_reserve("w", 80, 30.0, 100)
    assert store.window_settle("w", entry, 30)  # the answer used 30
    assert store.window_reserve("w", 50, 30.0, 100)[1] <= store.clock()
    # Settled to nothing (never sent): the whole reservation is free.
    entry, _ = store.window_reserve("w", 20, 30.0, 100)
    assert store.window_settle("w", entry, 0)
    assert store.window_reserve("w", 20, 30.0, 100)[1] <= store.clock()
    assert first <= store.clock()


def test_raising_an_entry_charges_the_placements_after_it(store: Store) -> None:
    entry, first = store.window_reserve("w", 30, 30.0, 100)
    assert store.window_settle("w", entry, 90)  # the answer used more than reserved
    assert store.window_reserve("w", 50, 30.0, 100)[1] == pytest.approx(first + 30.0, abs=1e-6)


def test_an_amount_over_the_limit_goes_alone(store: Store) -> None:
    first = store.window_reserve("w", 30, 30.0, 100)[1]
    big = store.window_reserve("w", 150, 30.0, 100)[1]
    assert big == pytest.approx(first + 30.0, abs=1e-6)  # once the window is empty
    assert store.window_reserve("w", 1, 30.0, 100)[1] == pytest.approx(big + 30.0, abs=1e-6)


def test_settling_an_entry_that_is_gone_is_false(store: Store) -> None:
    assert not store.window_settle("w", 12345, 10)
    entry, at = store.window_reserve("w", 10, 0.2, 100)
    wait_past(store, at + 0.2)
    store.window_reserve("w", 10, 0.2, 100)  # drops the entries that left the window
    assert not store.window_settle("w", entry, 5)


def test_no_window_ever_holds_more_than_the_limit_and_each_goes_as_early_as_it_may(
    store: Store,
) -> None:
    rng = random.Random(24)
    window, limit = 40.0, 1000
    placed: list[tuple[float, int]] = []
    asked: list[float] = []
    for _ in range(120):
        amount = rng.choice([0, 1, 50, 120, 300, 480, 999])
        asked.append(store.clock())
        placed.append((store.window_reserve("w", amount, window, limit)[1], amount))
    times = [at for at, _ in placed]
    assert times == sorted(times)
    assert most_in_a_window(placed, window) <= limit
    # As early as it may: a send later than both the one before it and the moment it
    # was asked for (a clock apart by a little) waited for an entry to leave, and just
    # before that it would not have fit.
    for i in range(1, len(placed)):
        at, amount = placed[i]
        if at > max(placed[i - 1][0], asked[i] + 0.05):
            assert any(math.isclose(at, t + window, abs_tol=EPS) for t, _ in placed[:i])
            held = sum(a for t, a in placed[:i] if at - EPS - window < t <= at - EPS)
            assert held + amount > limit


def test_the_placement_rule_on_its_own() -> None:
    assert window_place(10.0, [], 5, 60.0, 100) == 10.0
    entries = [(0.0, 60), (5.0, 30), (20.0, 10)]
    assert window_place(10.0, entries, 0, 60.0, 100) == 20.0  # fits: after the last
    assert window_place(10.0, entries, 10, 60.0, 100) == 60.0  # once the first leaves
    assert window_place(70.0, entries, 10, 60.0, 100) == 70.0  # it has left by now
    assert window_place(10.0, entries, 70, 60.0, 100) == 65.0  # once two have left
    assert window_place(10.0, entries, 101, 60.0, 100) == 80.0  # once all have left


def _reserve_in_thread(store: Store, amounts: list[int], out: list[tuple[float, int]]) -> None:
    for amount in amounts:
        out.append((store.window_reserve("w", amount, 50.0, 500)[1], amount))


def test_threads_reserving_at_once_never_pass_the_limit(store: Store) -> None:
    rng = random.Random(7)
    results: list[list[tuple[float, int]]] = [[] for _ in range(6)]
    threads = [
        threading.Thread(
            target=_reserve_in_thread,
            args=(store, [rng.randint(1, 200) for _ in range(25)], results[i]),
        )
        for i in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(PATIENCE)
    placed = sorted(entry for result in results for entry in result)
    assert len(placed) == 150
    assert most_in_a_window(placed, 50.0) <= 500


def _reserve_in_process(
    url: str, seed: int, go: Event, done: Queue[list[tuple[float, int]]]
) -> None:
    rng = random.Random(seed)
    with open_store(url) as store:
        go.wait(PATIENCE)
        out: list[tuple[float, int]] = []
        _reserve_in_thread(store, [rng.randint(1, 200) for _ in range(25)], out)
    done.put(out)


@pytest.mark.slow
def test_processes_reserving_at_once_never_pass_the_limit(store: Store) -> None:
    url = store.url
    go = spawn.Event()
    done: Queue[list[tuple[float, int]]] = spawn.Queue()
    procs = [
        spawn.Process(target=_reserve_in_process, args=(url, seed, go, done)) for seed in range(4)
    ]
    for proc in procs:
        proc.start()
    go.set()
    placed = sorted(entry for _ in procs for entry in done.get(timeout=PATIENCE))
    for proc in procs:
        proc.join(PATIENCE)
        assert proc.exitcode == 0
    assert len(placed) == 100
    assert most_in_a_window(placed, 50.0) <= 500


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.window_reserve("w", -1, 60.0, 100), r"amount of 'w' must be"),
        (lambda s: s.window_reserve("w", 1.5, 60.0, 100), r"amount of 'w' must be an integer"),
        (lambda s: s.window_reserve("w", 1, 0.0, 100), r"window of 'w' must be"),
        (lambda s: s.window_reserve("w", 1, math.inf, 100), r"window of 'w' must be"),
        (lambda s: s.window_reserve("w", 1, 60.0, 0), r"limit of 'w' must be"),
        (lambda s: s.window_reserve("w", 1, 60.0, math.nan), r"limit of 'w' must be"),
        (lambda s: s.window_settle("w", 1, -5), r"amount of 'w' must be"),
        (lambda s: s.window_settle("w", 1.0, 5), r"entry of 'w' must be an integer"),
    ],
)
def test_bad_arguments_are_one_clear_error(
    store: Store, call: Callable[[Store], object], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        call(store)
    assert "\n" not in str(caught.value)
    with pytest.raises(TypeError, match="key must be a string"):
        store.window_reserve(1, 1, 60.0, 100)  # type: ignore[arg-type]


@pytest.mark.redis
def test_redis_lost_log_waits_for_the_window_before_the_loss(redis_url: str) -> None:
    from pytest_roadmap.store.redis import RedisStore
    from tests.store.test_store import wipe
    from tests.support.redis_server import run_url

    with RedisStore.from_url(run_url(redis_url, recovery=0.5), create=True) as store:
        entry, _ = store.window_reserve("w", 10, 30.0, 100)
        late = store.window_reserve("w", 95, 30.0, 100)[1]  # waits for the first to leave
        wipe(store)
        lost = store.clock()
        # What went out before the loss is unknown: the next waits for a whole window,
        # and after every send time this process was given.
        fresh = store.window_reserve("w", 1, 30.0, 100)[1]
        assert fresh >= max(lost + 30.0, late + 30.0) - 0.05
        # Ids after the loss never meet earlier ones.
        assert store.window_reserve("w", 1, 30.0, 100)[0] > entry
        assert not store.window_settle("w", entry, 0)


def test_a_late_entry_moves_to_now_when_every_window_allows(store: Store) -> None:
    entry, at = store.window_reserve("w", 60, 0.5, 100)
    wait_past(store, at + 0.1)  # the send is late
    assert store.window_move("w", entry, 0.5, 100)
    # Moved to now: it holds the window that ends now, so 50 more wait for it to leave.
    before = store.clock()
    later = store.window_reserve("w", 50, 0.5, 100)[1]
    assert later >= before + 0.4
    assert not store.window_move("w", 12345, 0.5, 100)  # gone: nothing to move


def test_a_late_entry_stays_when_a_window_after_now_would_pass_the_limit(store: Store) -> None:
    first, at = store.window_reserve("w", 60, 1.0, 100)
    # Placed once `first` leaves the window: with `first` moved later, they would share one.
    queued = store.window_reserve("w", 60, 1.0, 100)[1]
    assert queued == pytest.approx(at + 1.0, abs=1e-6)
    wait_past(store, at + 0.2)
    assert not store.window_move("w", first, 1.0, 100)
    # A small one beside it fits: it moves.
    small, small_at = store.window_reserve("w", 40, 1.0, 100)
    assert small_at == pytest.approx(queued, abs=1e-6)  # after the last entry, and room beside it
    wait_past(store, queued + 0.05)
    assert store.window_move("w", small, 1.0, 100)


def test_the_fit_rule_on_its_own() -> None:
    entries = [(0.0, 60), (61.0, 30)]
    assert window_fits(entries, 1.0, 40, 60.0, 100)  # windows ending at 1 and 61: 100, 70
    assert not window_fits(entries, 1.0, 41, 60.0, 100)  # the one ending at 1 holds 101
    assert window_fits([(61.0, 90)], 0.5, 10, 60.0, 100)
    assert not window_fits([(61.0, 90)], 1.5, 11, 60.0, 100)  # ends at 61 with it: 101
