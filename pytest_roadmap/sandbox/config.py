"""How the sandbox misbehaves: `SandboxConfig`, its scripted `Rule`s, and their checks."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_roadmap.errors import SettingError
from pytest_roadmap.protocol import REDIRECT_STATUSES
from pytest_roadmap.validation import Range

MAX_PADDING = 1 << 31  # a rule's `size`: answers up to 2 GiB, made and sent in pieces
MAX_TRICKLE = 60.0
# The families of headers that can tell a client where the rate window stands: none, the
# IETF draft's first three fields (draft-ietf-httpapi-ratelimit-headers-06), its later
# RateLimit / RateLimit-Policy pair (-08 and on), and the x-ratelimit-*-requests fields
# OpenAI sends.
RATE_LIMIT_HEADERS = ("", "ratelimit", "ratelimit-policy", "x-ratelimit")


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
    bounds = Range(
        low=None if math.isinf(low) else low,
        high=None if math.isinf(high) else high,
        integer=integer,
        low_open=low_open,
    )
    if not bounds.allows(value):
        none = " or null" if optional else ""
        raise SettingError(f"{owner} {name} must be {what}{none}, got {value!r}")


def _check_bool(owner: str, name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise SettingError(f"{owner} {name} must be true or false, got {value!r}")


def check_schedule(owner: str, value: object) -> tuple[tuple[float, int], ...] | None:
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

    `code` and `message` script the answer itself (in either protocol's shape), so a test
    can give an answer that passes its task's checks or one that fails them. A rubric
    check's grading request is matched on its first line ("Grade an answer against one
    requirement.") and its requirement only, not on the task and answer it quotes.
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
    code: str | None = None
    message: str | None = None

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
        for name in ("body", "code", "message"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise SettingError(
                    f"{owner} {name} must be a string or null, got {getattr(self, name)!r}"
                )
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
    `rate_limit_spacing` counts as nginx's `limit_req` without `burst` does instead: a
    request less than 1 / rate_limit seconds after the last admitted one is refused;
    `rate_limit_status` is the status of the refusal (429, or 503 as nginx answers by
    default).
    `quota` answers every /api/ request 429 with `Retry-After: quota_retry_after` once that
    many chat requests were answered 2xx. `token_limit` (OpenAI protocol) answers 429 to a
    chat request while the answers of the last 60 s used that many tokens, and every /v1/
    answer then says where that budget stands in `x-ratelimit-*-tokens` headers.
    `failure_rate` answers that share of chat
    requests 500, drawn from `random.Random(seed)`; `down` answers 503 everywhere.

    `rpm` imitates an LLM gateway's per-deployment limit (a LiteLLM proxy's `rpm`): at most
    that many chat requests per fixed window of `rpm_window` seconds, counted from the
    epoch (calendar minutes at 60, as LiteLLM keys its counters by the UTC minute); health
    requests are not counted. Beyond it 429 with `Retry-After` saying when the window turns,
    or with `rpm_queue` the request is held until a later window with room (at most one
    window ahead; 429 when there is none). `gateway_headers` answers as the proxy does: a
    429 carries its wait only as `llm_provider-retry-after: <rpm_window>` (the router's
    fixed 60), and every chat 2xx says `x-ratelimit-limit-requests` /
    `-remaining-requests` (and the `-tokens` pair with `token_limit`) with no reset.
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
    rate_limit_spacing: bool = False
    rate_limit_status: int = 429
    quota: int | None = None
    quota_retry_after: int = 3600
    token_limit: int | None = None
    rpm: int | None = None
    rpm_window: float = 60.0
    rpm_queue: bool = False
    gateway_headers: bool = False

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
        object.__setattr__(self, "capacity_schedule", check_schedule(owner, self.capacity_schedule))
        _check_bool(owner, "capacity_retry_after", self.capacity_retry_after)
        _check_bool(owner, "rate_limit_retry_after", self.rate_limit_retry_after)
        _check_bool(owner, "rate_limit_spacing", self.rate_limit_spacing)
        if self.rate_limit_status not in (429, 503) or isinstance(self.rate_limit_status, bool):
            raise SettingError(
                f"{owner} rate_limit_status must be 429 or 503, got {self.rate_limit_status!r}"
            )
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
            "rpm",
            self.rpm,
            what="a whole number of chat requests per window >= 1",
            low=1,
            integer=True,
            optional=True,
        )
        _check_number(
            owner, "rpm_window", self.rpm_window, what="seconds > 0", low_open=True, high=3600.0
        )
        _check_bool(owner, "rpm_queue", self.rpm_queue)
        _check_bool(owner, "gateway_headers", self.gateway_headers)
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
