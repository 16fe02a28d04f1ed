"""The `roadmap-sandbox` command."""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TypeVar

from pytest_roadmap.errors import SettingError
from pytest_roadmap.sandbox.config import RATE_LIMIT_HEADERS, SandboxConfig, check_schedule
from pytest_roadmap.sandbox.server import SandboxServer

DEFAULT_PORT = 3000
_Number = TypeVar("_Number", int, float)


def number_argument(
    convert: Callable[[str], _Number], what: str, check: Callable[[_Number], bool]
) -> Callable[[str], _Number]:
    """An argparse type: bad values become one usage line, never a traceback (the
    benchmarks' command lines use it too)."""

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
        check_schedule("sandbox setting", steps)
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
        type=number_argument(int, "a port from 0 to 65535", lambda v: 0 <= v <= 65535),
        default=DEFAULT_PORT,
        help=f"port to listen on, 0 for any free one (default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--latency-ms",
        type=number_argument(float, "milliseconds >= 0", lambda v: finite(v) and v >= 0),
        default=0.0,
        help="delay before each chat answer",
    )
    parser.add_argument(
        "--capacity",
        type=number_argument(int, "a whole number >= 0", lambda v: v >= 0),
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
        type=number_argument(float, "requests per second > 0", lambda v: finite(v) and v > 0),
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
        "--rate-limit-spacing",
        action="store_true",
        help="count --rate-limit as nginx's limit_req without burst: a request sooner than "
        "1/rate after the last admitted one is refused",
    )
    parser.add_argument(
        "--rate-limit-status",
        type=int,
        choices=(429, 503),
        default=429,
        help="the status of a refusal over --rate-limit (nginx answers 503 by default)",
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
        type=number_argument(int, "a whole number >= 0", lambda v: v >= 0),
        default=None,
        help="after this many chat answers 2xx, answer every /api/ request 429",
    )
    parser.add_argument(
        "--quota-retry-after",
        type=number_argument(int, "whole seconds >= 0", lambda v: v >= 0),
        default=3600,
        help="Retry-After of the --quota 429 (default 3600)",
    )
    parser.add_argument(
        "--token-limit",
        type=number_argument(int, "a whole number >= 1", lambda v: v >= 1),
        default=None,
        help="OpenAI protocol: answer 429 while the last minute's answers used this many "
        "tokens, and send x-ratelimit-*-tokens headers",
    )
    parser.add_argument(
        "--rpm",
        type=number_argument(int, "a whole number >= 1", lambda v: v >= 1),
        default=None,
        help="an LLM gateway's limit: most chat requests per fixed window (a calendar "
        "minute unless --rpm-window), beyond it 429",
    )
    parser.add_argument(
        "--rpm-window",
        type=number_argument(float, "seconds > 0", lambda v: finite(v) and 0 < v <= 3600),
        default=60.0,
        help="length of the --rpm window, counted from the epoch (default 60)",
    )
    parser.add_argument(
        "--rpm-queue",
        action="store_true",
        help="hold a chat request over --rpm until a window with room (at most one "
        "window ahead) instead of refusing it",
    )
    parser.add_argument(
        "--gateway-headers",
        action="store_true",
        help="answer as a LiteLLM proxy: 429s say llm_provider-retry-after and no "
        "Retry-After, chat 2xx say x-ratelimit-limit/remaining-requests (and -tokens) "
        "with no reset",
    )
    parser.add_argument(
        "--failure-rate",
        type=number_argument(float, "a share from 0 to 1", lambda v: 0 <= v <= 1),
        default=0.0,
        help="share of chat requests that answer 500",
    )
    parser.add_argument(
        "--seed",
        type=number_argument(int, "a whole number", lambda v: True),
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
        rate_limit_spacing=args.rate_limit_spacing,
        rate_limit_status=args.rate_limit_status,
        quota=args.quota,
        quota_retry_after=args.quota_retry_after,
        token_limit=args.token_limit,
        rpm=args.rpm,
        rpm_window=args.rpm_window,
        rpm_queue=args.rpm_queue,
        gateway_headers=args.gateway_headers,
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
