"""Many requests in flight from two workers (--roadmap-inflight) against as many worker processes.

M tasks of L seconds each go to a sandbox (its own process) with no capacity limit, through
`pytest --roadmap -n N --roadmap-inflight K` and through `pytest --roadmap -n N*K` (one
request per process, as before), with a rate limit far above what either sends; the two
kinds alternate, `--repeat` times each. The bound is M*L/(N*K). Each run is timed from
process start to exit; the sandbox's log gives the first request's time after the start,
the work phase (first request to last answer) and the most requests it saw in flight, and a
probe conftest each process's peak RSS (their sum is the run's peak memory, at most).
`--slow-every S --slow-ms X` makes every S-th task X ms slower (a sandbox rule each), so
answers come out of order; the bound is then the tasks' total time over N*K. The runs of
issue 25 and docs/benchmarks.md:

    python benchmarks/inflight_bench.py --tasks 128 --latency-ms 2000 -n 2 --inflight 32
    python benchmarks/inflight_bench.py --tasks 128 --latency-ms 1000 -n 2 --inflight 16 \
        --slow-every 8 --slow-ms 4000 --no-processes
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from command_line import BenchmarkParser, settings_of, whole
from harness import (
    Sandbox,
    emit,
    median,
    read_probes,
    roadmap_command,
    show_command,
    timed,
    traffic,
    write_probe,
    write_tasks,
)

from pytest_roadmap.sandbox import max_in_flight

NO_LIMIT = 100000.0  # requests per second: the limiter never waits
KEYS = ("wall_s", "startup_s", "work_s", "peak_rss_mb", "controller_rss_mb", "worker_rss_mb")


def measure(
    sandbox: Sandbox, command: list[str], cwd: Path, probes: Path, bound: float, timeout: float
) -> dict[str, Any]:
    """One timed run: its phases against the bound, what the sandbox saw, its memory."""
    sandbox.reset()
    started = time.time()
    run = timed(command, cwd, timeout, {"BENCH_PROBE_DIR": str(probes)})
    run.check()
    entries = sandbox.log()
    seen = traffic(entries)
    found = read_probes(probes)
    rss = {role: probe["maxrss_kb"] / 1024 for role, probe in found.items()}
    workers = [mb for role, mb in rss.items() if role != "controller"]
    work = seen.last_answer - seen.first
    return {
        "wall_s": run.wall,
        "cpu_s": run.cpu,
        "startup_s": seen.first - started,
        "work_s": work,
        "wall_over_bound": run.wall / bound,
        "work_over_bound": work / bound,
        "max_in_flight": max_in_flight(entries),
        "chat": seen.chat,
        "health": seen.health,
        "statuses": seen.statuses,
        "processes": len(rss),
        "peak_rss_mb": sum(rss.values()),
        "controller_rss_mb": rss.get("controller"),
        "worker_rss_mb": max(workers) if workers else None,
    }


def summarize(runs: list[dict[str, Any]], bound: float) -> dict[str, Any]:
    row = {key: round(median(r[key] for r in runs if r[key] is not None), 3) for key in KEYS}
    row["wall_over_bound"] = round(row["wall_s"] / bound, 3)
    row["work_over_bound"] = round(row["work_s"] / bound, 3)
    row["max_in_flight"] = min(r["max_in_flight"] for r in runs)
    return row


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.tasks(128)
    parser.latency(2000.0)
    parser.workers(2, help="N, xdist workers of the run with requests in flight")
    parser.add_argument("--inflight", type=whole(1), default=32, help="K, requests per worker")
    parser.files(8)
    parser.repeat(3)
    parser.timeout(600.0)
    parser.add_argument(
        "--no-processes", action="store_true", help="skip the runs with N*K worker processes"
    )
    parser.add_argument("--slow-every", type=whole(1), default=None, help="S: every S-th task")
    parser.add_argument("--slow-ms", type=whole(0), default=0, help="X: that much slower")
    parser.output()
    options = parser.parse_args()

    slots = options.workers * options.inflight
    slow = [] if options.slow_every is None else range(0, options.tasks, options.slow_every)
    total = options.tasks * options.latency_ms + len(slow) * options.slow_ms
    bound = total / 1000.0 / slots
    kinds: dict[str, list[dict[str, Any]]] = {"inflight": [], "processes": []}
    with Sandbox(latency_ms=options.latency_ms) as sandbox, tempfile.TemporaryDirectory() as tmp:
        # Task n's prompt (harness.prompt_of) starts "Task n:", which no other task's holds.
        delay = options.slow_ms / 1000.0
        rules = [{"match": f"Task {n}:", "delay": delay} for n in slow]
        if rules:
            sandbox.configure(rules=rules)
        folder = Path(tmp)
        write_tasks(folder, options.tasks, options.files)
        probes = write_probe(folder)
        extra = ["--roadmap-inflight", str(options.inflight)]
        commands = {
            "inflight": roadmap_command(sandbox.url, options.workers, NO_LIMIT, extra),
            "processes": roadmap_command(sandbox.url, slots, NO_LIMIT),
        }
        if options.no_processes:
            del commands["processes"]
        for number in range(options.repeat):
            for kind, command in commands.items():
                result = measure(sandbox, command, folder, probes, bound, options.timeout)
                kinds[kind].append(result)
                print(
                    f"run {number + 1} {kind}: wall {result['wall_s']:.2f} s, work "
                    f"{result['work_s']:.2f} s, first request {result['startup_s']:.2f} s, "
                    f"{result['peak_rss_mb']:.0f} MB",
                    file=sys.stderr,
                )
    emit(
        {
            "scenario": {**settings_of(options), "bound_s": bound, "slots": slots},
            "commands": {k: show_command(c, sandbox.url) for k, c in commands.items()},
            **{kind: summarize(runs, bound) for kind, runs in kinds.items() if runs},
            "runs": kinds,
        },
        options.json,
    )


if __name__ == "__main__":
    main()
