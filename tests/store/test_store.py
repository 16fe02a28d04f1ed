"""Store behaviour, the same for every backend, plus the URL registry."""

from __future__ import annotations

import itertools
import math
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from pytest_roadmap.errors import SettingError
from pytest_roadmap.store import SCHEMES, Store, StoreError, TicketLost, open_store
from pytest_roadmap.store import redis as redis_store
from pytest_roadmap.store.redis import RedisStore, redact, with_run_id
from pytest_roadmap.store.sqlite import SQLiteStore
from tests.support.redis_server import free_port, need_client, private_server, run_url
from tests.support.stores import spawn, wait_past
from tests.support.waiting import PATIENCE

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


@pytest.mark.slow
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


def test_swap_sets_only_over_the_expected_value(store: Store) -> None:
    assert store.swap("doc", None, "one")
    assert not store.swap("doc", None, "two")  # no longer unset
    assert not store.swap("doc", "zero", "two")
    assert store.get("doc") == "one"
    assert store.swap("doc", "one", "two")
    assert store.get("doc") == "two"


def test_swap_takes_an_expired_value_as_unset(store: Store) -> None:
    store.put("doc", "old", ttl=0.2)
    written = store.clock()
    assert not store.swap("doc", None, "new")
    wait_past(store, written + 0.2)
    assert not store.swap("doc", "old", "new")
    assert store.swap("doc", None, "new")
    assert store.get("doc") == "new"


def _add_by_swapping(url: str, times: int, go: Event, done: Queue[int]) -> None:
    with open_store(url) as store:
        done.put(-1)  # ready: the processes start swapping together, not one after another
        go.wait(PATIENCE)
        lost = 0
        for _ in range(times):
            while True:
                seen = store.get("doc")
                if store.swap("doc", seen, str(int(seen or 0) + 1)):
                    break
                lost += 1
    done.put(lost)


@pytest.mark.slow
def test_swap_loses_no_update_across_processes(store: Store) -> None:
    # Read, compute, swap, again on a lost race: four processes adding one 300 times each
    # end at 1200, with some races lost on the way (else the test proves nothing).
    url = store.url
    store.close()
    go = spawn.Event()
    done: Queue[int] = spawn.Queue()
    procs = [spawn.Process(target=_add_by_swapping, args=(url, 300, go, done)) for _ in range(4)]
    for proc in procs:
        proc.start()
    assert [done.get(timeout=PATIENCE) for _ in procs] == [-1] * 4
    go.set()
    lost = [done.get(timeout=PATIENCE) for _ in procs]
    for proc in procs:
        proc.join(PATIENCE)
        assert proc.exitcode == 0
    with open_store(url) as reopened:
        assert reopened.get("doc") == "1200"
    assert sum(lost) > 0


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


# -- argument checks, the same on every backend (store/base.py) ----------------------

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize("ttl", [0, -1.0, NAN, -INF])
def test_put_refuses_a_bad_ttl_and_keeps_the_value(store: Store, ttl: float) -> None:
    store.put("key", "before")
    with pytest.raises(ValueError, match=r"ttl must be a number of seconds > 0, got "):
        store.put("key", "after", ttl=ttl)
    assert store.get("key") == "before"


def test_put_with_an_infinite_ttl_never_expires(store: Store) -> None:
    store.put("key", "value", ttl=INF)
    assert store.get("key") == "value"
    assert store.incr("count", 0) == 0  # the store still answers after it


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.put("key", 5), "value of 'key' must be a string, got 5"),
        (lambda s: s.put(5, "value"), "key must be a string, got 5"),
        (lambda s: s.swap("key", None, None), "value of 'key' must be a string, got None"),
        (lambda s: s.swap("key", 1, "v"), "expected value of 'key' must be a string, got 1"),
        (lambda s: s.get(None), "key must be a string, got None"),
        (lambda s: s.gate_enqueue("gate", 0, 10.0), "holder must be a string, got 0"),
    ],
)
def test_strings_must_be_strings(
    store: Store, call: Callable[[Store], object], message: str
) -> None:
    with pytest.raises(TypeError, match=re.escape(message)):
        call(store)


@pytest.mark.parametrize("amount", [1.0, 1.5, NAN, True])
def test_incr_takes_only_an_integer_amount(store: Store, amount: float) -> None:
    store.put("count", "1")
    with pytest.raises(ValueError, match=r"amount must be an integer, got "):
        store.incr("count", amount)  # type: ignore[arg-type]
    assert store.get("count") == "1"


@pytest.mark.parametrize("text", ["1_000", "\u0663", "1.0", "0x10", ""])
def test_incr_reads_only_ascii_integers(store: Store, text: str) -> None:
    store.put("count", text)
    with pytest.raises(ValueError, match="is not an integer"):
        store.incr("count")
    assert store.get("count") == text


def test_incr_reads_an_integer_with_blanks_and_a_sign(store: Store) -> None:
    store.put("count", " +7\t")
    assert store.incr("count") == 8


@pytest.mark.parametrize("limit", [0, -1, 2.5, 2.0, True, NAN])
def test_gate_set_limit_takes_only_an_integer_of_1_or_more(store: Store, limit: int) -> None:
    store.gate_set_limit("gate", 3)
    with pytest.raises(ValueError, match=r"gate limit must be an integer >= 1, got "):
        store.gate_set_limit("gate", limit)
    assert store.gate_limit("gate") == 3


@pytest.mark.parametrize("lease", [0, -1.0, NAN, INF])
def test_gate_leases_must_be_finite_and_positive(store: Store, lease: float) -> None:
    ticket = store.gate_enqueue("gate", "gw0", 10.0)
    message = r"lease must be a number of seconds > 0, got "
    with pytest.raises(ValueError, match=message):
        store.gate_enqueue("gate", "gw1", lease)
    with pytest.raises(ValueError, match=message):
        store.gate_try_acquire("gate", ticket, lease)
    with pytest.raises(ValueError, match=message):
        store.gate_renew("gate", ticket, lease)
    assert store.gate_state("gate") == (0, 1)
    assert store.gate_try_acquire("gate", ticket, 10.0)


@pytest.mark.parametrize("ticket", [1.0, "1", True, NAN])
def test_gate_tickets_must_be_integers(store: Store, ticket: int) -> None:
    real = store.gate_enqueue("gate", "gw0", 10.0)
    assert store.gate_try_acquire("gate", real, 10.0)
    message = r"ticket must be an integer, got "
    with pytest.raises(ValueError, match=message):
        store.gate_try_acquire("gate", ticket, 10.0)
    with pytest.raises(ValueError, match=message):
        store.gate_renew("gate", ticket, 10.0)
    with pytest.raises(ValueError, match=message):
        store.gate_release("gate", ticket)
    assert store.gate_state("gate") == (1, 0)


@pytest.mark.parametrize(
    ("interval", "burst", "message"),
    [
        (-0.1, 1, "interval of 'api' must be a number of seconds >= 0, got -0.1"),
        (NAN, 1, "interval of 'api' must be a number of seconds >= 0, got nan"),
        (INF, 1, "interval of 'api' must be a number of seconds >= 0, got inf"),
        (0.1, 0, "burst of 'api' must be an integer >= 1, got 0"),
        (0.1, 2.0, "burst of 'api' must be an integer >= 1, got 2.0"),
        (0.1, True, "burst of 'api' must be an integer >= 1, got True"),
    ],
)
def test_reserve_checks_every_limit_before_moving_any(
    store: Store, interval: float, burst: int, message: str
) -> None:
    first = store.reserve("ok", 10.0, 1)
    with pytest.raises(ValueError, match=re.escape(message)):
        store.reserve_all([("ok", 10.0, 1), ("api", interval, burst)])
    # The good limit in the refused call did not move: the next send is one interval on.
    assert store.reserve("ok", 10.0, 1) == pytest.approx(first + 10.0, abs=1e-6)


# -- gates ---------------------------------------------------------------------------


def test_gate_limit_defaults_to_one_and_can_be_set(store: Store) -> None:
    assert store.gate_limit("gate") == 1
    store.gate_set_limit("gate", 3)
    assert store.gate_limit("gate") == 3
    assert store.gate_limit("other") == 1
    with pytest.raises(ValueError, match="gate limit must be an integer >= 1, got 0"):
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


def test_redis_store_needs_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # as if it were not installed
    with pytest.raises(SettingError) as info:
        open_store("redis://localhost:6379/0?run=nightly")
    message = str(info.value)
    assert "pip install 'pytest-roadmap[redis]'" in message
    assert "redis://localhost:6379/0" in message and "\n" not in message


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://localhost:6379/0", "names no run: add ?run=<run id>"),
        ("redis://localhost:6379/0?run=a:b", "invalid run id 'a:b'"),
        ("redis://localhost:6379/0?run=ok&ttl=soon", "ttl='soon' must be a number of seconds >= 1"),
        ("redis://localhost:6379/0?run=ok&ttl=0", "ttl='0' must be a number of seconds >= 1"),
        ("redis://localhost:6379/0?run=ok&retry=-1", "retry='-1' must be a number of seconds >= 0"),
        (
            "redis://localhost:6379/0?run=ok&recovery=nan",
            "recovery='nan' must be a number of seconds >= 0",
        ),
        ("redis://localhost:6379/0?run=ok&ttl=inf", "ttl='inf' must be a number of seconds >= 1"),
    ],
)
def test_redis_url_is_checked_before_connecting(url: str, message: str) -> None:
    with pytest.raises(SettingError, match=re.escape(message)):
        open_store(url)


def test_redis_scripts_are_files_that_name_their_keys_and_arguments() -> None:
    folder = Path(redis_store.__file__).parent / "lua"
    assert sorted(p.stem for p in folder.glob("*.lua")) == sorted(redis_store.SCRIPTS)
    used: set[str] = set()
    for name in redis_store.SCRIPTS:
        head = (folder / f"{name}.lua").read_text().split("\n--! include")[0]
        assert "KEYS[1]" in head and "ARGV[1]" in head, name
        used |= set(re.findall(r"^--! include (\w+)$", (folder / f"{name}.lua").read_text(), re.M))
        text = redis_store.lua_script(name)
        assert "--! include" not in text, name
    assert used == {p.stem for p in (folder / "include").glob("*.lua")}
    # The prelude is in place where it is included: every script but init reads the clock.
    scripts = set(redis_store.SCRIPTS) - {"init"}
    assert all("redis.call('TIME')" in redis_store.lua_script(name) for name in scripts)


def test_redis_url_helpers_keep_the_password_out_of_sight() -> None:
    url = with_run_id("rediss://app:s%40cret@cache.example:6380/2?ssl_cert_reqs=none", "ci-42")
    assert url == "rediss://app:s%40cret@cache.example:6380/2?ssl_cert_reqs=none&run=ci-42"
    assert with_run_id(url, "ci-43").endswith("ssl_cert_reqs=none&run=ci-43")
    assert redact(url) == "rediss://app:***@cache.example:6380/2?ssl_cert_reqs=none&run=ci-42"
    assert redact("redis://h/0?password=pw&run=x") == "redis://h/0?password=***&run=x"
    assert redact("redis://:pw@h:1/0") == "redis://:***@h:1/0"


@pytest.mark.redis
def test_redis_unreachable_at_open_is_one_clear_line() -> None:
    need_client()
    port = free_port()  # nothing listens there
    url = f"redis://roadmap:s3cret@127.0.0.1:{port}/0?run=nightly"
    with pytest.raises(StoreError) as info:
        open_store(url, create=True)
    message = str(info.value)
    assert message.startswith(
        f"cannot reach the Redis store at redis://roadmap:***@127.0.0.1:{port}/0"
    )
    assert "refused" in message.lower()  # the reason the OS gave
    assert "s3cret" not in message and "\n" not in message
    # A worker joining the run keeps trying for the retry budget, then says the same.
    started = time.monotonic()
    with pytest.raises(
        StoreError, match=r"cannot reach the Redis store at .* for 0.3 s: .*refused"
    ):
        open_store(url + "&retry=0.3")
    assert 0.3 <= time.monotonic() - started < 0.3 + PATIENCE / 10


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


# -- Redis: runs, expiry, outages ------------------------------------------------------


def run_keys(store: RedisStore) -> dict[str, int]:
    """Every key of `store`'s run on its server, with its time to live in ms."""
    import redis

    client = redis.Redis.from_url(store.url.partition("?")[0], decode_responses=True)
    try:
        return {key: client.pttl(key) for key in client.scan_iter(f"roadmap:{store.run_id}:*")}
    finally:
        client.close()


def wipe(store: RedisStore) -> None:
    """Delete every key of `store`'s run, as a Redis restart without persistence does."""
    import redis

    client = redis.Redis.from_url(store.url.partition("?")[0])
    try:
        client.delete(*client.scan_iter(f"roadmap:{store.run_id}:*"))
    finally:
        client.close()


def use_everything(store: Store) -> None:
    store.put("key", "value")
    store.put("short", "lived", ttl=30)
    store.incr("count")
    store.reserve("api", 10.0, 1)
    store.window_reserve("tokens", 10, 60.0, 100)
    store.gate_set_limit("gate", 2)
    ticket = store.gate_enqueue("gate", "gw0", 30.0)
    assert store.gate_try_acquire("gate", ticket, 30.0)


@pytest.mark.redis
def test_redis_runs_with_different_ids_never_meet(redis_url: str) -> None:
    with (
        RedisStore.from_url(run_url(redis_url), create=True) as one,
        RedisStore.from_url(run_url(redis_url), create=True) as two,
    ):
        use_everything(one)
        assert two.get("key") is None
        assert two.incr("count") == 1
        assert two.reserve("api", 10.0, 1) <= two.clock()
        assert two.gate_limit("gate") == 1
        assert two.gate_state("gate") == (0, 0)
        assert one.get("key") == "value" and one.incr("count") == 2
        assert all(key.startswith(f"roadmap:{one.run_id}:") for key in run_keys(one))
        assert all(key.startswith(f"roadmap:{two.run_id}:") for key in run_keys(two))


@pytest.mark.redis
def test_redis_jobs_with_the_same_run_id_share_everything(redis_url: str) -> None:
    url = run_url(redis_url)
    with open_store(url, create=True) as first:
        use_everything(first)
        # A second CI job creates the same run: it joins, it does not start afresh.
        with open_store(url, create=True) as second:
            assert second.get("key") == "value"
            assert second.reserve("api", 10.0, 1) > second.clock() + 9.0
            assert second.gate_limit("gate") == 2
            assert second.gate_state("gate") == (1, 0)


@pytest.mark.redis
def test_redis_worker_does_not_start_a_run(redis_url: str) -> None:
    with pytest.raises(StoreError, match=r"holds no run 'never-created'"):
        open_store(run_url(redis_url, run="never-created"))


@pytest.mark.redis
def test_redis_every_key_expires(redis_url: str) -> None:
    with RedisStore.from_url(run_url(redis_url, ttl=600), create=True) as store:
        use_everything(store)
        store.incr("count", 0)
        keys = run_keys(store)
    prefix = f"roadmap:{store.run_id}:"
    names = ("meta", "rate", "limit", "ticket", "gate:gate", "window:tokens")
    assert {prefix + name for name in names} <= set(keys)
    for key, ttl in keys.items():
        assert 0 < ttl <= 600_000, (key, ttl)
    assert keys[prefix + "value:short"] <= 30_001


@pytest.mark.redis
def test_redis_outage_mid_run_is_retried_then_an_error(tmp_path: Path) -> None:
    server = private_server(tmp_path)
    try:
        with open_store(run_url(server.url, retry=0.3, recovery=0), create=True) as store:
            assert store.incr("count") == 1
            server.stop()
            started = time.monotonic()
            with pytest.raises(StoreError) as info:
                store.incr("count")
            assert time.monotonic() - started >= 0.3
            message = str(info.value)
            assert message.startswith(f"no answer from the Redis store at {server.url}?run=")
            assert "for 0.3 s" in message and "\n" not in message
            server.start()
            # Back on its own; the restart lost the count, as a Redis without persistence does.
            assert store.incr("count") == 1
    finally:
        server.stop()


@pytest.mark.redis
def test_redis_lost_state_holds_admissions_back(redis_url: str) -> None:
    recovery = 0.5
    with RedisStore.from_url(run_url(redis_url, recovery=recovery), create=True) as store:
        store.gate_set_limit("gate", 2)
        held = store.gate_enqueue("gate", "gw0", 10.0)
        assert store.gate_try_acquire("gate", held, 10.0)
        released = store.gate_enqueue("gate", "gw1", 10.0)
        waiting = store.gate_enqueue("gate", "gw2", 10.0)
        store.gate_release("gate", released)
        last = store.reserve("api", 0.2, 1)
        store.reserve("api", 0.2, 1)

        wipe(store)
        lost = store.clock()
        # The holder's heartbeat puts its ticket back: it keeps counting against the limit.
        assert store.gate_renew("gate", held, 10.0)
        assert store.gate_state("gate") == (1, 0)
        # A waiter gets its place back, but nobody new gets in while the others return,
        # even with room under the limit, which the process that set it restores.
        assert not store.gate_try_acquire("gate", waiting, 10.0)
        assert store.gate_limit("gate") == 2
        assert store.gate_state("gate") == (1, 1)
        # A ticket that was released stays released.
        assert not store.gate_renew("gate", released, 10.0)
        # New sends wait for the end of the pause, and never go before the ones handed
        # out before the loss.
        assert store.reserve("fresh", 0.1, 1) > lost + recovery - 0.05
        assert store.reserve("api", 0.2, 1) >= last + 0.4 - 1e-6

        wait_past(store, lost + recovery)
        assert store.gate_try_acquire("gate", waiting, 10.0)
        assert store.gate_state("gate") == (2, 0)
        ticket = store.gate_enqueue("gate", "gw3", 10.0)
        assert ticket > max(held, waiting)
