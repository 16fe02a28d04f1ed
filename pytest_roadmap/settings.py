"""One resolver for every setting: command line, then environment, then ini, then default.

Each value remembers where it came from, so an error can say "from environment variable
RATE_LIMIT" instead of leaving the user to guess. This module knows nothing of pytest: the
plugin hands it the raw values through `Sources`.

A setting is defined in one place: a module-level `Spec` constant (its option, environment
variable, ini key, parser with its range, default and help). From it come the option and
ini key the plugin registers (`SPECS`, the module's `Spec`s in order), the lookup in
each source, and the `Settings` field of the constant's name in lower case (`RATE_LIMIT`
fills `rate_limit`): add a `Spec` and its typed field, and nothing else. The few values
that no single setting decides (workers, the token, the health path's default) are derived
by hand in `resolve_settings`. The entry point does not import this module: it registers
the options from option_table.py, the literals `option_table_text` writes from `SPECS`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Generic, TypeVar

from pytest_roadmap.budgets import check_budget_settings
from pytest_roadmap.errors import SettingError
from pytest_roadmap.pacing import MODES as ADAPTIVE_MODES
from pytest_roadmap.protocol import BEAST, OPENAI, PROTOCOLS
from pytest_roadmap.protocol import NAMES as PROTOCOL_NAMES
from pytest_roadmap.validation import Range, duration, plain

T = TypeVar("T")

SANDBOX = "sandbox"
TOKEN_ENV = "BEAST_MODE_TOKEN"
OPENAI_KEY = "OPENAI_API_KEY"  # the token with the openai protocol when TOKEN_ENV is unset


@dataclass(frozen=True)
class Spec(Generic[T]):
    """How one setting is named in each source, parsed, and defaulted."""

    name: str  # words for messages: "rate limit"
    option: str | None  # "--roadmap-rate-limit"
    env: str | None  # "RATE_LIMIT"
    ini: str | None  # "roadmap_rate_limit"
    default: T  # the Settings value when no source sets it
    parse: Callable[[str, str], T]  # (raw text, source kind) -> value
    allowed: str = ""  # "a number > 0"; "": the words of a `Number` or `Integer` parser
    help: str = ""
    # A path: relative ones are placed like pytest's (see `_place`); "" stands for None.
    path: bool = False
    # False: another plugin registers the option and ini key (pytest-rerunfailures' --reruns).
    ours: bool = True
    # The default in words, where its value says too little ("" for None, a value kept in
    # other units); "": the value as a user writes it (`shown_default`).
    default_words: str = ""

    def __post_init__(self) -> None:
        if not self.allowed:
            words = getattr(self.parse, "allowed", "")
            if not words:
                raise TypeError(f"setting {self.name!r} says nothing of what is allowed")
            object.__setattr__(self, "allowed", words)

    @property
    def dest(self) -> str:
        return (self.option or self.name).lstrip("-").replace("-", "_").replace(" ", "_")

    @property
    def shown_default(self) -> str:
        """The default as the settings page and a user write it: "10", "2000" (a setting
        given in milliseconds), "none"."""
        if self.default_words:
            return self.default_words
        value: Any = self.default
        if value is None or value == "" or value == ():
            return "none"
        if isinstance(self.parse, Number | Rate):
            unit = self.parse.range.unit
            scale = self.parse.scale if isinstance(self.parse, Number) else 1.0
            return plain(value / scale) + (f" {unit}" if unit else "")
        if isinstance(value, int | float):
            return plain(value)
        return str(value)


class Sources:
    """The raw texts a setting can come from; the pytest layer fills it in."""

    def __init__(
        self,
        options: Mapping[str, Any],
        env: Mapping[str, str],
        ini: Mapping[str, Any],
        invocation_dir: Path,
        rootdir: Path,
    ) -> None:
        self.options = options
        self.env = env
        self.ini = ini
        self.invocation_dir = invocation_dir
        self.rootdir = rootdir

    def lookup(self, spec: Spec[Any]) -> tuple[str, str] | None:
        """(raw value, where it came from), or None when no source sets it."""
        if spec.option is not None:
            value = self.options.get(spec.dest)
            if value is not None:
                return str(value), f"option {spec.option}"
        if spec.env is not None:
            value = self.env.get(spec.env)
            if value is not None and value != "":
                return value, f"environment variable {spec.env}"
        if spec.ini is not None:
            value = self.ini.get(spec.ini)
            if value not in (None, "", []):
                return str(value), f"ini key {spec.ini}"
        return None


def resolve(spec: Spec[T], sources: Sources) -> tuple[T, str]:
    """The value of one setting and where it came from ("default" when from nowhere)."""
    found = sources.lookup(spec)
    if found is None:
        return spec.default, "default"
    raw, origin = found
    try:
        return spec.parse(raw, origin), origin
    except (ValueError, OverflowError):
        shown = raw if len(raw) <= 60 else raw[:57] + "..."
        raise SettingError(
            f"invalid {spec.name} {shown!r} from {origin}: must be {spec.allowed}"
        ) from None


# Parsers: each raises ValueError for a value that is not allowed. Texts are stripped by
# the parsers that allow it; numbers are taken only as a person types them.

# ASCII digits with an optional fraction: float() and int() would also take full-width and
# other Unicode digits, "1_0", "1e-300", "inf" and surrounding spaces.
_DECIMAL = r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_WHOLE = r"-?[0-9]+"


def _decimal(raw: str) -> float:
    if not re.fullmatch(_DECIMAL, raw):
        raise ValueError(raw)
    return float(raw)


@dataclass(frozen=True)
class Number:
    """A decimal number in `range` (its words are the setting's `allowed`), times `scale`:
    a setting given in milliseconds is kept in seconds with `scale=0.001`."""

    range: Range
    scale: float = 1.0

    @property
    def allowed(self) -> str:
        return self.range.allowed

    def __call__(self, raw: str, origin: str) -> float:
        value = _decimal(raw)
        if not self.range.allows(value):  # a string of digits too long for a float is inf
            raise ValueError(raw)
        return value * self.scale


@dataclass(frozen=True)
class Integer:
    """A whole number in `range`, written with ASCII digits only."""

    range: Range

    @property
    def allowed(self) -> str:
        return self.range.allowed

    def __call__(self, raw: str, origin: str) -> int:
        if not re.fullmatch(_WHOLE, raw):
            raise ValueError(raw)
        value = int(raw)
        if not self.range.allows(value):
            raise ValueError(raw)
        return value


# The units a rate may carry after a slash, in seconds: API providers state their limits
# per minute ("500/min"); a bare number is in the setting's own unit.
RATE_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0}


@dataclass(frozen=True)
class Rate:
    """A rate in `range`, kept per `per` seconds (1: per second, 60: per minute): a bare
    decimal number is in that unit, "N/s" or "N/min" (also /sec, /second, /m, /minute) in
    its own, converted. `example` shows both ways in the words."""

    range: Range
    per: float
    example: str

    @property
    def allowed(self) -> str:
        return f"{self.range.allowed}, or with its unit, such as {self.example}"

    def __call__(self, raw: str, origin: str) -> float:
        number, slash, unit = raw.partition("/")
        value = _decimal(number)
        if slash:
            seconds = RATE_UNITS.get(unit)
            if seconds is None:
                raise ValueError(raw)
            value = value * self.per / seconds
        if not self.range.allows(value):
            raise ValueError(raw)
        return value


def _number(low: float, high: float, unit: str = "", *, scale: float = 1.0) -> Number:
    """A decimal number from `low` to `high` (of `unit`, for the words)."""
    return Number(Range(low, high, unit=unit), scale)


def _integer(low: int, high: int, *, note: str = "") -> Integer:
    """An integer from `low` to `high`; `note` follows the words in parentheses."""
    return Integer(Range(low, high, integer=True, note=note))


# One request per 100 s is slower than any roadmap runs; far below it the limiter's
# interval overflows (1e-300 per second).
MIN_RATE = 0.01
MAX_RATE = 1_000_000.0
# Below a tenth of a second no API answers, and the per-attempt timers stop meaning anything.
MIN_TIMEOUT = 0.1
MAX_TIMEOUT = 86400.0
# A token limit below one token a minute means nothing; above this no provider sells.
MIN_TOKEN_RATE = 1.0
MAX_TOKEN_RATE = 100_000_000.0
MAX_PRICE = 1_000_000.0  # per million tokens
# A task's timeout, from the settings or a task file.
TIMEOUT_SECONDS = Range(MIN_TIMEOUT, MAX_TIMEOUT, unit="seconds")


def _timeout(raw: str, origin: str) -> float:
    # TASK_TIMEOUT keeps the original system's milliseconds; everywhere else it is seconds.
    value = _decimal(raw)
    if origin.startswith("environment"):
        value /= 1000.0
    if not TIMEOUT_SECONDS.allows(value):
        raise ValueError(raw)
    return value


def _text(raw: str, origin: str) -> str:
    raw = raw.strip()
    if not raw:
        raise ValueError(raw)
    return raw


def _api(raw: str, origin: str) -> str:
    raw = raw.strip()
    if raw == SANDBOX:
        return raw
    if (
        not raw.startswith(("http://", "https://"))
        or len(raw) < 10
        or any(c.isspace() for c in raw)
    ):
        raise ValueError(raw)
    return raw.rstrip("/")


def _path_text(raw: str, origin: str) -> str:
    raw = raw.strip()
    if not raw or "\0" in raw:
        raise ValueError(raw)
    return raw


def _health_path(raw: str, origin: str) -> str:
    raw = raw.strip()
    if not raw.startswith("/") or any(c.isspace() for c in raw):
        raise ValueError(raw)
    return raw


API = Spec[str](
    "API URL",
    "--roadmap-api",
    "BEAST_MODE_API",
    "roadmap_api",
    SANDBOX,
    _api,
    "an http:// or https:// URL, or 'sandbox'",
    "Base URL of the code-generation API, or 'sandbox' for the embedded sandbox "
    "(env BEAST_MODE_API; default: sandbox).",
    default_words="sandbox (the embedded sandbox server)",
)
MODEL = Spec[str](
    "model",
    "--roadmap-model",
    "CUSTOM_MODEL",
    "roadmap_model",
    "custom:default",
    _text,
    "a non-empty model name",
    "Model asked for in each request (env CUSTOM_MODEL).",
)
MAX_WORKERS = 64
WORKERS = _integer(0, MAX_WORKERS, note="0: no worker processes, tasks run one at a time")
WORKERS_ALLOWED = WORKERS.allowed
# No Settings field of its name: resolve_settings reads it for `workers` when -n is not given.
CONCURRENCY = Spec[int](
    "concurrency",
    None,
    "MAX_CONCURRENCY",
    None,
    3,
    WORKERS,
    help="Workers when -n is not given.",
)
MAX_INFLIGHT = 256
INFLIGHT = Spec[int](
    "requests in flight per worker",
    "--roadmap-inflight",
    "ROADMAP_INFLIGHT",
    "roadmap_inflight",
    1,
    _integer(1, MAX_INFLIGHT),
    help="Task requests each worker keeps in flight (env ROADMAP_INFLIGHT; default 1): the "
    "run's concurrency is workers x this. Raise it rather than -n when answers are slow and "
    "the API takes many at once; the limits and budgets hold whatever it is.",
)
RATE_LIMIT = Spec[float](
    "rate limit",
    "--roadmap-rate-limit",
    "RATE_LIMIT",
    "roadmap_rate_limit",
    10.0,
    Rate(Range(MIN_RATE, MAX_RATE, unit="requests per second"), 1.0, "5/s or 300/min"),
    help="Requests per second across all workers, health probes included, or with a unit: "
    "500/min, 8/s (env RATE_LIMIT; default 10).",
)
BURST = Spec[int](
    "burst",
    "--roadmap-burst",
    None,
    "roadmap_burst",
    1,
    _integer(1, 10_000),
    help="Requests that may go out back to back (default 1).",
)
TIMEOUT = Spec[float](
    "task timeout",
    "--roadmap-timeout",
    "TASK_TIMEOUT",
    "roadmap_timeout",
    30.0,
    _timeout,
    f"{TIMEOUT_SECONDS.allowed} (TASK_TIMEOUT: milliseconds, from 100 to 86400000)",
    "Seconds per attempt (env TASK_TIMEOUT in milliseconds; default 30).",
    default_words="30 seconds",
)
TASKS_DIR = Spec[str](
    "tasks folder",
    "--roadmap-tasks",
    None,
    "roadmap_tasks",
    "roadmap_tasks",
    _path_text,
    "a folder path",
    "Folder of task files (default roadmap_tasks under the rootdir).",
    path=True,
    default_words="roadmap_tasks (under the rootdir)",
)
REPORT_DIR = Spec[str](
    "report folder",
    "--roadmap-report",
    None,
    "roadmap_report",
    "roadmap-report",
    _path_text,
    "a folder path",
    "Folder for report.json, report.md and report.html.",
    path=True,
)
TRACKER = Spec[str](
    "progress tracker",
    "--roadmap-tracker",
    None,
    "roadmap_tracker",
    "ROADMAP_PROGRESS.json",
    _path_text,
    "a file path",
    "Roadmap progress file to update (never on the sandbox).",
    path=True,
)
HEALTH_PATH = Spec[str](
    "health path",
    "--roadmap-health-path",
    None,
    "roadmap_health_path",
    PROTOCOLS[BEAST].health_path,
    _health_path,
    "a path starting with /",
    f"Path probed before each task (any 2xx is healthy); default {PROTOCOLS[BEAST].health_path}, "
    f"or {PROTOCOLS[OPENAI].health_path} with --roadmap-protocol openai.",
    default_words=f"{PROTOCOLS[BEAST].health_path} ({PROTOCOLS[OPENAI].health_path} with "
    "--roadmap-protocol openai)",
)
HEALTH_INTERVAL = Spec[float](
    "health interval",
    "--roadmap-health-interval",
    None,
    "roadmap_health_interval",
    5.0,
    _number(0.1, 3600, "seconds"),
    help="Seconds between monitoring ticks and concurrency adjustments (default 5).",
)
HEALTH_WAIT = Spec[float](
    "health wait",
    "--roadmap-health-wait",
    None,
    "roadmap_health_wait",
    60.0,
    _number(0, 86400, "seconds"),
    help="Seconds a task waits for an unhealthy API before it fails (default 60).",
)
RETRY_DELAY = Spec[float](
    "retry delay",
    "--roadmap-retry-delay",
    None,
    "roadmap_retry_delay",
    2.0,  # seconds, as Settings keeps it
    _number(0, 3_600_000, "milliseconds", scale=0.001),
    help="Milliseconds before the first retry (default 2000).",
)
BACKOFF = Spec[float](
    "backoff factor",
    "--roadmap-backoff",
    None,
    "roadmap_backoff",
    1.5,
    _number(1, 100),
    help="Factor the retry delay grows by after each attempt (default 1.5).",
)
MAX_DELAY = Spec[float](
    "maximum retry delay",
    "--roadmap-max-delay",
    None,
    "roadmap_max_delay",
    30.0,  # seconds, as Settings keeps it
    _number(1, 3_600_000, "milliseconds", scale=0.001),
    help="Cap on one retry delay, in milliseconds (default 30000).",
)
MAX_QUEUE = Spec[int](
    "queue limit",
    "--roadmap-max-queue",
    None,
    "roadmap_max_queue",
    100,
    _integer(0, 10_000_000, note="0: no limit"),
    help="Most tasks one run takes; the rest are skipped (0: no limit).",
)


def _adaptive(raw: str, origin: str) -> str:
    lowered = raw.strip().lower()
    if lowered in ADAPTIVE_MODES:
        return lowered
    # The ini key was a flag before the modes: true meant the adaptive rule, false none.
    if origin.startswith("ini") and lowered in ("true", "false"):
        return "aimd" if lowered == "true" else "off"
    raise ValueError(raw)


ADAPTIVE = Spec[str](
    "adaptive mode",
    "--roadmap-adaptive",
    None,
    "roadmap_adaptive",
    "aimd",
    _adaptive,
    "aimd, seed or off",
    "How the run learns the API's limits: aimd (default; each refusal for load halves the "
    "concurrency limit, a 429 lowers the send rate, both grow back), seed (the original "
    "system's rule: the limit moves by one per health interval), off (limit and rate as "
    "configured). Retry-After and rate-limit headers are obeyed in every mode.",
)
MAX_WAIT = Spec[float](
    "longest wait",
    "--roadmap-max-wait",
    None,
    "roadmap_max_wait",
    300.0,
    _number(1, 86400, "seconds"),
    help="Longest the run waits for an API that refuses for load or asks it to wait: a "
    "Retry-After beyond it means the quota is exhausted and the run stops starting tasks; a "
    "task refused for load longer than it fails (default 300).",
)
RERUNS = Spec[int](
    "reruns",
    "--reruns",
    None,
    "reruns",
    2,
    _integer(0, 100),
    help="Retries after the first attempt (default 2: 3 attempts).",
    ours=False,
)
CA_BUNDLE = Spec[str](
    "CA bundle",
    "--roadmap-ca-bundle",
    None,
    "roadmap_ca_bundle",
    "",
    _path_text,
    "a path to a PEM file",
    "CA bundle for TLS verification (verification is always on).",
    path=True,
    default_words="none: the system's CAs (verification is always on)",
)

BATCHES = Spec[str](
    "batch file",
    "--roadmap-batches",
    None,
    "roadmap_batches",
    "",
    _path_text,
    "a path to a JSON batch file",
    "Run in batch mode from this JSON batch file (the original BATCH_CONFIG.json format).",
    path=True,
    default_words="none: batch mode off",
)


SIZE_UNITS = {"": 1, "B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}
_SIZE = r"(?i)(\d+(?:\.\d+)?)\s*([KMG]?B?)"


def _size(low: int, high: int) -> Callable[[str, str], int]:
    def parse(raw: str, origin: str) -> int:
        match = re.fullmatch(_SIZE, raw)
        if match is None:
            raise ValueError(raw)
        unit = match.group(2).upper()
        value = float(match.group(1)) * SIZE_UNITS[unit if unit in SIZE_UNITS else unit + "B"]
        if not Range(low, high).allows(value):
            raise ValueError(raw)
        return int(value)

    return parse


def shown_size(size: int) -> str:
    """A byte count as the settings write it: "10 MB", "512 KB", "1000 bytes"."""
    for unit in ("GB", "MB", "KB"):
        if size % SIZE_UNITS[unit] == 0:
            return f"{size // SIZE_UNITS[unit]} {unit}"
    return f"{size} bytes"


_REDIRECT_HOST = r"([a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\])(:\d{1,5})?"


def _redirect_hosts(raw: str, origin: str) -> tuple[str, ...]:
    hosts = tuple(part for part in re.split(r"[\s,]+", raw.lower()) if part)
    if not hosts or not all(re.fullmatch(_REDIRECT_HOST, host) for host in hosts):
        raise ValueError(raw)
    return hosts


def _store_url(raw: str, origin: str) -> str:
    raw = raw.strip()
    if not raw.startswith(("sqlite://", "redis://", "rediss://")) or any(c.isspace() for c in raw):
        raise ValueError(raw)
    return raw


def _run_id(raw: str, origin: str) -> str:
    raw = raw.strip()
    if not re.fullmatch(RUN_ID_PATTERN, raw):
        raise ValueError(raw)
    return raw


RUN_ID_PATTERN = r"[A-Za-z0-9._-]{1,128}"

STORE = Spec[str](
    "store URL",
    "--roadmap-store",
    "ROADMAP_STORE",
    "roadmap_store",
    "",
    _store_url,
    "a redis://host:port/db or rediss:// URL (or sqlite:///path)",
    "Coordination store shared by every worker, e.g. redis://host:6379/0 for CI shards "
    "(env ROADMAP_STORE; default: an SQLite file private to the run).",
    default_words="an SQLite file private to the run",
)
RUN_ID = Spec[str](
    "run id",
    "--roadmap-run-id",
    "ROADMAP_RUN_ID",
    None,
    "",
    _run_id,
    "1 to 128 letters, digits, '.', '_' or '-'",
    "Runs with the same id share one rate limit, concurrency limit and batch order through "
    "the store (env ROADMAP_RUN_ID; default: a new id per run).",
    default_words="a new id per run",
)

SHARDS = Spec[int](
    "shards",
    "--roadmap-shards",
    "ROADMAP_SHARDS",
    "roadmap_shards",
    1,
    _integer(1, 1000),
    help="How many runs share the run id (CI shards): batches and dependencies wait until all "
    "of them have announced their tasks (env ROADMAP_SHARDS; default 1).",
)
SHARD_WAIT = Spec[float](
    "shard wait",
    "--roadmap-shard-wait",
    None,
    "roadmap_shard_wait",
    600.0,
    _number(0, 86400, "seconds"),
    help="Seconds a batch or dependency waits for the other shards to start before its task "
    "fails (default 600).",
)

DEFAULT_MAX_BODY = 10 << 20
MAX_BODY = Spec[int](
    "maximum answer size",
    "--roadmap-max-body",
    None,
    "roadmap_max_body",
    DEFAULT_MAX_BODY,
    _size(1 << 10, 1 << 30),
    "a size from 1KB to 1GB: bytes, or a number with KB, MB or GB (1024-based)",
    "Largest answer body read from the API, after decompression; a larger one fails the "
    "task (default 10MB).",
    default_words=shown_size(DEFAULT_MAX_BODY),
)
REDIRECT_HOSTS = Spec[tuple[str, ...]](
    "redirect hosts",
    "--roadmap-redirect-hosts",
    None,
    "roadmap_redirect_hosts",
    (),
    _redirect_hosts,
    "host names, each with an optional :port, separated by commas",
    "Other hosts the API may redirect requests to (the token is never sent there); "
    "default: none, a redirect is followed only on the API's own scheme, host and port.",
    default_words="none: redirects stay on the API's scheme, host and port",
)


def _protocol(raw: str, origin: str) -> str:
    lowered = raw.strip().lower()
    if lowered not in PROTOCOL_NAMES:
        raise ValueError(raw)
    return lowered


PROTOCOL = Spec[str](
    "protocol",
    "--roadmap-protocol",
    "ROADMAP_PROTOCOL",
    "roadmap_protocol",
    BEAST,
    _protocol,
    " or ".join(PROTOCOL_NAMES),
    f"The API's protocol: beast (POST {{api}}{PROTOCOLS[BEAST].chat_path}, the default) or openai "
    f"(POST {{api}}{PROTOCOLS[OPENAI].chat_path}, with {{api}} like https://host/v1) "
    "(env ROADMAP_PROTOCOL).",
)
TOKEN_RATE = Spec[float | None](
    "token rate",
    "--roadmap-token-rate",
    None,
    "roadmap_token_rate",
    None,
    Rate(
        Range(MIN_TOKEN_RATE, MAX_TOKEN_RATE, unit="tokens per minute"), 60.0, "90000/min or 1500/s"
    ),
    help="Tokens per minute across all workers and shards (prompt and completion, as the "
    "answers' usage counts them), or with a unit: 90000/min, 1500/s; default: no token limit.",
    default_words="none: no token limit",
)
PRICE_IN = Spec[float | None](
    "input price",
    "--roadmap-price-in",
    None,
    "roadmap_price_in",
    None,
    Number(Range(0, MAX_PRICE, noun="a price per million prompt tokens")),
    help="Price per million prompt tokens: report.json and the reports show each task's cost "
    "(default: no price, no cost).",
    default_words="none: no cost",
)
PRICE_OUT = Spec[float | None](
    "output price",
    "--roadmap-price-out",
    None,
    "roadmap_price_out",
    None,
    Number(Range(0, MAX_PRICE, noun="a price per million completion tokens")),
    help="Price per million completion tokens (default: no price, no cost).",
    default_words="none: no cost",
)
MAX_RETRIES = Spec[int | None](
    "retry budget",
    "--roadmap-max-retries",
    "ROADMAP_MAX_RETRIES",
    "roadmap_max_retries",
    None,
    _integer(0, 10_000_000),
    help="Retries across the whole run, every worker and shard sharing the store; once spent, "
    "failures are final (env ROADMAP_MAX_RETRIES; default: only --reruns per task).",
    default_words="none: only --reruns per task",
)
MAX_TOKENS = Spec[int | None](
    "token budget",
    "--roadmap-max-tokens",
    "ROADMAP_MAX_TOKENS",
    "roadmap_max_tokens",
    None,
    Integer(Range(1, 1_000_000_000_000, integer=True, noun="an integer number of tokens")),
    help="Tokens the whole run may use (openai protocol): a task starts only if its prompt "
    "plus max_tokens fits; once spent, the rest are skipped (env ROADMAP_MAX_TOKENS).",
    default_words="none: no budget",
)
MAX_COST = Spec[float | None](
    "cost budget",
    "--roadmap-max-cost",
    "ROADMAP_MAX_COST",
    "roadmap_max_cost",
    None,
    Number(Range(0.000001, MAX_PRICE, noun="a number of US dollars")),
    help="US dollars the whole run may spend at --roadmap-price-in/-out (openai protocol): a "
    "task starts only if its most expensive answer fits (env ROADMAP_MAX_COST).",
    default_words="none: no budget",
)


def _duration(low: float, high: float) -> Callable[[str, str], float | None]:
    """Seconds from "8s", "45m", "1h30m", "500ms" or a bare number of seconds."""
    seconds = Range(low, high, unit="seconds")

    def parse(raw: str, origin: str) -> float | None:
        value = duration(raw)
        if value is None or not seconds.allows(value):
            raise ValueError(raw)
        return value

    return parse


MAX_DEADLINE = 7 * 86400.0
DEADLINE = Spec[float | None](
    "deadline",
    "--roadmap-deadline",
    "ROADMAP_DEADLINE",
    "roadmap_deadline",
    None,
    _duration(1.0, MAX_DEADLINE),
    "a duration from 1s to 168h, such as 8s, 45m, 1h30m or 90 (seconds)",
    "Time the run may take from its start, e.g. 45m: when the remaining tasks cannot "
    "finish in time, the lowest-priority ones are not started (skipped, naming the "
    "deadline); time to write the reports and the tracker is kept (env ROADMAP_DEADLINE).",
    default_words="none: no deadline",
)
EXPECTED_LATENCY = Spec[float | None](
    "expected latency",
    "--roadmap-expected-latency",
    "ROADMAP_EXPECTED_LATENCY",
    "roadmap_expected_latency",
    None,
    _duration(0.001, MAX_TIMEOUT),
    "a duration from 1ms to 24h, such as 800ms, 2s or 1.5 (seconds)",
    "Seconds one request takes, for --roadmap-plan and the deadline's first forecast "
    "(default: what the last report measured for these tasks) (env ROADMAP_EXPECTED_LATENCY).",
    default_words="what the last report measured for these tasks",
)

CHECK_RETRIES = Spec[int](
    "check retries",
    "--roadmap-check-retries",
    "ROADMAP_CHECK_RETRIES",
    "roadmap_check_retries",
    0,
    _integer(0, 100),
    help="New answers asked for when an answer fails its checks (a task's check_retries "
    "wins; env ROADMAP_CHECK_RETRIES; default 0: a wrong answer fails the task).",
)
CHECK_TIMEOUT = Spec[float](
    "check timeout",
    "--roadmap-check-timeout",
    "ROADMAP_CHECK_TIMEOUT",
    "roadmap_check_timeout",
    60.0,
    _number(0.1, MAX_TIMEOUT, "seconds"),
    help="Seconds a command check may run before its whole process group is killed (a "
    "check's own timeout wins; env ROADMAP_CHECK_TIMEOUT; default 60).",
)
GRADER_MODEL = Spec[str | None](
    "grader model",
    "--roadmap-grader-model",
    "ROADMAP_GRADER_MODEL",
    "roadmap_grader_model",
    None,
    _text,
    "a non-empty model name",
    "Model that grades rubric checks, through the same API and safeguards (env "
    "ROADMAP_GRADER_MODEL; default: the run's model).",
    default_words="the run's model (--roadmap-model)",
)


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know, resolved once, immutable.

    Each field is filled by the `Spec` constant of its name in upper case; `workers`,
    `token` and `origins` are derived in `resolve_settings`.
    """

    api: str  # a base URL, or "sandbox" until the controller starts it
    model: str
    token: str | None = field(repr=False)
    workers: int
    rate_limit: float
    inflight: int  # task requests each worker keeps in flight (--roadmap-inflight)
    burst: int
    timeout: float
    tasks_dir: Path
    report_dir: Path
    tracker: Path
    health_path: str
    health_interval: float
    health_wait: float
    max_wait: float
    retry_delay: float  # seconds
    backoff: float
    max_delay: float  # seconds
    max_queue: int
    adaptive: str  # aimd | seed | off
    reruns: int
    ca_bundle: Path | None
    batches: Path | None = None
    store: str = ""
    run_id: str = ""
    shards: int = 1
    shard_wait: float = 600.0
    max_body: int = MAX_BODY.default  # bytes, after decompression
    redirect_hosts: tuple[str, ...] = ()
    protocol: str = BEAST  # beast | openai (protocol.py)
    token_rate: float | None = None  # tokens per minute, all workers
    price_in: float | None = None  # per million prompt tokens
    price_out: float | None = None  # per million completion tokens
    max_retries: int | None = None  # retries of the whole run (budgets.py)
    max_tokens: int | None = None  # tokens of the whole run
    max_cost: float | None = None  # US dollars of the whole run
    deadline: float | None = None  # seconds from the run's start (deadline.py)
    expected_latency: float | None = None  # seconds a request takes, as the user expects
    check_retries: int = 0  # new answers when one fails its checks (checks/)
    check_timeout: float = 60.0  # seconds a command check may run
    grader_model: str | None = None  # rubric checks' model (None: the run's)
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def sandbox(self) -> bool:
        return self.api == SANDBOX


def place(raw: str, origin: str, sources: Sources) -> Path:
    """A path setting's value as a Path: relative ones placed as pytest places them."""
    path = Path(raw).expanduser()
    if path.is_absolute():
        return path
    # Like pytest: paths from the command line or environment are relative to where pytest
    # was started; ini values and defaults are relative to the rootdir.
    base = sources.invocation_dir if origin.startswith(("option", "env")) else sources.rootdir
    return base / path


# Every setting, in the module's order: the settings page lists them all.
EVERY_SPEC: tuple[Spec[Any], ...] = tuple(
    value for value in dict(globals()).values() if isinstance(value, Spec)
)
# The settings whose `--option` and ini key the plugin registers, in the order --help lists them.
SPECS: tuple[Spec[Any], ...] = tuple(spec for spec in EVERY_SPEC if spec.ours)
# The Settings field each spec fills: the one named like its constant (RATE_LIMIT: rate_limit).
FIELD_SPECS: Mapping[str, Spec[Any]] = {
    name.lower(): value
    for name, value in dict(globals()).items()
    if isinstance(value, Spec) and name.lower() in {f.name for f in fields(Settings)}
}
# The fields no one setting decides.
DERIVED = ("workers", "token", "origins")


def resolve_settings(sources: Sources, workers: int | None) -> Settings:
    """Resolve every setting; raises SettingError naming the first bad one."""
    origins: dict[str, str] = {}

    def get(spec: Spec[T]) -> T:
        value, origin = resolve(spec, sources)
        origins[spec.name] = origin
        return value

    values: dict[str, Any] = {}
    for name, spec in FIELD_SPECS.items():
        if spec is ADAPTIVE and sources.options.get("no_roadmap_adaptive"):
            values[name] = "off"  # the flag wins over any mode, and reads none
            continue
        value = get(spec)
        if spec.path:
            value = place(value, origins[spec.name], sources) if value else None
        values[name] = value

    if workers is None:
        workers = get(CONCURRENCY)
    protocol = values["protocol"]
    token_name = TOKEN_ENV
    if protocol == OPENAI and not sources.env.get(token_name) and sources.env.get(OPENAI_KEY):
        token_name = OPENAI_KEY  # what OpenAI-compatible tools read
    token = sources.env.get(token_name) or None
    if token is not None and any(c.isspace() for c in token):
        raise SettingError(
            f"invalid token from environment variable {token_name}: must not contain "
            "spaces or line breaks"
        )
    if origins[HEALTH_PATH.name] == "default":
        values["health_path"] = PROTOCOLS[protocol].health_path
    ca_path = values["ca_bundle"]
    if ca_path is not None and not ca_path.is_file():
        raise SettingError(
            f"invalid CA bundle {resolve(CA_BUNDLE, sources)[0]!r} from {origins[CA_BUNDLE.name]}: "
            "must be a path to a PEM file"
        )
    check_budget_settings(
        protocol, values["max_tokens"], values["max_cost"], values["price_in"], values["price_out"]
    )
    return Settings(**values, workers=max(1, workers), token=token, origins=origins)


def concurrency_from_env(env: Mapping[str, str]) -> int:
    """Workers for `-n` when it was not given: MAX_CONCURRENCY or 3."""
    sources = Sources({}, env, {}, Path("."), Path("."))
    return resolve(CONCURRENCY, sources)[0]


def check_workers(value: object) -> None:
    """`-n` obeys the rule MAX_CONCURRENCY does; xdist's own "auto" and "logical" pass."""
    if value in ("auto", "logical"):
        return
    if WORKERS.range.allows(value):
        return
    shown = str(value) if len(str(value)) <= 60 else str(value)[:57] + "..."
    raise SettingError(f"invalid worker count {shown!r} from option -n: must be {WORKERS_ALLOWED}")


def option_table_text() -> str:
    """The text of option_table.py: what registering the options needs, as literals.

    Every pytest run of a project that installs the plugin registers the options; importing
    this module for them cost such a run about 10 ms (docs/benchmarks.md), the literals
    nothing measurable. tests/unit/test_settings.py fails while the file differs from this.
    """
    rows = "".join(
        f"    ({spec.option!r}, {spec.dest!r}, {spec.ini!r}, {spec.help!r}),\n" for spec in SPECS
    )
    return (
        '"""The settings\' options and ini keys, as literals. Generated: do not edit.\n\n'
        "After changing a Spec in settings.py, write it again with\n\n"
        "    python -m pytest_roadmap.settings > pytest_roadmap/option_table.py\n"
        "    ruff format pytest_roadmap/option_table.py\n"
        '"""\n\n'
        "# (option, dest, ini key, help) of each setting, in the order --help lists them.\n"
        f"OPTIONS: tuple[tuple[str | None, str, str | None, str], ...] = (\n{rows})\n"
        "# Where the tasks folder's value may come from, and its default (options.tasks_dir_of).\n"
        f"TASKS_DIR_DEST: str = {TASKS_DIR.dest!r}\n"
        f"TASKS_DIR_ENV: str | None = {TASKS_DIR.env!r}\n"
        f"TASKS_DIR_INI: str | None = {TASKS_DIR.ini!r}\n"
        f"TASKS_DIR_DEFAULT: str = {TASKS_DIR.default!r}\n"
    )


if __name__ == "__main__":
    import sys

    sys.stdout.write(option_table_text())
