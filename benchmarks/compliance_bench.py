"""Rate compliance seen from the server: the busiest 1 s window and the efficiency.

A sandbox (its own process, latency 0) that itself enforces `--rate` per sliding second
(429 beyond) gets `--runs` saturating roadmap runs of about `--seconds` each: rate x
seconds tasks through `pytest --roadmap -n N --roadmap-rate-limit R`. From its log, for
every /api/ request (health probes included): the most that arrived in any 1 s window,
the efficiency (achieved rate between the first and last arrival over R) and the 429s.
The asyncio baseline (benchmarks/asyncio_runner.py, a plain leaky bucket) gets
`--baseline-runs` runs of the same size for comparison.

    python benchmarks/compliance_bench.py --rate 20 --seconds 10 --workers 4 --runs 10
"""

from __future__ import annotations

import json
import sys
import tempfile
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

from pytest_roadmap.sandbox import achieved_rate, max_in_window

RUNNER = Path(__file__).with_name("asyncio_runner.py")


def measure(
    sandbox: Sandbox,
    command: list[str],
    cwd: Path,
    timeout: float,
    rate: float,
    save: Path | None = None,
) -> dict[str, Any]:
    sandbox.reset()
    run = timed(command, cwd, timeout)
    log = sandbox.log()
    if save is not None:
        save.write_text("".join(json.dumps(entry) + "\n" for entry in log), encoding="utf-8")
    seen = traffic(log)
    return {
        "wall_s": run.wall,
        "returncode": run.returncode,
        "requests": seen.total,
        "health": seen.health,
        "max_in_1s": max_in_window(log, 1.0),
        "efficiency": achieved_rate(log) / rate,
        "status_429": seen.statuses.get(429, 0),
    }


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.rate(20.0)
    parser.seconds(10.0)
    parser.workers(4)
    parser.repeat(10, flag="--runs", help="plugin runs")
    parser.repeat(3, flag="--baseline-runs", help="asyncio baseline runs", minimum=0)
    parser.timeout(120.0)
    parser.output()
    parser.add_argument("--save-logs", type=Path, help="folder for each run's sandbox log")
    options = parser.parse_args()

    tasks = int(options.rate * options.seconds)
    plugin_runs: list[dict[str, Any]] = []
    baseline_runs: list[dict[str, Any]] = []
    with (
        Sandbox(latency_ms=0, rate_limit=options.rate) as sandbox,
        tempfile.TemporaryDirectory() as tmp,
    ):
        folder = Path(tmp)
        write_tasks(folder, tasks, 4)
        plugin = roadmap_command(sandbox.url, options.workers, options.rate)
        baseline = [sys.executable, str(RUNNER), "--api", sandbox.url, "--tasks", str(tasks)]
        baseline += ["--concurrency", str(options.workers), "--rate", f"{options.rate:g}"]
        if options.save_logs:
            options.save_logs.mkdir(parents=True, exist_ok=True)
        for number in range(options.runs):
            save = options.save_logs / f"plugin-{number + 1}.jsonl" if options.save_logs else None
            plugin_runs.append(
                measure(sandbox, plugin, folder, options.timeout, options.rate, save)
            )
            print(f"run {number + 1}: {plugin_runs[-1]}", file=sys.stderr)
        for number in range(options.baseline_runs):
            baseline_runs.append(measure(sandbox, baseline, folder, options.timeout, options.rate))
            print(f"baseline {number + 1}: {baseline_runs[-1]}", file=sys.stderr)

    def sums(runs: list[dict[str, Any]]) -> dict[str, Any]:
        if not runs:
            return {}
        return {
            "runs": len(runs),
            "max_in_1s_worst": max(r["max_in_1s"] for r in runs),
            "efficiency_min": round(min(r["efficiency"] for r in runs), 4),
            "efficiency_median": round(median(r["efficiency"] for r in runs), 4),
            "status_429_total": sum(r["status_429"] for r in runs),
            "health_total": sum(r["health"] for r in runs),
            "requests_total": sum(r["requests"] for r in runs),
            "failed_runs": sum(1 for r in runs if r["returncode"] != 0),
        }

    emit(
        {
            "scenario": settings_of(options) | {"tasks": tasks},
            "plugin_command": show_command(plugin, sandbox.url),
            "plugin": sums(plugin_runs),
            "baseline": sums(baseline_runs),
            "runs": {"plugin": plugin_runs, "baseline": baseline_runs},
        },
        options.json,
    )


if __name__ == "__main__":
    main()
