"""How collection, the report and the controller's memory grow with the number of tasks.

For each count (default 1,000 and 10,000 tasks in 50 files): `pytest --roadmap --co -q`
timed from process start to exit (`--co-repeat` times, median), beside `pytest --co -q`
over the same number of plain test functions in 50 files; then one full run per count
(`--run-repeat`) against a zero-latency sandbox (its own process) with no effective rate
limit, beside the same count of plain requests.post functions, both `-n N`. A probe
conftest in the run folder times the plugin's write_reports call in the controller (the
report) and its whole terminal summary, and notes each process's peak RSS
(getrusage(RUSAGE_SELF).ru_maxrss), so the controller is measured apart from its workers.

    python benchmarks/scale_bench.py --counts 1000 10000 --workers 2
"""

from __future__ import annotations

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
    plain_command,
    read_probes,
    roadmap_command,
    show_command,
    timed,
    traffic,
    write_plain_tests,
    write_probe,
    write_tasks,
)

NO_LIMIT = 100000.0


def collection(command: list[str], cwd: Path, repeat: int, timeout: float) -> float:
    walls = []
    for _ in range(repeat):
        run = timed(command, cwd, timeout)
        run.check("collection")
        walls.append(run.wall)
    return median(walls)


def full_run(sandbox: Sandbox, command: list[str], cwd: Path, timeout: float) -> dict[str, Any]:
    sandbox.reset()
    probes = cwd / "probes"
    started = time.time()
    run = timed(command, cwd, timeout, {"BENCH_PROBE_DIR": str(probes)})
    run.check()
    seen = traffic(sandbox.log())
    found = read_probes(probes)
    controller = found["controller"]
    workers = [probe for role, probe in found.items() if role != "controller"]
    # Where the wind-down goes: seconds from the last answer to each controller phase.
    after_last = {
        name: round(at - seen.last_answer, 3)
        for name, at in controller["marks"].items()
        if at >= seen.last_answer
    }
    if workers:
        last_worker = max(w["marks"]["unconfigure"] for w in workers)
        after_last["workers_unconfigure"] = round(last_worker - seen.last_answer, 3)
    return {
        "wall_s": run.wall,
        "chat": seen.chat,
        "health": seen.health,
        "last_answer_to_exit_s": started + run.wall - seen.last_answer,
        "controller_after_last_answer_s": after_last,
        "write_reports_s": controller.get("write_reports_s"),
        "summary_s": controller.get("summary_s"),
        "controller_rss_mb": controller["maxrss_kb"] / 1024,
        "worker_rss_mb_max": max(w["maxrss_kb"] for w in workers) / 1024 if workers else None,
    }


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.counts([1000, 10000])
    parser.files(50)
    parser.workers(2, help="N, xdist workers of the full runs")
    parser.repeat(3, flag="--co-repeat", help="collection runs (median)")
    parser.repeat(1, flag="--run-repeat", help="full runs (median)")
    parser.timeout(900.0)
    parser.output()
    parser.add_argument(
        "--no-plain", action="store_true", help="skip the plain pytest runs (comparisons)"
    )
    options = parser.parse_args()

    rows: dict[int, dict[str, Any]] = {}
    with Sandbox(latency_ms=0) as sandbox:
        plugin_run = roadmap_command(sandbox.url, options.workers, NO_LIMIT)
        plain_run = plain_command(options.workers)
        for count in options.counts:
            with tempfile.TemporaryDirectory() as tmp:
                roadmap_dir, plain_dir = Path(tmp, "roadmap"), Path(tmp, "plain")
                write_tasks(roadmap_dir, count, options.files)
                write_plain_tests(plain_dir, count, options.files, sandbox.url)
                for folder in (roadmap_dir, plain_dir):
                    write_probe(folder)
                row: dict[str, Any] = {
                    "collect_s": collection(
                        roadmap_command("", 0, 0, collect_only=True),
                        roadmap_dir,
                        options.co_repeat,
                        options.timeout,
                    ),
                }
                if not options.no_plain:
                    row["plain_collect_s"] = collection(
                        plain_command(0, collect_only=True),
                        plain_dir,
                        options.co_repeat,
                        options.timeout,
                    )
                runs = [
                    full_run(sandbox, plugin_run, roadmap_dir, options.timeout)
                    for _ in range(options.run_repeat)
                ]
                plains = [
                    full_run_plain(sandbox, plain_run, plain_dir, options.timeout)
                    for _ in range(0 if options.no_plain else options.run_repeat)
                ]
                for key, first in runs[0].items():
                    if isinstance(first, dict):
                        row[key] = first  # phase marks: the first run's
                    elif first is not None:
                        row[key] = round(median(r[key] for r in runs), 3)
                for key in plains[0] if plains else ():
                    row[f"plain_{key}"] = round(median(r[key] for r in plains), 3)
                rows[count] = row
                print(f"{count} tasks: {row}", file=sys.stderr)

    growth: dict[str, float] = {}
    if len(options.counts) >= 2:
        low, high = options.counts[0], options.counts[-1]
        for key in ("collect_s", "write_reports_s", "controller_rss_mb", "wall_s"):
            if key in rows[low] and key in rows[high]:
                growth[key] = round(rows[high][key] / rows[low][key], 2)
                growth[f"{key}_per_extra_task"] = round(
                    (rows[high][key] - rows[low][key]) / (high - low), 6
                )
    emit(
        {
            "scenario": settings_of(options),
            "collect_command": show_command(roadmap_command("", 0, 0, collect_only=True)),
            "run_command": show_command(plugin_run, sandbox.url),
            "plain_run_command": show_command(plain_run),
            "rows": rows,
            "growth_low_to_high": growth,
        },
        options.json,
    )


def full_run_plain(
    sandbox: Sandbox, command: list[str], cwd: Path, timeout: float
) -> dict[str, Any]:
    """The plain run's wall time and its controller's peak RSS."""
    sandbox.reset()
    probes = cwd / "probes"
    run = timed(command, cwd, timeout, {"BENCH_PROBE_DIR": str(probes)})
    run.check()
    controller = read_probes(probes)["controller"]
    return {"wall_s": run.wall, "controller_rss_mb": controller["maxrss_kb"] / 1024}


if __name__ == "__main__":
    main()
