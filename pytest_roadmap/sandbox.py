"""The sandbox API: a local HTTP server that imitates the BEAST MODE code-generation API,
and under /v1 an OpenAI-compatible chat completions API.

It is the plugin's embedded default API, the peer of the project's own tests and the
server for benchmarks. Its knobs (latency, capacity, rate limit, random failures,
downtime, scripted rules) make it misbehave on purpose, and its request log lets a test
judge a run from the server's side. The server itself uses the standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import email.utils
import hashlib
import itertools
import json
import math
import random
import re
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, TypeVar, cast
from urllib.parse import urlsplit

from pytest_roadmap.errors import SettingError
from pytest_roadmap.protocol import BEAST, OPENAI, PROTOCOLS, count_tokens, prompt_tokens

CHAT_PATH = PROTOCOLS[BEAST].chat_path
HEALTH_PATH = PROTOCOLS[BEAST].health_path
API_PREFIX = "/api/"
# The OpenAI protocol, under /v1 as hosted servers serve it.
OPENAI_BASE = PROTOCOLS[OPENAI].sandbox_base
OPENAI_CHAT = OPENAI_BASE + PROTOCOLS[OPENAI].chat_path
OPENAI_MODELS = OPENAI_BASE + PROTOCOLS[OPENAI].health_path
CHAT_PATHS = frozenset({CHAT_PATH, OPENAI_CHAT})
HEALTH_PATHS = frozenset({HEALTH_PATH, OPENAI_MODELS})
SANDBOX_MODEL = "sandbox"
CONTROL_PREFIX = "/_sandbox/"
DEFAULT_PORT = 3000
# Request headers the plugin sends so a run can be traced from the server's side.
TRACE_HEADERS = {
    "worker": "X-Roadmap-Worker",
    "task": "X-Roadmap-Task",
    "attempt": "X-Roadmap-Attempt",
    "run": "X-Roadmap-Run",
}
MESSAGE_PREVIEW = 80
MAX_BODY = 1 << 20
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_PADDING = 1 << 31  # a rule's `size`: answers up to 2 GiB, made and sent in pieces
PIECE = 1 << 16
MAX_TRICKLE = 60.0
RATE_WINDOW = 1.0
TOKEN_WINDOW = 60.0
# The families of headers that can tell a client where the rate window stands: none, the
# IETF draft's first three fields (draft-ietf-httpapi-ratelimit-headers-06), its later
# RateLimit / RateLimit-Policy pair (-08 and on), and the x-ratelimit-*-requests fields
# OpenAI sends.
RATE_LIMIT_HEADERS = ("", "ratelimit", "ratelimit-policy", "x-ratelimit")
# How long stop() waits for requests to notice it (they all wait on the stop event).
STOP_GRACE = 2.0
REMOTE_TIMEOUT = 10.0

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_Number = TypeVar("_Number", int, float)


# --------------------------------------------------------------------------- config


def _check_number(
    owner: str,
    name: str,
    value: object,
    *,
    what: str,
    low: float = 0.0,
    high: float = math.inf,
    low_open: bool = False,
    integer: bool = False,
    optional: bool = False,
) -> None:
    """Raise SettingError unless `value` is a number in range (bool is not a number here)."""
    if value is None and optional:
        return
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool)
    if ok:
        number = float(cast(float, value))
        above = number > low if low_open else number >= low
        ok = math.isfinite(number) and above and number <= high
    if not ok:
        none = " or null" if optional else ""
        raise SettingError(f"{owner} {name} must be {what}{none}, got {value!r}")


def _check_bool(owner: str, name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise SettingError(f"{owner} {name} must be true or false, got {value!r}")


def _check_schedule(owner: str, value: object) -> tuple[tuple[float, int], ...] | None:
    """The capacity schedule as a tuple of (seconds, capacity) steps, or None when off."""
    what = (
        f"{owner} capacity_schedule must be a list of [seconds, capacity] steps "
        "with seconds >= 0 rising and capacity a whole number >= 0, or null"
    )
    if value is None:
        return None
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise SettingError(f"{what}, got {value!r}")
    steps: list[tuple[float, int]] = []
    for step in value:
        if isinstance(step, (str, bytes, Mapping)) or not isinstance(step, Iterable):
            raise SettingError(f"{what}, got step {step!r}")
        pair = list(step)
        if len(pair) != 2:
            raise SettingError(f"{what}, got step {step!r}")
        seconds, capacity = pair
        try:
            _check_number(owner, "capacity_schedule", seconds, what="")
            _check_number(owner, "capacity_schedule", capacity, what="", integer=True)
        except SettingError:
            raise SettingError(f"{what}, got step {step!r}") from None
        if steps and seconds <= steps[-1][0]:
            raise SettingError(f"{what}, got step {step!r} after {list(steps[-1])!r}")
        steps.append((seconds, capacity))
    return tuple(steps) or None


@dataclass(frozen=True)
class Rule:
    """A scripted answer for chat requests whose message contains `match`.

    The first rule that matches and still has `times` left answers instead of the
    generator: with `status` (200 gives the normal answer unless `body` is set), an
    optional `Retry-After` (in seconds, or with `retry_after_date` as the HTTP date that
    many seconds ahead), after `delay` extra seconds; `hang` never answers until the
    server stops, `close` cuts the connection mid-answer.

    Hostile answers: `redirect` (with a 301/302/303/307/308 `status`) sends that
    `Location`, a path on this server or any URL; `size` makes the answer's code that
    many bytes of filler; `gzip` sends the body gzip-encoded; `trickle` sends the body one
    byte every that many seconds (`trickle_head`: the status line and headers too);
    `echo_auth` quotes the Authorization header it got in the answer's code and message.
    """

    match: str = ""
    status: int = 200
    times: int | None = None
    retry_after: int | None = None
    retry_after_date: bool = False
    body: str | None = None
    delay: float = 0.0
    hang: bool = False
    close: bool = False
    redirect: str | None = None
    size: int | None = None
    gzip: bool = False
    trickle: float = 0.0
    trickle_head: bool = False
    echo_auth: bool = False

    def __post_init__(self) -> None:
        owner = "sandbox rule"
        if not isinstance(self.match, str):
            raise SettingError(f"{owner} match must be a string, got {self.match!r}")
        _check_number(
            owner,
            "status",
            self.status,
            what="an HTTP status 200..599",
            low=200,
            high=599,
            integer=True,
        )
        if self.redirect is not None and (
            not isinstance(self.redirect, str) or not self.redirect.isprintable()
        ):
            raise SettingError(f"{owner} redirect must be a URL or path, got {self.redirect!r}")
        if (self.redirect is not None) != (self.status in REDIRECT_STATUSES):
            raise SettingError(
                f"{owner} redirect needs a status of 301, 302, 303, 307 or 308 and the other "
                f"way round, got status {self.status} and redirect {self.redirect!r}"
            )
        _check_number(
            owner,
            "size",
            self.size,
            what=f"a whole number of bytes from 0 to {MAX_PADDING}",
            high=MAX_PADDING,
            integer=True,
            optional=True,
        )
        _check_number(
            owner, "trickle", self.trickle, what=f"seconds from 0 to {MAX_TRICKLE:g}", high=60.0
        )
        for name in ("gzip", "trickle_head", "echo_auth"):
            _check_bool(owner, name, getattr(self, name))
        if self.trickle_head and not self.trickle:
            raise SettingError(f"{owner} trickle_head needs a trickle above 0")
        if (self.trickle or self.gzip) and (self.hang or self.close):
            raise SettingError(
                f"{owner} cannot trickle or gzip an answer it hangs or cuts (match {self.match!r})"
            )
        _check_number(
            owner, "times", self.times, what="a whole number >= 0", integer=True, optional=True
        )
        _check_number(
            owner,
            "retry_after",
            self.retry_after,
            what="whole seconds >= 0",
            integer=True,
            optional=True,
        )
        if self.body is not None and not isinstance(self.body, str):
            raise SettingError(f"{owner} body must be a string or null, got {self.body!r}")
        _check_number(owner, "delay", self.delay, what="seconds >= 0")
        _check_bool(owner, "hang", self.hang)
        _check_bool(owner, "retry_after_date", self.retry_after_date)
        _check_bool(owner, "close", self.close)
        if self.hang and self.close:
            raise SettingError(f"{owner} cannot both hang and close (match {self.match!r})")

    @classmethod
    def from_value(cls, value: Rule | Mapping[str, Any]) -> Rule:
        """A rule from itself or from a JSON object of its fields."""
        if isinstance(value, Rule):
            return value
        if not isinstance(value, Mapping):
            raise SettingError(f"sandbox rule must be an object of rule fields, got {value!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise SettingError(
                f"unknown sandbox rule field {unknown[0]!r}; known: {', '.join(sorted(known))}"
            )
        return cls(**value)


@dataclass(frozen=True)
class SandboxConfig:
    """How the sandbox misbehaves; every default means "off".

    `latency` delays every admitted chat answer; `capacity` caps chat requests in flight
    (503 beyond it, with `Retry-After: 1` unless `capacity_retry_after` is false);
    `capacity_schedule` changes that cap over time: [seconds, capacity] steps counted from
    when it is configured or the log is reset, the last step reached in force (`capacity`
    before the first). `rate_limit` caps /api/ requests in any 1 s window at
    floor(rate_limit) (at least 1; 429 beyond it, with `Retry-After` unless
    `rate_limit_retry_after` is false); `rate_limit_headers` names the family of headers
    that then tell every /api/ answer where the window stands (RATE_LIMIT_HEADERS).
    `quota` answers every /api/ request 429 with `Retry-After: quota_retry_after` once that
    many chat requests were answered 2xx. `token_limit` (OpenAI protocol) answers 429 to a
    chat request while the answers of the last 60 s used that many tokens, and every /v1/
    answer then says where that budget stands in `x-ratelimit-*-tokens` headers.
    `failure_rate` answers that share of chat
    requests 500, drawn from `random.Random(seed)`; `down` answers 503 everywhere.
    """

    latency: float = 0.0
    capacity: int | None = None
    rate_limit: float | None = None
    failure_rate: float = 0.0
    seed: int = 0
    down: bool = False
    rules: Sequence[Rule] = ()
    capacity_schedule: Sequence[Sequence[float]] | None = None
    capacity_retry_after: bool = True
    rate_limit_retry_after: bool = True
    rate_limit_headers: str = ""
    quota: int | None = None
    quota_retry_after: int = 3600
    token_limit: int | None = None

    def __post_init__(self) -> None:
        owner = "sandbox setting"
        _check_number(owner, "latency", self.latency, what="seconds >= 0")
        _check_number(
            owner,
            "capacity",
            self.capacity,
            what="a whole number >= 0",
            integer=True,
            optional=True,
        )
        _check_number(
            owner,
            "rate_limit",
            self.rate_limit,
            what="requests per second > 0",
            low_open=True,
            optional=True,
        )
        _check_number(
            owner, "failure_rate", self.failure_rate, what="a share from 0 to 1", high=1.0
        )
        _check_number(owner, "seed", self.seed, what="a whole number", low=-math.inf, integer=True)
        _check_bool(owner, "down", self.down)
        if isinstance(self.rules, (str, bytes)) or not isinstance(self.rules, Iterable):
            raise SettingError(f"{owner} rules must be a list of rules, got {self.rules!r}")
        # A tuple, so a config can be shared between threads without copying.
        object.__setattr__(self, "rules", tuple(Rule.from_value(r) for r in self.rules))
        object.__setattr__(
            self, "capacity_schedule", _check_schedule(owner, self.capacity_schedule)
        )
        _check_bool(owner, "capacity_retry_after", self.capacity_retry_after)
        _check_bool(owner, "rate_limit_retry_after", self.rate_limit_retry_after)
        if self.rate_limit_headers not in RATE_LIMIT_HEADERS:
            allowed = ", ".join(repr(name) for name in RATE_LIMIT_HEADERS)
            raise SettingError(
                f"{owner} rate_limit_headers must be one of {allowed}, "
                f"got {self.rate_limit_headers!r}"
            )
        _check_number(
            owner, "quota", self.quota, what="a whole number >= 0", integer=True, optional=True
        )
        _check_number(
            owner,
            "token_limit",
            self.token_limit,
            what="a whole number of tokens per minute >= 1",
            low=1,
            integer=True,
            optional=True,
        )
        _check_number(
            owner,
            "quota_retry_after",
            self.quota_retry_after,
            what="whole seconds >= 0",
            integer=True,
        )

    def with_changes(self, changes: Mapping[str, Any]) -> SandboxConfig:
        """A copy with `changes` applied; rules may be Rule objects or JSON objects."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise SettingError(
                f"unknown sandbox setting {unknown[0]!r}; known: {', '.join(sorted(known))}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready data (rules as a list of objects)."""
        data = dataclasses.asdict(self)
        data["rules"] = [dataclasses.asdict(rule) for rule in self.rules]
        if self.capacity_schedule is not None:
            data["capacity_schedule"] = [list(step) for step in self.capacity_schedule]
        return data


# --------------------------------------------------------------------------- state


def go_duration(seconds: float) -> str:
    """`seconds` (rounded up to whole milliseconds, at least 1) the way Go prints a
    time.Duration, as OpenAI's x-ratelimit-reset-* headers do: 250ms, 1s, 1.5s, 6m0s, 1h0m0s.
    """
    ms = max(1, math.ceil(round(seconds * 1000, 6)))
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, fraction = divmod(rest, 1000)
    text = f"{whole}.{fraction:03d}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text


def _chat_answer(message: str, model: str) -> dict[str, str]:
    """A deterministic answer: a small Python function named after the prompt's first words."""
    words = _WORD.findall(message)[:4]
    name = "_".join(word.lower() for word in words) or "task"
    summary = " ".join(words) or "empty prompt"
    code = f'def solve_{name}() -> str:\n    """{summary}."""\n    return {summary!r}\n'
    return {"code": code, "message": f"Sketch for '{summary}' from {model}."}


@dataclass
class _Decision:
    """What the API side decided for one request, before any waiting."""

    entry: dict[str, Any]
    status: int
    payload: Any = None
    raw: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    wait: float = 0.0
    hang: bool = False
    close: bool = False
    padding: int | None = None  # `size`: the answer's code is this many filler bytes
    gzip: bool = False
    trickle: float = 0.0
    trickle_head: bool = False
    admitted: bool = False  # counted in flight until settled
    settled: bool = False
    quota_epoch: int | None = None  # counted against the quota of this epoch, if at all


class _SandboxState:
    """Config, counters and the request log, shared by all handler threads."""

    def __init__(self, config: SandboxConfig, log_path: Path | None) -> None:
        self._lock = threading.Lock()
        self._config = config
        self._rng = random.Random(config.seed)
        self._rule_uses = [0] * len(config.rules)
        self._entries: list[dict[str, Any]] = []
        self._seq = 0
        self._in_flight = 0
        self._accepted: deque[float] = deque()  # monotonic arrivals inside the rate window
        self._tokens: deque[tuple[float, int]] = deque()  # (monotonic, tokens) of the minute
        self._schedule_start = time.monotonic()  # where capacity_schedule counts from
        self._quota_used = 0  # chat answers 2xx, and admitted ones on their way to it
        self._epoch = 0  # one per reset, so a request from before it frees no quota after
        self._busy = 0
        self._idle = threading.Condition(self._lock)
        self.stopping = threading.Event()
        self._log_path = log_path
        self._file_lock = threading.Lock()
        self._file: IO[str] | None = None

    # -- lifecycle

    def open_log(self) -> None:
        if self._log_path is not None:
            self._file = self._log_path.open("a", encoding="utf-8")

    def close_log(self) -> None:
        with self._file_lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def begin(self) -> None:
        with self._lock:
            self._busy += 1

    def end(self) -> None:
        with self._lock:
            self._busy -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._busy > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._idle.wait(left)

    # -- control

    @property
    def config(self) -> SandboxConfig:
        with self._lock:
            return self._config

    def configure(self, changes: Mapping[str, Any]) -> SandboxConfig:
        with self._lock:
            new = self._config.with_changes(changes)
            if "rules" in changes:
                self._rule_uses = [0] * len(new.rules)
            if "seed" in changes:
                self._rng = random.Random(new.seed)
            if "capacity_schedule" in changes:
                self._schedule_start = time.monotonic()
            self._config = new
            return new

    def reset(self) -> None:
        """Clear the log, rule counters, rate window and quota; reseed and restart the
        capacity schedule, so a run can be replayed."""
        with self._lock:
            self._entries = []
            self._seq = 0
            self._rule_uses = [0] * len(self._config.rules)
            self._rng = random.Random(self._config.seed)
            self._accepted.clear()
            self._tokens.clear()
            self._schedule_start = time.monotonic()
            self._quota_used = 0
            self._epoch += 1

    def log(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(entry) for entry in self._entries]

    def health(self) -> int:
        with self._lock:
            return self._in_flight

    # -- the API side

    def decide(
        self,
        method: str,
        path: str,
        arrived: float,
        headers: Mapping[str, str | None],
        body: Any,
    ) -> _Decision:
        """Admit or reject one /api/ request and log its arrival, in one atomic step."""
        is_chat = path in CHAT_PATHS
        openai = path.startswith(OPENAI_BASE + "/")
        message = _openai_prompt(body) if openai else None
        if not openai and isinstance(body, dict):
            message = body.get("message")
        model = body.get("model") if isinstance(body, dict) else None
        auth = headers.get("Authorization")
        entry: dict[str, Any] = {
            "seq": 0,
            "method": method,
            "path": path,
            "arrived": arrived,
            "answered": None,
            "status": None,
            "in_flight": 0,
            "capacity": None,
            "message": message[:MESSAGE_PREVIEW] if isinstance(message, str) else None,
            "model": model if isinstance(model, str) else None,
            # Only a digest: the token must never reach the log or its file.
            "auth": hashlib.sha256(auth.encode()).hexdigest() if auth is not None else None,
            # The host name the client asked for, so a test can tell a redirect's target.
            "host": headers.get("Host"),
            # Tokens of a chat answer (OpenAI protocol): {prompt, completion, total}.
            "usage": None,
        }
        for key, header in TRACE_HEADERS.items():
            entry[key] = headers.get(header)
        with self._lock:
            self._seq += 1
            entry["seq"] = self._seq
            # For chat, the count includes this request even when it is turned away,
            # so a 503 from capacity shows the number that tripped it.
            entry["in_flight"] = self._in_flight + 1 if is_chat else self._in_flight
            if is_chat:
                entry["capacity"] = self._capacity_locked()
            self._entries.append(entry)
            decision = self._token_refusal_locked(entry, path)
            if decision is None:
                decision = self._decide_locked(entry, method, path, message, model, auth)
            if openai:
                _as_openai(decision, body)
                self._count_tokens_locked(decision)
            if decision.admitted:
                self._in_flight += 1
                # Counted when admitted, not when answered, so requests in flight together
                # cannot overshoot the quota; settle() gives it back if no answer goes out.
                if 200 <= decision.status < 300 and not (decision.hang or decision.close):
                    self._quota_used += 1
                    decision.quota_epoch = self._epoch
            decision.headers.update(self._rate_headers_locked(decision))
            return decision

    def _token_window_locked(self) -> tuple[int, float]:
        """Tokens answered in the last minute, and seconds until the oldest leaves it."""
        now = time.monotonic()
        while self._tokens and self._tokens[0][0] <= now - TOKEN_WINDOW:
            self._tokens.popleft()
        used = sum(tokens for _, tokens in self._tokens)
        reset = self._tokens[0][0] + TOKEN_WINDOW - now if self._tokens else TOKEN_WINDOW
        return used, reset

    def _token_refusal_locked(self, entry: dict[str, Any], path: str) -> _Decision | None:
        limit = self._config.token_limit
        if limit is None or path != OPENAI_CHAT or self._config.down:
            return None
        used, reset = self._token_window_locked()
        if used < limit:
            return None
        retry = {"Retry-After": str(max(1, math.ceil(reset)))}
        return _Decision(entry, 429, {"error": "token rate limit exceeded"}, headers=retry)

    def _count_tokens_locked(self, decision: _Decision) -> None:
        """Count an admitted answer's tokens; say where the token budget stands."""
        limit = self._config.token_limit
        if limit is None:
            return
        usage = decision.entry.get("usage")
        if decision.admitted and isinstance(usage, dict):
            self._tokens.append((time.monotonic(), int(usage["total"])))
        used, reset = self._token_window_locked()
        decision.headers.update(
            {
                "x-ratelimit-limit-tokens": str(limit),
                "x-ratelimit-remaining-tokens": str(max(0, limit - used)),
                "x-ratelimit-reset-tokens": go_duration(reset),
            }
        )

    def _capacity_locked(self) -> int | None:
        """The capacity in force: the last schedule step reached, else `capacity`."""
        config = self._config
        capacity = config.capacity
        elapsed = time.monotonic() - self._schedule_start
        for seconds, step in config.capacity_schedule or ():
            if seconds > elapsed:
                break
            capacity = int(step)
        return capacity

    def _quota_spent_locked(self) -> bool:
        quota = self._config.quota
        return quota is not None and self._quota_used >= quota

    def _rate_headers_locked(self, decision: _Decision) -> dict[str, str]:
        """Where the rate window stands after this request, in the configured family.

        Remaining: requests still allowed in the window. Reset: seconds until the oldest
        admitted request leaves it (one more is allowed then if none is now), or the whole
        window when it is empty. Under a spent quota: none left until its Retry-After, so
        the two agree, as the draft asks.
        """
        config = self._config
        family = config.rate_limit_headers
        if config.rate_limit is None or not family:
            return {}
        limit = max(1, math.floor(config.rate_limit))
        # Only the quota's own 429 comes with the quota spent (it is checked first).
        if decision.status == 429 and self._quota_spent_locked():
            remaining, reset = 0, float(config.quota_retry_after)
        else:
            now = time.monotonic()
            while self._accepted and self._accepted[0] <= now - RATE_WINDOW:
                self._accepted.popleft()
            remaining = max(0, limit - len(self._accepted))
            reset = self._accepted[0] + RATE_WINDOW - now if self._accepted else RATE_WINDOW
        whole = max(1, math.ceil(reset))
        if family == "ratelimit":
            return {
                "RateLimit-Limit": str(limit),
                "RateLimit-Remaining": str(remaining),
                "RateLimit-Reset": str(whole),
            }
        if family == "ratelimit-policy":
            window = max(1, math.ceil(RATE_WINDOW))
            return {
                "RateLimit": f'"default";r={remaining};t={whole}',
                "RateLimit-Policy": f'"default";q={limit};w={window}',
            }
        return {
            "x-ratelimit-limit-requests": str(limit),
            "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-reset-requests": go_duration(reset),
        }

    def _decide_locked(
        self,
        entry: dict[str, Any],
        method: str,
        path: str,
        message: object,
        model: object,
        auth: str | None,
    ) -> _Decision:
        config = self._config
        if config.down:
            return _Decision(entry, 503, {"status": "down"})
        if self._quota_spent_locked():
            retry = {"Retry-After": str(config.quota_retry_after)}
            return _Decision(entry, 429, {"error": "quota exhausted"}, headers=retry)
        if config.rate_limit is not None:
            now = time.monotonic()
            while self._accepted and self._accepted[0] <= now - RATE_WINDOW:
                self._accepted.popleft()
            if len(self._accepted) >= max(1, math.floor(config.rate_limit)):
                wait = max(1, math.ceil(self._accepted[0] + RATE_WINDOW - now))
                retry = {"Retry-After": str(wait)} if config.rate_limit_retry_after else {}
                return _Decision(entry, 429, {"error": "rate limit exceeded"}, headers=retry)
            self._accepted.append(now)
        if path in HEALTH_PATHS:
            if method != "GET":
                return _method_not_allowed(entry, "GET")
            if path == OPENAI_MODELS:
                model_list = [{"id": SANDBOX_MODEL, "object": "model", "owned_by": "roadmap"}]
                return _Decision(entry, 200, {"object": "list", "data": model_list})
            return _Decision(entry, 200, {"status": "ok", "inFlight": self._in_flight})
        if path not in CHAT_PATHS:
            return _Decision(entry, 404, {"error": f"no such API path: {path}"})
        if method != "POST":
            return _method_not_allowed(entry, "POST")
        if not isinstance(message, str):
            wanted = (
                "a 'messages' list ending in a user message"
                if path == OPENAI_CHAT
                else ("a string 'message'")
            )
            return _Decision(entry, 400, {"error": f"body must be a JSON object with {wanted}"})
        capacity = entry["capacity"]
        if capacity is not None and self._in_flight + 1 > capacity:
            retry = {"Retry-After": "1"} if config.capacity_retry_after else {}
            return _Decision(entry, 503, {"error": "over capacity"}, headers=retry)
        # Admitted: it takes `latency` whatever the answer, like a server that did the work.
        decision = _Decision(entry, 200, admitted=True, wait=config.latency)
        rule = self._take_rule(config, message)
        if rule is not None:
            decision.status = rule.status
            decision.wait += rule.delay
            decision.hang = rule.hang
            decision.close = rule.close
            if rule.retry_after is not None and rule.retry_after_date:
                when = time.time() + rule.retry_after
                decision.headers["Retry-After"] = email.utils.formatdate(when, usegmt=True)
            elif rule.retry_after is not None:
                decision.headers["Retry-After"] = str(rule.retry_after)
            if rule.redirect is not None:
                decision.headers["Location"] = rule.redirect
            decision.gzip = rule.gzip
            decision.trickle = rule.trickle
            decision.trickle_head = rule.trickle_head
            if rule.body is not None:
                decision.raw = rule.body
            elif rule.size is not None:
                decision.padding = rule.size
            elif rule.echo_auth:
                decision.payload = {
                    "code": f"# Authorization: {auth}\n",
                    "message": f"you sent Authorization: {auth}",
                }
            elif rule.status != 200:
                decision.payload = {"error": f"sandbox rule answered {rule.status}"}
        elif config.failure_rate > 0 and self._rng.random() < config.failure_rate:
            decision.status = 500
            decision.payload = {"error": "sandbox failure (failure_rate)"}
        if (
            decision.status == 200
            and decision.raw is None
            and decision.payload is None
            and decision.padding is None
        ):
            decision.payload = _chat_answer(message, model if isinstance(model, str) else "default")
        return decision

    def _take_rule(self, config: SandboxConfig, message: str) -> Rule | None:
        for index, rule in enumerate(config.rules):
            if rule.match not in message:
                continue
            if rule.times is not None and self._rule_uses[index] >= rule.times:
                continue
            self._rule_uses[index] += 1
            return rule
        return None

    def settle(self, decision: _Decision, status: int | None, answered: bool) -> None:
        """Close a request's log entry and free its in-flight slot (once).

        Called just before the answer's bytes go out, so a client that has its answer
        always finds the entry final and the slot free when it sends the next request.
        """
        with self._lock:
            if decision.settled:
                return
            decision.settled = True
            if decision.admitted:
                self._in_flight -= 1
            if not answered:
                self._give_back_quota_locked(decision)
            decision.entry["status"] = status
            decision.entry["answered"] = time.time() if answered else None

    def unanswer(self, decision: _Decision) -> None:
        """The answer could not be written after all."""
        with self._lock:
            decision.entry["answered"] = None
            self._give_back_quota_locked(decision)

    def _give_back_quota_locked(self, decision: _Decision) -> None:
        """A request counted against the quota that got no answer: it did not use it."""
        if decision.quota_epoch == self._epoch:
            self._quota_used -= 1
        decision.quota_epoch = None

    def record(self, decision: _Decision) -> None:
        """Append the finished entry to the log file, if there is one."""
        with self._lock:
            line = json.dumps(decision.entry)
        with self._file_lock:
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()


_PADDED = (b'{"code": "', b'", "message": "a padded answer"}')


def _answer_pieces(decision: _Decision) -> Iterator[bytes]:
    """The body of a hostile answer, in pieces of at most PIECE bytes (filler included)."""
    if decision.padding is None:
        payload = decision.raw if decision.raw is not None else json.dumps(decision.payload)
        data = payload.encode("utf-8")
        for start in range(0, len(data), PIECE):
            yield data[start : start + PIECE]
        return
    yield _PADDED[0]
    left = decision.padding
    filler = b"#" * PIECE
    while left > 0:
        yield filler[: min(left, PIECE)]
        left -= PIECE
    yield _PADDED[1]


def _answer_length(decision: _Decision) -> int:
    if decision.padding is None:
        return sum(len(piece) for piece in _answer_pieces(decision))
    return len(_PADDED[0]) + decision.padding + len(_PADDED[1])


def _openai_prompt(body: Any) -> str | None:
    """The prompt of a chat completion request: its last message, when that is the user's."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return None
    last = messages[-1]
    content = last.get("content")
    return content if last.get("role") == "user" and isinstance(content, str) else None


def _as_openai(decision: _Decision, body: Any) -> None:
    """The decision in the OpenAI protocol's shapes: a chat completion with its usage for
    an answer, `{"error": {"message": ...}}` for an error; a raw body stays as it is."""
    payload = decision.payload
    if not isinstance(payload, dict) or decision.raw is not None:
        return
    if 200 <= decision.status < 300 and "code" in payload:
        decision.payload = _completion(decision, payload, body)
    elif "error" in payload or decision.status >= 400:
        words = payload.get("error") or payload.get("status") or HTTPStatus(decision.status).phrase
        kind = "rate_limit_exceeded" if decision.status == 429 else "sandbox_error"
        decision.payload = {"error": {"message": str(words), "type": kind, "code": None}}


_COMPLETION_IDS = itertools.count(1)


def _completion(decision: _Decision, answer: Mapping[str, Any], body: Any) -> dict[str, Any]:
    """A chat completion for an answer `{code, message}`: the message, then the code in a
    fenced block; cut at the request's `max_tokens`, counted as protocol.py counts."""
    content = f"{answer.get('message', '')}\n\n```python\n{answer.get('code', '')}```\n"
    max_tokens = body.get("max_tokens") if isinstance(body, dict) else None
    finish = "stop"
    if (
        isinstance(max_tokens, int)
        and not isinstance(max_tokens, bool)
        and 1 <= max_tokens < count_tokens(content)
    ):
        content = content[: max_tokens * 4]
        finish = "length"
    messages = body.get("messages") if isinstance(body, dict) else None
    listed = messages if isinstance(messages, list) else []
    prompt = prompt_tokens([m for m in listed if isinstance(m, dict)])
    completion = count_tokens(content)
    decision.entry["usage"] = {
        "prompt": prompt,
        "completion": completion,
        "total": prompt + completion,
    }
    model = body.get("model") if isinstance(body, dict) else None
    return {
        "id": f"chatcmpl-sandbox-{next(_COMPLETION_IDS)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model if isinstance(model, str) else SANDBOX_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def _method_not_allowed(entry: dict[str, Any], allow: str) -> _Decision:
    return _Decision(
        entry, 405, {"error": f"method not allowed; use {allow}"}, headers={"Allow": allow}
    )


# --------------------------------------------------------------------------- HTTP


class _HTTPServer(ThreadingHTTPServer):
    """The listening server: many threads, a deep backlog, and a list of open connections."""

    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: _SandboxState) -> None:
        self.state = state
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that can stall for seconds.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut every open connection, so idle keep-alive threads end with the server."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by its own thread
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that goes away mid-answer is normal here (timeouts, close rules, stop).
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """One connection: routes /api/ to the state, /_sandbox/ to control."""

    protocol_version = "HTTP/1.1"
    server_version = "roadmap-sandbox"
    # Headers and body go out in two writes; without this, Nagle + delayed ACK add ~40 ms.
    disable_nagle_algorithm = True

    @property
    def state(self) -> _SandboxState:
        return cast(_HTTPServer, self.server).state

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the request log is the record, and stderr noise costs throughput."""

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def do_PUT(self) -> None:
        self._route()

    def do_PATCH(self) -> None:
        self._route()

    def do_DELETE(self) -> None:
        self._route()

    def _route(self) -> None:
        arrived = time.time()
        state = self.state
        state.begin()
        try:
            body = self._read_body()
            if body is None:
                return
            path = urlsplit(self.path).path
            if path.startswith(CONTROL_PREFIX):
                self._control(path, body)
            elif path.startswith((API_PREFIX, OPENAI_BASE + "/")):
                self._api(path, arrived, body)
            else:
                self._send(404, {"error": f"no such path: {path}"})
        finally:
            state.end()

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering a body we will not read."""
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                self.close_connection = True
                self._send(411, {"error": "send a Content-Length"})
                return None
            return b""
        try:
            length = int(length_text)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            # The rest of the stream cannot be trusted, so answer and hang up.
            self.close_connection = True
            self._send(400 if length < 0 else 413, {"error": "bad or oversized Content-Length"})
            return None
        return self.rfile.read(length)

    # -- /api/

    def _api(self, path: str, arrived: float, raw: bytes) -> None:
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        state = self.state
        wanted = ("Authorization", "Host", *TRACE_HEADERS.values())
        headers = {name: self.headers.get(name) for name in wanted}
        decision = state.decide(self.command, path, arrived, headers, body)
        try:
            if decision.wait > 0 and state.stopping.wait(decision.wait):
                self.close_connection = True  # stopping: give up rather than answer late
            elif decision.hang:
                state.stopping.wait()
                self.close_connection = True
            elif decision.close:
                state.settle(decision, decision.status, answered=False)
                self._send_cut(decision.status)
            elif decision.padding is not None or decision.gzip or decision.trickle:
                self._send_hostile(
                    decision,
                    ready=lambda: state.settle(decision, decision.status, answered=True),
                )
            else:
                payload = decision.raw if decision.raw is not None else decision.payload
                self._send(
                    decision.status,
                    payload,
                    decision.headers,
                    ready=lambda: state.settle(decision, decision.status, answered=True),
                )
        except OSError:
            self.close_connection = True  # the client went away mid-answer
            state.unanswer(decision)
        finally:
            state.settle(decision, None, answered=False)  # no-op unless never answered
            state.record(decision)

    def _send_hostile(self, decision: _Decision, ready: Callable[[], None]) -> None:
        """Send a padded, gzip-encoded and/or trickled answer, made in pieces."""
        pieces = _answer_pieces(decision)
        length: int
        if decision.gzip:
            packer = zlib.compressobj(wbits=31)  # 31: the gzip container
            packed = [packer.compress(piece) for piece in pieces]
            packed.append(packer.flush())
            pieces = iter(packed)
            length = sum(len(piece) for piece in packed)
        else:
            length = _answer_length(decision)
        phrase = HTTPStatus(decision.status).phrase
        head = [f"HTTP/1.1 {decision.status} {phrase}", "Content-Type: application/json"]
        head.append(f"Content-Length: {length}")
        if decision.gzip:
            head.append("Content-Encoding: gzip")
        head += [f"{name}: {value}" for name, value in decision.headers.items()]
        head_bytes = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        ready()
        if decision.trickle_head:
            pieces = itertools.chain([head_bytes], pieces)
        else:
            self.wfile.write(head_bytes)
            self.wfile.flush()
        for piece in pieces:
            if not decision.trickle:
                self.wfile.write(piece)
                continue
            for index in range(len(piece)):
                if self.state.stopping.wait(decision.trickle):
                    self.close_connection = True
                    return
                self.wfile.write(piece[index : index + 1])
                self.wfile.flush()

    def _send_cut(self, status: int) -> None:
        """Promise a long body, send a few bytes of it, and hang up."""
        phrase = HTTPStatus(status).phrase
        head = (
            f"HTTP/1.1 {status} {phrase}\r\n"
            "Content-Type: application/json\r\n"
            "Content-Length: 4096\r\n"
            "\r\n"
        )
        self.wfile.write(head.encode("ascii") + b'{"code": "def ')
        self.wfile.flush()
        self.close_connection = True

    # -- /_sandbox/

    def _control(self, path: str, raw: bytes) -> None:
        state = self.state
        if path == "/_sandbox/config":
            if self.command == "GET":
                self._send(200, state.config.to_dict())
                return
            if self.command != "POST":
                self._send(405, {"error": "use GET or POST"}, {"Allow": "GET, POST"})
                return
            try:
                changes = json.loads(raw) if raw else {}
            except ValueError:
                changes = None
            if not isinstance(changes, dict):
                self._send(400, {"error": "body must be a JSON object of settings to change"})
                return
            try:
                config = state.configure(changes)
            except SettingError as exc:
                self._send(400, {"error": str(exc)})
                return
            self._send(200, config.to_dict())
        elif path == "/_sandbox/log":
            if self.command != "GET":
                self._send(405, {"error": "use GET"}, {"Allow": "GET"})
                return
            self._send(200, state.log())
        elif path == "/_sandbox/reset":
            if self.command != "POST":
                self._send(405, {"error": "use POST"}, {"Allow": "POST"})
                return
            state.reset()
            self._send(200, {"status": "reset"})
        else:
            self._send(404, {"error": f"no such control path: {path}"})

    def _send(
        self,
        status: int,
        payload: Any,
        headers: Mapping[str, str] | None = None,
        ready: Callable[[], None] | None = None,
    ) -> None:
        """Answer with JSON, or with `payload` as is when it is a string.

        `ready` runs after the answer is built and before any byte of it is sent.
        """
        if isinstance(payload, str):
            data = payload.encode("utf-8")
            content_type = "text/plain; charset=utf-8"
        else:
            data = json.dumps(payload).encode("utf-8")
            content_type = "application/json"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        if ready is not None:
            ready()
        self.end_headers()
        self.wfile.write(data)


# --------------------------------------------------------------------------- server


class SandboxServer:
    """The sandbox API on a background thread: `with SandboxServer(config) as server: ...`."""

    def __init__(
        self,
        config: SandboxConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: Path | None = None,
    ) -> None:
        self._state = _SandboxState(config or SandboxConfig(), log_path)
        self._address = (host, port)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    def start(self) -> SandboxServer:
        """Bind and serve in a daemon thread; returns self. OSError if the port is taken."""
        if self._httpd is not None or self._stopped:
            raise RuntimeError("a SandboxServer can be started only once")
        httpd = _HTTPServer(self._address, self._state)
        try:
            self._state.open_log()
        except OSError:
            httpd.server_close()
            raise
        self._httpd = httpd
        # A short poll interval keeps stop() prompt.
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"roadmap-sandbox:{httpd.server_port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release hanging and sleeping requests, close the log file."""
        httpd = self._httpd
        if httpd is None or self._stopped:
            self._stopped = True
            return
        self._stopped = True
        self._state.stopping.set()
        httpd.shutdown()
        httpd.close_connections()
        self._state.wait_idle(STOP_GRACE)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(STOP_GRACE)
        self._state.close_log()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def host(self) -> str:
        return self._bound()[0]

    @property
    def port(self) -> int:
        return self._bound()[1]

    @property
    def url(self) -> str:
        """The base URL, e.g. http://127.0.0.1:54321 (known once started)."""
        host, port = self._bound()
        return f"http://{host}:{port}"

    @property
    def config(self) -> SandboxConfig:
        return self._state.config

    def log(self) -> list[dict[str, Any]]:
        """A copy of the request log, one entry per /api/ request in arrival order.

        Keys: seq, method, path, arrived, answered (null while open, or after hang/close),
        status, in_flight, capacity (for chat requests, the capacity in force when it
        arrived; null when there is none), message (first 80 chars), model, auth (sha256
        of the Authorization value), host (the Host header: which name a redirect went to),
        worker, task, attempt, run (the X-Roadmap-* headers), usage (an OpenAI chat
        answer's tokens: prompt, completion, total; null otherwise).
        """
        return self._state.log()

    def configure(self, **changes: Any) -> SandboxConfig:
        """Change settings while serving; SettingError for unknown or bad values."""
        return self._state.configure(changes)

    def reset(self) -> None:
        """Clear the log, rule counters, rate window and quota, reseed the failure draw,
        and start the capacity schedule again."""
        self._state.reset()

    def _bound(self) -> tuple[str, int]:
        if self._httpd is None:
            raise RuntimeError("the sandbox has no address until start()")
        return self._httpd.server_name, self._httpd.server_port


# --------------------------------------------------------------------------- analysis


def _select(entries: Iterable[Mapping[str, Any]], path: str | None) -> list[Mapping[str, Any]]:
    return [entry for entry in entries if path is None or entry.get("path") == path]


def max_in_window(
    entries: Iterable[Mapping[str, Any]], window: float = 1.0, path: str | None = None
) -> int:
    """The most requests whose arrival falls in any half-open window [t, t + window)."""
    times = sorted(float(entry["arrived"]) for entry in _select(entries, path))
    best = 0
    end = 0
    # A busiest window can always start at an arrival, so slide one over the sorted list.
    for start, first in enumerate(times):
        end = max(end, start)
        while end < len(times) and times[end] < first + window:
            end += 1
        best = max(best, end - start)
    return best


def max_tokens_in_window(entries: Iterable[Mapping[str, Any]], window: float = 60.0) -> int:
    """The most tokens (each answer's `usage` total, at its arrival) in any half-open
    window [t, t + window): what a server counting tokens per sliding window saw."""
    arrivals = sorted(
        (float(entry["arrived"]), int(entry["usage"]["total"]))
        for entry in entries
        if isinstance(entry.get("usage"), Mapping)
    )
    best = total = end = 0
    for start, (first, _) in enumerate(arrivals):
        while end < len(arrivals) and arrivals[end][0] < first + window:
            total += arrivals[end][1]
            end += 1
        best = max(best, total)
        total -= arrivals[start][1]
    return best


def max_in_flight(entries: Iterable[Mapping[str, Any]], path: str | None = CHAT_PATH) -> int:
    """The most requests open at once, from [arrived, answered); unanswered ones never end."""
    events: list[tuple[float, int]] = []
    for entry in _select(entries, path):
        events.append((float(entry["arrived"]), 1))
        answered = entry.get("answered")
        if answered is not None:
            events.append((float(answered), -1))
    # At equal times ends sort first: an answer and the next arrival are not concurrent.
    events.sort()
    best = current = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best


def achieved_rate(entries: Iterable[Mapping[str, Any]], path: str | None = None) -> float:
    """Requests per second between the first and last arrival: (n - 1) / span.

    0.0 for fewer than two requests; infinity if they all arrived at the same instant.
    """
    times = sorted(float(entry["arrived"]) for entry in _select(entries, path))
    if len(times) < 2:
        return 0.0
    span = times[-1] - times[0]
    return (len(times) - 1) / span if span > 0 else math.inf


# --------------------------------------------------------------------------- remote


def fetch_log(url: str) -> list[dict[str, Any]]:
    """The request log of a sandbox at `url` (in this or another process)."""
    import requests  # only the helpers need it; the server stays stdlib-only

    response = requests.get(url.rstrip("/") + "/_sandbox/log", timeout=REMOTE_TIMEOUT)
    response.raise_for_status()
    return cast(list[dict[str, Any]], response.json())


def configure_remote(url: str, **changes: Any) -> dict[str, Any]:
    """Change settings of a sandbox at `url`; returns its new config as JSON data."""
    import requests

    if "rules" in changes:
        changes["rules"] = [
            dataclasses.asdict(rule) if isinstance(rule, Rule) else rule
            for rule in changes["rules"]
        ]
    response = requests.post(
        url.rstrip("/") + "/_sandbox/config", json=changes, timeout=REMOTE_TIMEOUT
    )
    if response.status_code == 400:
        raise SettingError(response.json().get("error", response.text))
    response.raise_for_status()
    return cast(dict[str, Any], response.json())


def reset_remote(url: str) -> None:
    """Clear the log and rule counters of a sandbox at `url`."""
    import requests

    response = requests.post(url.rstrip("/") + "/_sandbox/reset", timeout=REMOTE_TIMEOUT)
    response.raise_for_status()


class SandboxSubprocess:
    """`python -m pytest_roadmap.sandbox` in a process of its own, for tests and benchmarks:
    its clock is then not held up by the GIL of the process that drives the run.

    `args` are the command line's knobs (`--latency-ms 50`, ...); it listens on
    127.0.0.1 on a free port, given in `url` once it is up.
    """

    def __init__(self, *args: str) -> None:
        command = [sys.executable, "-u", "-m", "pytest_roadmap.sandbox"]
        self.process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", "0", *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # "roadmap-sandbox listening on URL"
        if "listening on " not in line:
            self.process.kill()
            self.process.wait()
            raise RuntimeError(f"the sandbox did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[1].strip()

    def log(self) -> list[dict[str, Any]]:
        return fetch_log(self.url)

    def configure(self, **changes: Any) -> None:
        configure_remote(self.url, **changes)

    def reset(self) -> None:
        reset_remote(self.url)

    def stop(self, timeout: float = 30.0) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self: _SelfSandbox) -> _SelfSandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_SelfSandbox = TypeVar("_SelfSandbox", bound=SandboxSubprocess)


# --------------------------------------------------------------------------- CLI


def _argument(
    convert: Callable[[str], _Number], what: str, check: Callable[[_Number], bool]
) -> Callable[[str], _Number]:
    """An argparse type: bad values become one usage line, never a traceback."""

    def parse(text: str) -> _Number:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


def _schedule_argument(text: str) -> list[tuple[float, int]]:
    """--capacity-schedule 0:4,3:1,9:4 as [(0.0, 4), (3.0, 1), (9.0, 4)]."""
    what = "steps SECONDS:CAPACITY separated by commas, seconds rising, e.g. 0:4,3:1,9:4"
    steps: list[tuple[float, int]] = []
    try:
        for part in text.split(","):
            seconds, capacity = part.split(":")
            steps.append((float(seconds), int(capacity)))
        _check_schedule("sandbox setting", steps)
    except (ValueError, SettingError):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    return steps


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roadmap-sandbox",
        description="Serve the sandbox imitation of the BEAST MODE code-generation API.",
    )
    finite = math.isfinite
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=_argument(int, "a port from 0 to 65535", lambda v: 0 <= v <= 65535),
        default=DEFAULT_PORT,
        help=f"port to listen on, 0 for any free one (default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--latency-ms",
        type=_argument(float, "milliseconds >= 0", lambda v: finite(v) and v >= 0),
        default=0.0,
        help="delay before each chat answer",
    )
    parser.add_argument(
        "--capacity",
        type=_argument(int, "a whole number >= 0", lambda v: v >= 0),
        default=None,
        help="most chat requests in flight; beyond it 503",
    )
    parser.add_argument(
        "--capacity-schedule",
        type=_schedule_argument,
        default=None,
        metavar="S:C,...",
        help="capacity C from S seconds after start (or a reset) on, e.g. 0:4,3:1,9:4; "
        "before the first step --capacity holds",
    )
    parser.add_argument(
        "--no-capacity-retry-after",
        dest="capacity_retry_after",
        action="store_false",
        help="answer 503 over capacity without Retry-After",
    )
    parser.add_argument(
        "--rate-limit",
        type=_argument(float, "requests per second > 0", lambda v: finite(v) and v > 0),
        default=None,
        help="most /api/ requests per 1 s window; beyond it 429",
    )
    parser.add_argument(
        "--no-rate-limit-retry-after",
        dest="rate_limit_retry_after",
        action="store_false",
        help="answer 429 over the rate limit without Retry-After",
    )
    parser.add_argument(
        "--rate-limit-headers",
        choices=[name for name in RATE_LIMIT_HEADERS if name],
        default="",
        help="with --rate-limit, tell every /api/ answer where the window stands: "
        "RateLimit-Limit/-Remaining/-Reset, RateLimit + RateLimit-Policy, or "
        "x-ratelimit-*-requests",
    )
    parser.add_argument(
        "--quota",
        type=_argument(int, "a whole number >= 0", lambda v: v >= 0),
        default=None,
        help="after this many chat answers 2xx, answer every /api/ request 429",
    )
    parser.add_argument(
        "--quota-retry-after",
        type=_argument(int, "whole seconds >= 0", lambda v: v >= 0),
        default=3600,
        help="Retry-After of the --quota 429 (default 3600)",
    )
    parser.add_argument(
        "--token-limit",
        type=_argument(int, "a whole number >= 1", lambda v: v >= 1),
        default=None,
        help="OpenAI protocol: answer 429 while the last minute's answers used this many "
        "tokens, and send x-ratelimit-*-tokens headers",
    )
    parser.add_argument(
        "--failure-rate",
        type=_argument(float, "a share from 0 to 1", lambda v: 0 <= v <= 1),
        default=0.0,
        help="share of chat requests that answer 500",
    )
    parser.add_argument(
        "--seed",
        type=_argument(int, "a whole number", lambda v: True),
        default=0,
        help="seed for --failure-rate draws",
    )
    parser.add_argument(
        "--log",
        type=Path,
        default=None,
        metavar="FILE",
        help="append the request log to FILE as JSON lines",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The `roadmap-sandbox` command: serve until SIGINT or SIGTERM, then exit 0."""
    args = _build_parser().parse_args(argv)
    config = SandboxConfig(
        latency=args.latency_ms / 1000.0,
        capacity=args.capacity,
        rate_limit=args.rate_limit,
        failure_rate=args.failure_rate,
        seed=args.seed,
        capacity_schedule=args.capacity_schedule,
        capacity_retry_after=args.capacity_retry_after,
        rate_limit_retry_after=args.rate_limit_retry_after,
        rate_limit_headers=args.rate_limit_headers,
        quota=args.quota,
        quota_retry_after=args.quota_retry_after,
        token_limit=args.token_limit,
    )
    server = SandboxServer(config, host=args.host, port=args.port, log_path=args.log)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Installed before serving, so a signal right after the banner is never lost.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server.start()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            where = f"open {exc.filename}" if exc.filename else f"serve on {args.host}:{args.port}"
            print(f"roadmap-sandbox: cannot {where}: {reason}", file=sys.stderr)
            return 1
        print(f"roadmap-sandbox listening on {server.url}", flush=True)
        stop.wait()
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
