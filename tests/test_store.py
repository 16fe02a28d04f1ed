"""Store behaviour, the same for every backend, plus the URL registry."""

from __future__ import annotations

import itertools
import multiprocessing
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from urllib.parse import quote

import pytest

from pytest_roadmap.errors import SettingError
from pytest_roadmap.store import SCHEMES, Store, StoreError, TicketLost, open_store
from pytest_roadmap.store.sqlite import SQLiteStore

# Every backend the store fixture runs each test against; Redis joins later.
BACKENDS = ["sqlite"]

# Generous bound for anything a test waits on; a healthy run needs a small fraction.
PATIENCE = 30.0

spawn = multiprocessing.get_context("spawn")


def make_store(backend: str, tmp_path: Path) -> Store:
    """A fresh, initialised store of `backend`, as the controller would create it."""
    if backend == "sqlite":
        return open_store(f"sqlite://{quote((tmp_path / 'store.db').as_posix())}", create=True)
    raise AssertionError(f"no such backend {backend!r}")


# Named apart from its fixture name so that other test modules can import it.
@pytest.fixture(params=BACKENDS, name="store")
def store_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh store of each backend in turn."""
    created = make_store(request.param, tmp_path)
    yield created
    created.close()


def wait_for(condition: Callable[[], bool], timeout: float = PATIENCE) -> None:
    """Return once `condition()` holds; fail the test if it does not within `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.002)


def wait_past(store: Store, moment: float) -> None:
    """Return once the store's clock has passed `moment`."""
    wait_for(lambda: store.clock() > moment)


# -- the store's identity --------------------------------------------------------------


def test_url_reaches_the_same_store(store: Store) -> None:
    store.put("greeting", "hello")
    with open_store(store.url) as other:
        assert other.get("greeting") == "hello"
        other.put("reply", "hi")
    assert store.get("reply") == "hi"


def test_clock_follows_wall_time(store: Store) -> None:
    assert abs(store.clock() - time.time()) < 1.0


# -- small shared values -----------------------------------------------------------------


def test_put_and_get(store: Store) -> None:
    assert store.get("missing") is None
    store.put("key", "one")
    assert store.get("key") == "one"
    store.put("key", "two")
    assert store.get("key") == "two"


def test_put_with_ttl_expires(store: Store) -> None:
    store.put("short", "lived", ttl=0.2)
    written = store.clock()
    assert store.get("short") == "lived"
    wait_past(store, written + 0.2)
    assert store.get("short") is None


def test_put_rejects_a_ttl_that_is_not_positive(store: Store) -> None:
    with pytest.raises(ValueError, match="ttl"):
        store.put("key", "value", ttl=0)


def test_incr(store: Store) -> None:
    assert store.incr("count") == 1
    assert store.incr("count", 5) == 6
    assert store.incr("count", -2) == 4
    assert store.get("count") == "4"
    store.put("answer", "41")
    assert store.incr("answer") == 42


def test_incr_refuses_a_value_that_is_not_an_integer(store: Store) -> None:
    store.put("word", "seven")
    with pytest.raises(ValueError, match="word"):
        store.incr("word")


def test_incr_keeps_the_expiry_and_restarts_after_it(store: Store) -> None:
    store.put("visits", "1", ttl=0.2)
    written = store.clock()
    assert store.incr("visits") == 2
    wait_past(store, written + 0.2)
    assert store.get("visits") is None
    assert store.incr("visits") == 1


def test_incr_is_atomic_across_threads(store: Store) -> None:
    def count() -> None:
        for _ in range(100):
            store.incr("hits")

    threads = [threading.Thread(target=count) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(PATIENCE)
    assert store.get("hits") == "800"


def _count_in_process(url: str, times: int, go: Event, done: Queue[int]) -> None:
    with open_store(url) as store:
        go.wait(PATIENCE)
        for _ in range(times):
            store.incr("hits")
    done.put(times)


def test_incr_is_atomic_across_processes(store: Store) -> None:
    url = store.url
    # The workers open the store all at once, with the creator's connection gone.
    store.close()
    go = spawn.Event()
    done: Queue[int] = spawn.Queue()
    procs = [spawn.Process(target=_count_in_process, args=(url, 200, go, done)) for _ in range(4)]
    for proc in procs:
        proc.start()
    go.set()
    counted = [done.get(timeout=PATIENCE) for _ in procs]
    for proc in procs:
        proc.join(PATIENCE)
        assert proc.exitcode == 0
    assert counted == [200] * 4
    with open_store(url) as reopened:
        assert reopened.get("hits") == "800"


# -- GCRA reservations -------------------------------------------------------------------


def test_reserve_spaces_sends_by_the_interval(store: Store) -> None:
    interval = 0.1
    sends = [store.reserve("api", interval, 1) for _ in range(5)]
    # A fresh key sends at once; each later send comes one interval after the last.
    assert sends[0] <= store.clock()
    for earlier, later in itertools.pairwise(sends):
        assert later - earlier == pytest.approx(interval, abs=1e-6)


def test_reserve_lets_a_burst_through_then_spaces(store: Store) -> None:
    sends = [store.reserve("api", 0.1, 3) for _ in range(5)]
    assert max(sends[:3]) <= store.clock()
    assert sends[3] - sends[0] == pytest.approx(0.1, abs=1e-6)
    assert sends[4] - sends[0] == pytest.approx(0.2, abs=1e-6)


def test_reserve_refills_after_an_idle_spell(store: Store) -> None:
    store.reserve("api", 0.1, 1)
    second = store.reserve("api", 0.1, 1)
    assert second > store.clock()
    wait_past(store, second + 0.1)
    assert store.reserve("api", 0.1, 1) <= store.clock()


def test_reserve_keys_are_independent(store: Store) -> None:
    assert store.reserve("one", 10.0, 1) <= store.clock()
    assert store.reserve("two", 10.0, 1) <= store.clock()
    assert store.reserve("one", 10.0, 1) > store.clock() + 9.0


def test_reserve_can_move_the_schedule_back(store: Store) -> None:
    first = store.reserve("api", 0.1, 1)
    store.reserve("api", 0.5, 1)  # a sender that overran its slot by half a second
    assert store.reserve("api", 0.1, 1) - first == pytest.approx(0.6, abs=1e-6)


# -- gates ---------------------------------------------------------------------------


def test_gate_limit_defaults_to_one_and_can_be_set(store: Store) -> None:
    assert store.gate_limit("gate") == 1
    store.gate_set_limit("gate", 3)
    assert store.gate_limit("gate") == 3
    assert store.gate_limit("other") == 1
    with pytest.raises(ValueError, match="at least 1"):
        store.gate_set_limit("gate", 0)


def test_gate_admits_in_fifo_order_up_to_the_limit(store: Store) -> None:
    store.gate_set_limit("gate", 2)
    first, second, third = (store.gate_enqueue("gate", "gw0", 10.0) for _ in range(3))
    assert store.gate_state("gate") == (0, 3)
    # Room is not enough: earlier waiters go first.
    assert not store.gate_try_acquire("gate", third, 10.0)
    assert not store.gate_try_acquire("gate", second, 10.0)
    assert store.gate_try_acquire("gate", first, 10.0)
    assert not store.gate_try_acquire("gate", third, 10.0)
    assert store.gate_try_acquire("gate", second, 10.0)
    assert store.gate_state("gate") == (2, 1)
    # Its turn, but no room.
    assert not store.gate_try_acquire("gate", third, 10.0)
    store.gate_release("gate", first)
    assert store.gate_try_acquire("gate", third, 10.0)
    assert store.gate_state("gate") == (2, 0)


def test_gate_try_acquire_on_a_holder_keeps_holding(store: Store) -> None:
    ticket = store.gate_enqueue("gate", "gw0", 10.0)
    assert store.gate_try_acquire("gate", ticket, 10.0)
    assert store.gate_try_acquire("gate", ticket, 10.0)
    assert store.gate_state("gate") == (1, 0)


def test_gate_release_is_final_and_idempotent(store: Store) -> None:
    ticket = store.gate_enqueue("gate", "gw0", 10.0)
    assert store.gate_try_acquire("gate", ticket, 10.0)
    store.gate_release("gate", ticket)
    store.gate_release("gate", ticket)
    assert store.gate_state("gate") == (0, 0)
    assert not store.gate_renew("gate", ticket, 10.0)
    with pytest.raises(TicketLost):
        store.gate_try_acquire("gate", ticket, 10.0)


def test_gate_renew_extends_a_live_lease(store: Store) -> None:
    ticket = store.gate_enqueue("gate", "gw0", 0.3)
    assert store.gate_try_acquire("gate", ticket, 0.3)
    renewed = store.clock()
    assert store.gate_renew("gate", ticket, 10.0)
    wait_past(store, renewed + 0.3)
    assert store.gate_state("gate") == (1, 0)
    assert store.gate_renew("gate", ticket, 10.0)


def test_gate_expired_holder_is_gone_everywhere(store: Store) -> None:
    holder = store.gate_enqueue("gate", "gw0", 0.2)
    assert store.gate_try_acquire("gate", holder, 0.2)
    acquired = store.clock()
    waiter = store.gate_enqueue("gate", "gw1", 10.0)
    assert not store.gate_try_acquire("gate", waiter, 10.0)
    wait_past(store, acquired + 0.2)
    assert store.gate_state("gate") == (0, 1)
    assert not store.gate_renew("gate", holder, 10.0)
    assert store.gate_try_acquire("gate", waiter, 10.0)
    with pytest.raises(TicketLost):
        store.gate_try_acquire("gate", holder, 10.0)


def test_gate_expired_waiter_does_not_block_the_queue(store: Store) -> None:
    blocker = store.gate_enqueue("gate", "gw0", 10.0)
    assert store.gate_try_acquire("gate", blocker, 10.0)
    store.gate_enqueue("gate", "gw1", 0.2)  # queued first, then goes quiet
    queued = store.clock()
    fresh = store.gate_enqueue("gate", "gw2", 10.0)
    store.gate_release("gate", blocker)
    assert not store.gate_try_acquire("gate", fresh, 10.0)
    wait_past(store, queued + 0.2)
    assert store.gate_try_acquire("gate", fresh, 10.0)


def test_gate_reclaim_drops_every_ticket_of_a_holder(store: Store) -> None:
    store.gate_set_limit("gate", 2)
    held = store.gate_enqueue("gate", "gw1", 10.0)
    assert store.gate_try_acquire("gate", held, 10.0)
    store.gate_enqueue("gate", "gw2", 10.0)
    waiting = store.gate_enqueue("gate", "gw1", 10.0)
    store.gate_enqueue("other", "gw1", 10.0)
    assert store.gate_reclaim("gate", "gw1") == 2
    assert store.gate_reclaim("gate", "gw1") == 0
    assert store.gate_state("gate") == (0, 1)
    assert store.gate_state("other") == (0, 1)
    assert not store.gate_renew("gate", waiting, 10.0)


def test_gate_reclaim_does_not_count_expired_tickets(store: Store) -> None:
    store.gate_enqueue("gate", "gw1", 0.2)
    queued = store.clock()
    wait_past(store, queued + 0.2)
    assert store.gate_reclaim("gate", "gw1") == 0


def test_gate_lowered_limit_keeps_holders_and_stops_newcomers(store: Store) -> None:
    store.gate_set_limit("gate", 2)
    tickets = [store.gate_enqueue("gate", "gw0", 10.0) for _ in range(2)]
    assert all(store.gate_try_acquire("gate", ticket, 10.0) for ticket in tickets)
    store.gate_set_limit("gate", 1)
    late = store.gate_enqueue("gate", "gw1", 10.0)
    store.gate_release("gate", tickets[0])
    assert store.gate_state("gate") == (1, 1)
    assert not store.gate_try_acquire("gate", late, 10.0)
    store.gate_release("gate", tickets[1])
    assert store.gate_try_acquire("gate", late, 10.0)


def test_gates_are_independent(store: Store) -> None:
    one = store.gate_enqueue("one", "gw0", 10.0)
    two = store.gate_enqueue("two", "gw0", 10.0)
    assert store.gate_try_acquire("one", one, 10.0)
    assert store.gate_try_acquire("two", two, 10.0)


# -- opening stores by URL -----------------------------------------------------------------


def test_unknown_scheme_is_a_setting_error() -> None:
    with pytest.raises(SettingError) as info:
        open_store("memcached://localhost:11211")
    message = str(info.value)
    assert "memcached://localhost:11211" in message
    assert "sqlite://" in message and "redis://" in message
    assert "\n" not in message
    assert "sqlite" in SCHEMES


def test_redis_is_not_available_yet() -> None:
    with pytest.raises(SettingError, match="Redis store is not available yet"):
        open_store("redis://localhost:6379/0")


def test_sqlite_url_must_be_absolute() -> None:
    with pytest.raises(SettingError, match="absolute path"):
        open_store("sqlite://relative/store.db")


def test_sqlite_url_with_spaces_round_trips(tmp_path: Path) -> None:
    with SQLiteStore.create(tmp_path / "with space" / "store.db") as created:
        assert " " not in created.url
        created.put("key", "value")
        with open_store(created.url) as reopened:
            assert reopened.get("key") == "value"


def test_sqlite_worker_does_not_create_a_missing_store(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(StoreError, match="cannot open"):
        SQLiteStore(missing)
    assert not missing.exists()


def test_sqlite_refuses_a_file_that_is_not_a_store(tmp_path: Path) -> None:
    text = tmp_path / "text.db"
    text.write_text("not a database at all, just some text " * 100)
    with pytest.raises(StoreError, match="not a database"):
        SQLiteStore(text)
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    with pytest.raises(StoreError, match="not a roadmap store"):
        SQLiteStore(other)


def test_sqlite_closed_store_refuses_work(tmp_path: Path) -> None:
    created = SQLiteStore.create(tmp_path / "store.db")
    created.close()
    with pytest.raises(StoreError, match="closed"):
        created.get("key")
