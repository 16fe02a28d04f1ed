"""The tokens-per-minute limit: a roadmap run on the OpenAI protocol, judged from the
sandbox's log.

The sandbox (its own process, OpenAI protocol under /v1, `--latency-ms` per answer) counts
every answer's tokens as protocol.py does. M tasks of about T tokens each (a prompt of
T - 8 tokens and `max_tokens = 8`, which the sandbox's answers always reach) run as
`pytest --roadmap --roadmap-protocol openai --roadmap-token-rate N -n W` in a subprocess.
With `--no-max-tokens` the tasks leave `max_tokens` out and the budget learns the
completion from the answers (the first requests reserve DEFAULT_COMPLETION instead).

From the log: the most tokens in any sliding 60 s window (at most N), the span from the
first chat request to the last, and what a server counting tokens per sliding minute
allows: the same requests, in the order they arrived and with the tokens they used, each
taken as early as the window before it has room, the first at 0 (`sliding_needed_s`, the
last one's time; `sliding_ratio` is span / that). Also, as earlier rows measured it, the
span against an even spread at the limit, (total - last) / (N / 60) seconds (`span_ratio`),
and the whole run, process start to exit, against total / (N / 60) (`wall_ratio`).

    python benchmarks/token_bench.py                       # -n 4, 20 tasks of 300, 3000/min
    python benchmarks/token_bench.py --repeat 3 --json tokens.json
    python benchmarks/token_bench.py --rate-limit 0.5      # the request limit binds too
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from command_line import BenchmarkParser, settings_of
from harness import Sandbox, emit, median, pytest_command, show_command, timed

from pytest_roadmap.protocol import MESSAGE_TOKENS, REPLY_TOKENS
from pytest_roadmap.sandbox import OPENAI_CHAT, max_tokens_in_window
from pytest_roadmap.store.base import window_place

COMPLETION = 8


def write_tasks(folder: Path, count: int, tokens: int, max_tokens: bool) -> None:
    prompt_tokens = tokens - COMPLETION - MESSAGE_TOKENS - REPLY_TOKENS
    tables = []
    for index in range(count):
        head = f"Task {index:03d}: write a function. "
        prompt = (head + "Explain each step. " * 200)[: prompt_tokens * 4]
        extra = f"max_tokens = {COMPLETION}\n" if max_tokens else ""
        tables.append(
            f'[[tasks]]\nid = "t{index:03d}"\ntitle = "Task {index}"\n'
            f'prompt = "{prompt}"\nmonth = 1\nweek = 1\n{extra}'
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tasks.toml").write_text("\n".join(tables), encoding="utf-8")


def sliding_minute_bound(usages: list[int], per_minute: float) -> float:
    """When a server counting `per_minute` tokens in any sliding 60 s takes the last of
    requests of `usages` tokens, sent in that order each as early as it allows."""
    placed: list[tuple[float, int]] = []
    for amount in usages:
        placed.append((window_place(0.0, placed, amount, 60.0, per_minute), amount))
    return placed[-1][0] if placed else 0.0


def one_run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    with Sandbox(latency_ms=args.latency_ms) as sandbox:
        write_tasks(root / "roadmap_tasks", args.tasks, args.tokens, not args.no_max_tokens)
        (root / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
        command = [
            *pytest_command(),
            "-n",
            str(args.workers),
            "--roadmap-protocol",
            "openai",
            "--roadmap-api",
            sandbox.url + "/v1",
            "--roadmap-token-rate",
            f"{args.rate:g}",
        ]
        if args.rate_limit is not None:
            command += ["--roadmap-rate-limit", f"{args.rate_limit:g}"]
        run = timed(command, root, timeout=args.timeout)
        entries = [e for e in sandbox.log() if e["path"] == OPENAI_CHAT]
    usages = [int(e["usage"]["total"]) for e in entries if e["usage"]]
    arrivals = sorted(float(e["arrived"]) for e in entries)
    total = sum(usages)
    per_second = args.rate / 60.0
    last = int(max(entries, key=lambda e: e["arrived"])["usage"]["total"]) if entries else 0
    needed = (total - last) / per_second
    span = arrivals[-1] - arrivals[0] if arrivals else 0.0
    busiest = max_tokens_in_window(entries, 60.0)
    in_order = sorted((e for e in entries if e["usage"]), key=lambda e: float(e["arrived"]))
    sliding = sliding_minute_bound([int(e["usage"]["total"]) for e in in_order], args.rate)
    return {
        "returncode": run.returncode,
        "chat_requests": len(entries),
        "refused": sum(1 for e in entries if e["status"] != 200),
        "tokens_total": total,
        "largest_request": max(usages, default=0),
        "max_tokens_in_60s": busiest,
        "bound_60s": args.rate,
        "span_s": round(span, 2),
        "sliding_needed_s": round(sliding, 2),
        "sliding_ratio": round(span / sliding, 3) if sliding else None,
        "needed_s": round(needed, 2),
        "span_ratio": round(span / needed, 3) if needed else None,
        "wall_s": round(run.wall, 2),
        "wall_ratio": round(run.wall / (total / per_second), 3) if total else None,
        "tail": run.tail(2),
        "command": show_command(command, sandbox.url),
    }


def main() -> int:
    parser = BenchmarkParser(__doc__)
    parser.workers(4)
    parser.tasks(20)
    parser.add_argument("--tokens", type=int, default=300, help="tokens per task")
    parser.rate(3000.0, help="tokens per minute")
    parser.latency(250.0)
    parser.add_argument("--no-max-tokens", action="store_true")
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        help="--roadmap-rate-limit of the run (requests a second): a limit that queues the "
        "requests a minute's tokens release at once",
    )
    parser.repeat(1)
    parser.timeout(900.0)
    parser.output()
    args = parser.parse_args()
    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="token-bench-") as folder:
            runs.append(one_run(args, Path(folder)))
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
        time.sleep(1.0)
    result = {
        "settings": settings_of(args),
        "runs": runs,
        "median_sliding_ratio": median(r["sliding_ratio"] or 0.0 for r in runs),
        "median_span_ratio": median(r["span_ratio"] or 0.0 for r in runs),
        "median_wall_ratio": median(r["wall_ratio"] or 0.0 for r in runs),
        "every_minute_within_bound": all(r["max_tokens_in_60s"] <= r["bound_60s"] for r in runs),
    }
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
