"""The networked store: one Redis shared by every process of a run, on any host.

URL: ``redis[s]://[[user]:password@]host[:port][/db]?run=<run id>`` plus, optionally,
``ttl=<s>`` (how long a key outlives its last write, default 86400), ``retry=<s>`` (how
long an operation keeps retrying while Redis is unreachable, default 30) and
``recovery=<s>`` (how long admissions pause after Redis lost the run's state, default
15). Other query parameters go to the redis client as they are. Runs with the same run
id share every key, under ``roadmap:<run id>:``; runs with different ids share nothing.

Every operation is one Lua script, so it is atomic on the server, and reads the time
with ``TIME`` inside the script, so all hosts share the server's clock; `clock()` adds
an offset measured against ``TIME`` to the local monotonic clock. Every key written gets
the TTL again, so a run leaves nothing behind a day after its last write.

A Redis that restarts without persistence (or fails over, or is flushed) loses the
run's state: schedules, tickets and limits. The scripts notice because the run's
``meta`` key is gone, and then, for ``recovery`` seconds, admit nothing new: rate
schedules start after the pause (or after the latest send time this process was
given, if later), a sliding window's first entry waits until the window before the loss
(and the one after the latest send time this process was given) has passed, waiting
tickets cannot acquire, and a live process puts back the tickets it knows it has when it
renews or polls them, so holders keep counting against the limit. Values (counters,
batch and dependency state) cannot be rebuilt: a Redis that must survive restarts mid-run
needs persistence (``appendonly yes``).
"""

from __future__ import annotations

import functools
import logging
import math
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pytest_roadmap.errors import SettingError
from pytest_roadmap.store.base import Spacing, Store, StoreError, TicketLost
from pytest_roadmap.validation import Range

if TYPE_CHECKING:
    from redis import Redis
    from redis.commands.core import Script

log = logging.getLogger(__name__)

_T = TypeVar("_T")

INSTALL_HINT = "pip install 'pytest-roadmap[redis]'"
DEFAULT_KEY_TTL = 24 * 3600.0
DEFAULT_RETRY = 30.0
DEFAULT_RECOVERY = 15.0
# How often the clock offset is measured again: monotonic clocks drift by parts per
# million, so a minute keeps the error far below a millisecond.
CLOCK_REFRESH = 60.0
FIRST_PAUSE = 0.05
MAX_PAUSE = 0.5
# Timeouts of one connection attempt and one reply; a script runs in microseconds.
SOCKET_TIMEOUT = 5.0
SCHEMA_VERSION = 1

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_OUR_PARAMS = ("run", "ttl", "retry", "recovery")
# The URL's numbers: a key lives at least a second; retry=0 and recovery=0 turn those off.
_PARAMS = {
    "ttl": Range(1, unit="seconds"),
    "retry": Range(0, unit="seconds"),
    "recovery": Range(0, unit="seconds"),
}

# The scripts, one per operation, in store/lua/<name>.lua; each opens with a comment naming
# its KEYS and ARGV. A line "--! include <fragment>" stands for store/lua/include/<fragment>.lua
# (the prelude every script but init starts with, and the gate helpers).
SCRIPTS = (
    "init",
    "reserve",
    "window_reserve",
    "window_settle",
    "window_move",
    "set_limit",
    "limit",
    "enqueue",
    "try_acquire",
    "renew",
    "release",
    "reclaim",
    "state",
    "put",
    "get",
    "incr",
    "swap",
)
_INCLUDE = re.compile(r"^--! include ([a-z_]+)$", re.MULTILINE)


@functools.cache
def lua_script(name: str) -> str:
    """The text of script `name`, its includes put in place."""
    folder = resources.files("pytest_roadmap.store") / "lua"

    def fragment(match: re.Match[str]) -> str:
        return (folder / "include" / f"{match.group(1)}.lua").read_text(encoding="utf-8")

    return _INCLUDE.sub(fragment, (folder / f"{name}.lua").read_text(encoding="utf-8"))


class RedisStore(Store):
    """A run's shared state in Redis, under ``roadmap:<run id>:``; safe across threads."""

    def __init__(
        self,
        server_url: str,
        run_id: str,
        *,
        create: bool = False,
        key_ttl: float = DEFAULT_KEY_TTL,
        retry: float = DEFAULT_RETRY,
        recovery: float = DEFAULT_RECOVERY,
    ) -> None:
        """Connect to the Redis at `server_url` (no run parameters) for run `run_id`.

        With `create` (the controller), start the run, or join it if another job of the
        same run already has; an unreachable Redis fails at once. Without it (a worker),
        the run must exist; an unreachable Redis is retried for `retry` seconds, as
        every operation is.
        """
        shown = redact(server_url)
        if not _RUN_ID.match(run_id):
            raise SettingError(
                f"invalid run id {run_id!r} for the Redis store at {shown}: use letters,"
                " digits, '.', '_' and '-' (at most 128, starting with a letter or digit)"
            )
        for name, value in (("ttl", key_ttl), ("retry", retry), ("recovery", recovery)):
            _PARAMS[name].check(value, f"store URL {shown}: {name}", SettingError)
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.exceptions import (
                AuthenticationError,
                AuthorizationError,
                ClusterDownError,
                ReadOnlyError,
                RedisError,
                TryAgainError,
            )
            from redis.retry import Retry
        except ImportError:
            raise SettingError(
                f"store URL {shown} needs the redis client: {INSTALL_HINT}"
            ) from None

        self._server_url = server_url
        self._run_id = run_id
        self._key_ttl = key_ttl
        self._retry = retry
        self._recovery = recovery
        self._shown = self.shown_url
        # Transient: the server is away, loading, or a replica is taking over. Wrong
        # credentials are not, even though redis-py files them under ConnectionError.
        self._transient: tuple[type[Exception], ...] = (
            redis.ConnectionError,
            redis.TimeoutError,
            TimeoutError,
            ConnectionError,
            ReadOnlyError,
            TryAgainError,
            ClusterDownError,
        )
        self._fatal: tuple[type[Exception], ...] = (AuthenticationError, AuthorizationError)
        self._redis_error: type[Exception] = RedisError

        prefix = f"roadmap:{run_id}:"
        self._prefix = prefix
        self._meta = prefix + "meta"
        self._rate = prefix + "rate"
        self._limit = prefix + "limit"
        self._counter = prefix + "ticket"
        self._common = [str(int(key_ttl * 1000)), repr(recovery)]
        self._op_ttl = str(int(max(60.0, 2 * retry) * 1000))

        # What this process knows, to put back after the server lost the run's state.
        self._known_lock = threading.Lock()
        self._tats: dict[str, float] = {}
        self._window_sends: dict[str, float] = {}
        self._tickets: dict[tuple[str, int], tuple[str, bool]] = {}
        self._limits: dict[str, int] = {}

        self._offset = 0.0
        self._synced = -math.inf
        self._sync_lock = threading.Lock()
        self._closed = False
        try:
            # The client's own retries would hide outages inside single calls; this
            # class retries whole scripts, with its own budget.
            self._client: Redis = redis.Redis.from_url(
                server_url,
                decode_responses=True,
                socket_timeout=SOCKET_TIMEOUT,
                socket_connect_timeout=SOCKET_TIMEOUT,
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as exc:
            raise SettingError(f"store URL {shown}: {_reason(exc)}") from None
        self._scripts: dict[str, Script] = {
            name: self._client.register_script(lua_script(name)) for name in SCRIPTS
        }
        try:
            self._retrying(self._sync_clock, 0.0 if create else retry, "cannot reach")
            if create:
                self._retrying(
                    lambda: self._scripts["init"](
                        keys=[self._meta], args=[self._common[0], SCHEMA_VERSION]
                    ),
                    0.0,
                    "cannot reach",
                )
            elif not self._retrying(lambda: self._client.exists(self._meta), retry, "cannot reach"):
                # As a worker never creates a SQLite store: a run nobody created is a
                # wrong run id (or one that expired), not a fresh start.
                raise StoreError(
                    f"the Redis store at {self._shown} holds no run {run_id!r}: the"
                    " controller creates it (open_store(url, create=True)), or it expired"
                )
        except TypeError as exc:
            # redis-py takes unknown URL parameters as keywords and fails on them here.
            self._client.close()
            raise SettingError(f"store URL {self._shown}: {_reason(exc)}") from None
        except BaseException:
            self._client.close()
            raise

    @classmethod
    def from_url(cls, url: str, *, create: bool = False) -> RedisStore:
        """Open the run named by ``redis[s]://...?run=<id>[&ttl=..&retry=..&recovery=..]``."""
        shown = redact(url)
        parts = urlsplit(url)
        ours: dict[str, str] = {}
        rest: list[tuple[str, str]] = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name in _OUR_PARAMS:
                ours[name] = value
            else:
                rest.append((name, value))
        run_id = ours.get("run", "")
        if not run_id:
            raise SettingError(
                f"store URL {shown} names no run: add ?run=<run id>, the same id in every"
                " job that shares the limits"
            )
        server = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), ""))

        def seconds(name: str, default: float) -> float:
            text = ours.get(name)
            if text is None:
                return default
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not _PARAMS[name].allows(value):
                raise SettingError(
                    f"store URL {shown}: {name}={text!r} must be {_PARAMS[name].allowed}"
                )
            return value

        return cls(
            server,
            run_id,
            create=create,
            key_ttl=seconds("ttl", DEFAULT_KEY_TTL),
            retry=seconds("retry", DEFAULT_RETRY),
            recovery=seconds("recovery", DEFAULT_RECOVERY),
        )

    @property
    def url(self) -> str:
        """The full URL, credentials included: pass it to workers, never print it."""
        params = [("run", self._run_id)]
        for name, value, default in (
            ("ttl", self._key_ttl, DEFAULT_KEY_TTL),
            ("retry", self._retry, DEFAULT_RETRY),
            ("recovery", self._recovery, DEFAULT_RECOVERY),
        ):
            if value != default:
                params.append((name, _number(value)))
        return with_params(self._server_url, params)

    @property
    def shown_url(self) -> str:
        """The URL with any password masked, for messages."""
        return redact(self.url)

    @property
    def run_id(self) -> str:
        """The run this store belongs to; its keys start with ``roadmap:<run id>:``."""
        return self._run_id

    def clock(self) -> float:
        return time.monotonic() + self._offset

    # -- plumbing --------------------------------------------------------------------

    def _sync_clock(self) -> None:
        """Measure the offset of the server's clock to the local monotonic one."""
        best_rtt, best_offset = math.inf, 0.0
        for _ in range(3):
            before = time.monotonic()
            seconds, micros = self._client.time()
            after = time.monotonic()
            # The server read its clock somewhere in [before, after]. Pinning it to
            # `before` errs on the early side, so a time the server has just handed out
            # (a send time, an expiry) is never in clock()'s future.
            offset = seconds + (micros + 1) / 1e6 - before
            if after - before < best_rtt:
                best_rtt, best_offset = after - before, offset
        self._offset = best_offset
        self._synced = time.monotonic()

    def _refresh_clock(self) -> None:
        # One thread measures; the others keep using the offset they have.
        if not self._sync_lock.acquire(blocking=False):
            return
        try:
            self._sync_clock()
        except self._transient as exc:
            log.debug("Redis store at %s: clock sync failed: %s", self._shown, exc)
        finally:
            self._sync_lock.release()

    def _retrying(self, call: Callable[[], _T], budget: float, failure: str) -> _T:
        """`call()`, retried with backoff while Redis is unreachable, for `budget` s."""
        deadline: float | None = None
        pause = FIRST_PAUSE
        while True:
            if self._closed:
                raise StoreError(f"the Redis store at {self._shown} is closed")
            try:
                result = call()
            except self._fatal as exc:
                raise StoreError(
                    f"{failure} the Redis store at {self._shown}: {_reason(exc)}"
                ) from None
            except self._transient as exc:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + budget
                    if budget > 0:
                        log.warning(
                            "Redis store at %s: %s; retrying for up to %g s",
                            self._shown,
                            _reason(exc),
                            budget,
                        )
                if now >= deadline:
                    waited = f" for {budget:g} s" if budget > 0 else ""
                    raise StoreError(
                        f"{failure} the Redis store at {self._shown}{waited}: {_reason(exc)}"
                    ) from None
                time.sleep(min(pause * random.uniform(0.5, 1.0), deadline - now))
                pause = min(pause * 2, MAX_PAUSE)
                continue
            except self._redis_error as exc:
                raise StoreError(f"the Redis store at {self._shown}: {_reason(exc)}") from None
            if deadline is not None:
                log.warning("Redis store at %s: answering again", self._shown)
            return result

    def _run(self, name: str, keys: list[str], args: Sequence[str | int | float]) -> object:
        """Run script `name`, retrying through outages; re-measure the clock now and then."""
        script = self._scripts[name]
        full = [self._meta, *keys]
        argv = [*self._common, *args]
        outage = False

        def call() -> object:
            nonlocal outage
            try:
                return script(keys=full, args=argv, client=self._client)
            except self._transient:
                outage = True
                raise

        result = self._retrying(call, self._retry, "no answer from")
        # After an outage the server may be another one, with another clock.
        if outage or time.monotonic() - self._synced > CLOCK_REFRESH:
            self._refresh_clock()
        return result

    def _op_key(self) -> str:
        return f"{self._prefix}op:{uuid.uuid4().hex}"

    def _gate_key(self, key: str) -> str:
        return f"{self._prefix}gate:{key}"

    def _known(self, key: str, ticket: int) -> str:
        with self._known_lock:
            mine = self._tickets.get((key, ticket))
        return "" if mine is None else f"{int(mine[1])}|{mine[0]}"

    def _forget(self, key: str, ticket: int) -> None:
        with self._known_lock:
            self._tickets.pop((key, ticket), None)

    # -- rate limiting ---------------------------------------------------------------

    def _reserve_all(self, limits: Sequence[Spacing]) -> float:
        args: list[str | int | float] = []
        with self._known_lock:
            for key, interval, burst, later in limits:
                steps = " ".join(repr(float(x)) for step in later for x in step)
                args += [key, repr(float(interval)), burst, repr(self._tats.get(key, 0.0)), steps]
        send, *tats = (
            float(str(value)) for value in _as_list(self._run("reserve", [self._rate], args))
        )
        with self._known_lock:
            for (key, *_), tat in zip(limits, tats, strict=True):
                self._tats[key] = max(self._tats.get(key, 0.0), tat)
        return send

    # -- sliding windows -------------------------------------------------------------

    def _window_reserve(
        self, key: str, amount: int, window: float, limit: float
    ) -> tuple[int, float]:
        with self._known_lock:
            hint = self._window_sends.get(key, 0.0)
        args: list[str | int | float] = [
            amount,
            repr(float(window)),
            repr(float(limit)),
            self._op_ttl,
            repr(hint),
        ]
        keys = [self._window_key(key), self._op_key()]
        entry, send = _as_list(self._run("window_reserve", keys, args))
        at = float(str(send))
        with self._known_lock:
            self._window_sends[key] = max(self._window_sends.get(key, 0.0), at)
        return _as_int(entry), at

    def _window_settle(self, key: str, entry: int, amount: int) -> bool:
        return bool(_as_int(self._run("window_settle", [self._window_key(key)], [entry, amount])))

    def _window_move(self, key: str, entry: int, window: float, limit: float) -> bool:
        args: list[str | int | float] = [entry, repr(float(window)), repr(float(limit))]
        return bool(_as_int(self._run("window_move", [self._window_key(key)], args)))

    def _window_key(self, key: str) -> str:
        return f"{self._prefix}window:{key}"

    # -- concurrency gate ------------------------------------------------------------

    def _gate_set_limit(self, key: str, limit: int) -> None:
        self._run("set_limit", [self._limit], [key, limit])
        with self._known_lock:
            self._limits[key] = limit

    def _limit_hint(self, key: str) -> str:
        with self._known_lock:
            limit = self._limits.get(key)
        return "" if limit is None else str(limit)

    def _gate_limit(self, key: str) -> int:
        return _as_int(self._run("limit", [self._limit], [key, self._limit_hint(key)]))

    def _gate_enqueue(self, key: str, holder: str, lease: float) -> int:
        keys = [self._gate_key(key), self._counter, self._op_key()]
        ticket = _as_int(self._run("enqueue", keys, [holder, repr(float(lease)), self._op_ttl]))
        with self._known_lock:
            self._tickets[(key, ticket)] = (holder, False)
        return ticket

    def _gate_try_acquire(self, key: str, ticket: int, lease: float) -> bool:
        keys = [self._gate_key(key), self._counter, self._limit]
        args: list[str | int] = [
            key,
            ticket,
            repr(float(lease)),
            self._known(key, ticket),
            self._limit_hint(key),
        ]
        answer = _as_int(self._run("try_acquire", keys, args))
        if answer < 0:
            self._forget(key, ticket)
            raise TicketLost(f"ticket {ticket} of gate {key!r} is gone")
        if answer:
            with self._known_lock:
                mine = self._tickets.get((key, ticket))
                if mine is not None:
                    self._tickets[(key, ticket)] = (mine[0], True)
        return bool(answer)

    def _gate_renew(self, key: str, ticket: int, lease: float) -> bool:
        keys = [self._gate_key(key), self._counter]
        args: list[str | int] = [ticket, repr(float(lease)), self._known(key, ticket)]
        alive = bool(_as_int(self._run("renew", keys, args)))
        if not alive:
            self._forget(key, ticket)
        return alive

    def _gate_release(self, key: str, ticket: int) -> None:
        self._forget(key, ticket)
        self._run("release", [self._gate_key(key)], [ticket])

    def _gate_reclaim(self, key: str, holder: str) -> int:
        with self._known_lock:
            for known, (who, _) in list(self._tickets.items()):
                if known[0] == key and who == holder:
                    del self._tickets[known]
        return _as_int(self._run("reclaim", [self._gate_key(key)], [holder]))

    def _gate_state(self, key: str) -> tuple[int, int]:
        held, waiting = (
            _as_int(value) for value in _as_list(self._run("state", [self._gate_key(key)], []))
        )
        return held, waiting

    # -- small shared values ---------------------------------------------------------

    def _put(self, key: str, value: str, ttl: float | None) -> None:
        self._run("put", [self._value_key(key)], [value, "" if ttl is None else repr(ttl)])

    def _get(self, key: str) -> str | None:
        value = self._run("get", [self._value_key(key)], [])
        return None if value is None else str(value)

    def _incr(self, key: str, amount: int) -> int:
        # Adding 0 (a read) may safely run twice; anything else is recorded so that a
        # retry after a lost reply returns the first result instead of adding again.
        op_ttl = self._op_ttl if amount else "0"
        reply = self._run("incr", [self._value_key(key), self._op_key()], [amount, op_ttl])
        ok, value = _as_list(reply)
        if not ok:
            raise ValueError(f"value of {key!r} is not an integer: {value!r}")
        return _as_int(value)

    def _swap(self, key: str, expected: str | None, value: str) -> bool:
        args = ["1" if expected is None else "0", expected or "", value, self._op_ttl]
        return bool(_as_int(self._run("swap", [self._value_key(key), self._op_key()], args)))

    def _value_key(self, key: str) -> str:
        return f"{self._prefix}value:{key}"

    def close(self) -> None:
        self._closed = True
        self._client.close()

    def __repr__(self) -> str:
        return f"RedisStore({self.shown_url!r})"


def with_params(url: str, params: Sequence[tuple[str, str]]) -> str:
    """`url` with each query parameter in `params` set, replacing any of the same name."""
    parts = urlsplit(url)
    names = {name for name, _ in params}
    query = [(n, v) for n, v in parse_qsl(parts.query, keep_blank_values=True) if n not in names]
    return urlunsplit(
        (parts.scheme, parts.netloc, parts.path, urlencode([*query, *params]), parts.fragment)
    )


def with_run_id(url: str, run_id: str) -> str:
    """The Redis store URL `url` for run `run_id` (replacing a run id it names)."""
    return with_params(url, [("run", run_id)])


def redact(url: str) -> str:
    """`url` with its password (in the user part or a ``password=`` parameter) masked."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        name = user.partition(":")[0]
        netloc = f"{name}:***@{host}"
    query = [
        (name, "***" if name == "password" else value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(
        (parts.scheme, netloc, parts.path, urlencode(query, safe="*"), parts.fragment)
    )


def _reason(exc: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _as_int(reply: object) -> int:
    if not isinstance(reply, int | str):
        raise StoreError(f"unexpected answer from Redis: {reply!r}")
    return int(reply)


def _as_list(reply: object) -> list[object]:
    if not isinstance(reply, list):
        raise StoreError(f"unexpected answer from Redis: {reply!r}")
    return reply
