"""Goodput and refusals against a server of small capacity, with and without adaptive concurrency.

A sandbox (its own process) answers at most `--capacity` chat requests at once (503
beyond) with latency L, so no client can finish more than capacity/L tasks per second.
M tasks run with `pytest --roadmap -n N`, once as is and once with
`--no-roadmap-adaptive`, alternating, `--repeat` times each. Goodput is passed tasks per
second, over the process's wall time (start-up included) and over the server's span
(first request to last answer); refused is the share of chat requests answered 503.
Concurrency changes come from the run's report.json.

    python benchmarks/adaptive_bench.py --capacity 2 --latency-ms 200 --tasks 60 --workers 6
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from command_line import BenchmarkParser, settings_of
from harness import (
    Sandbox,
    emit,
    median,
    roadmap_command,
    show_command,
    timed,
    traffic,
    write_tasks,
)

NO_LIMIT = 1000.0


def measure(
    sandbox: Sandbox, command: list[str], cwd: Path, timeout: float, capacity: int, latency: float
) -> dict[str, Any]:
    sandbox.reset()
    started = time.time()
    run = timed(command, cwd, timeout)
    seen = traffic(sandbox.log())
    report = json.loads((cwd / "roadmap-report" / "report.json").read_text(encoding="utf-8"))
    passed = int(report["totals"]["passed"])
    bound = capacity / latency
    refused = seen.statuses.get(503, 0)
    return {
        "wall_s": run.wall,
        "passed": passed,
        "failed": int(report["totals"]["failed"]),
        "goodput_wall": passed / run.wall,
        "goodput_wall_over_bound": passed / run.wall / bound,
        "goodput_server": passed / (seen.last_answer - seen.first),
        "goodput_server_over_bound": passed / (seen.last_answer - seen.first) / bound,
        "chat": seen.chat,
        "refused": refused,
        "refused_share": refused / seen.chat if seen.chat else 0.0,
        "health": seen.health,
        "startup_s": seen.first - started,
        "changes": [
            f"{c['from']}->{c['to']}" for c in report["run"].get("concurrency_changes", [])
        ],
    }


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.add_argument("--capacity", type=int, default=2, help="sandbox chat requests at once")
    parser.latency(200.0)
    parser.tasks(60)
    parser.workers(6)
    parser.add_argument("--health-interval", type=float, default=1.0, help="seconds")
    parser.add_argument("--retry-delay", type=float, default=200.0, help="milliseconds")
    parser.add_argument("--reruns", type=int, default=5, help="retries after the first attempt")
    parser.repeat(3, help="runs of each mode (median)")
    parser.timeout(300.0)
    parser.output()
    options = parser.parse_args()

    latency = options.latency_ms / 1000.0
    knobs = [
        "--roadmap-health-interval",
        f"{options.health_interval:g}",
        "--roadmap-retry-delay",
        f"{options.retry_delay:g}",
        "--reruns",
        str(options.reruns),
    ]
    modes: dict[str, list[str]] = {"adaptive": [], "fixed": ["--no-roadmap-adaptive"]}
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    commands: dict[str, str] = {}
    with (
        Sandbox(latency_ms=options.latency_ms, capacity=options.capacity) as sandbox,
        tempfile.TemporaryDirectory() as tmp,
    ):
        folder = Path(tmp)
        write_tasks(folder, options.tasks, 2)
        for number in range(options.repeat):
            for mode, extra in modes.items():
                command = roadmap_command(sandbox.url, options.workers, NO_LIMIT, knobs + extra)
                commands[mode] = show_command(command, sandbox.url)
                result = measure(
                    sandbox, command, folder, options.timeout, options.capacity, latency
                )
                results[mode].append(result)
                print(f"run {number + 1} {mode}: {result}", file=sys.stderr)

    summary: dict[str, Any] = {}
    for mode, runs in results.items():
        summary[mode] = {
            key: round(median(run[key] for run in runs), 3)
            for key in runs[0]
            if isinstance(runs[0][key], (int, float))
        }
    emit(
        {
            "scenario": settings_of(options),
            "bound_tasks_per_s": options.capacity / latency,
            "commands": commands,
            "median": summary,
            "runs": results,
        },
        options.json,
    )


if __name__ == "__main__":
    main()
