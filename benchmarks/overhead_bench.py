"""Per-task cost of pytest-roadmap against plain pytest functions sending the same request.

M tasks go to a sandbox (its own process; no latency unless `--latency-ms`) with no
effective rate limit,
through `pytest --roadmap -n N`, and M plain test functions that each do the same
requests.post go through `pytest -n N -p no:roadmap`; the two alternate, `--repeat` times
each. The extra per task is (median plugin wall - median plain wall) / M, and the same for
CPU (the runs' processes and their children). A probe conftest in both folders times the
plugin's write_reports, so the share of the extra that is the report shows apart.

    python benchmarks/overhead_bench.py --tasks 2000 --workers 2
    python benchmarks/overhead_bench.py --tasks 120 --workers 6 --latency-ms 200 --files 4
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from command_line import BenchmarkParser
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
# An experiment, not a fix: pytest-rerunfailures' worker-side socket to the controller
# (ClientStatusDB) without Nagle's algorithm. Appended to the probe conftest by --nodelay.
NODELAY_CONFTEST = """

import socket as _socket


def pytest_sessionstart(session):
    config = session.config
    db = getattr(config, "failures_db", None)
    sock = getattr(db, "sock", None)
    if sock is not None and hasattr(config, "workerinput"):
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
"""


def measure(sandbox: Sandbox, command: list[str], cwd: Path, timeout: float) -> dict[str, Any]:
    sandbox.reset()
    probes = cwd / "probes"
    started = time.time()
    run = timed(command, cwd, timeout, {"BENCH_PROBE_DIR": str(probes)})
    seen = traffic(sandbox.log())
    run.check()
    controller = read_probes(probes).get("controller", {})
    return {
        "wall_s": run.wall,
        "cpu_s": run.cpu,
        "chat": seen.chat,
        "health": seen.health,
        "startup_s": seen.first - started,
        "work_s": seen.last_answer - seen.first,
        "write_reports_s": controller.get("write_reports_s") or 0.0,
    }


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.tasks(2000, help="M, tasks and plain functions")
    parser.workers(2, help="N, xdist workers for both")
    parser.latency(0.0)
    parser.files(20)
    parser.repeat(3)
    parser.timeout(600.0)
    parser.output()
    parser.add_argument(
        "--nodelay",
        action="store_true",
        help="experiment: set TCP_NODELAY on pytest-rerunfailures' worker socket (both runs)",
    )
    options = parser.parse_args()

    plugin_runs: list[dict[str, Any]] = []
    plain_runs: list[dict[str, Any]] = []
    with Sandbox(latency_ms=options.latency_ms) as sandbox, tempfile.TemporaryDirectory() as tmp:
        roadmap_dir, plain_dir = Path(tmp, "roadmap"), Path(tmp, "plain")
        write_tasks(roadmap_dir, options.tasks, options.files)
        write_plain_tests(plain_dir, options.tasks, options.files, sandbox.url)
        for folder in (roadmap_dir, plain_dir):
            write_probe(folder)
            if options.nodelay:
                with (folder / "conftest.py").open("a", encoding="utf-8") as conftest:
                    conftest.write(NODELAY_CONFTEST)
        plugin = roadmap_command(sandbox.url, options.workers, NO_LIMIT)
        plain = plain_command(options.workers)
        for number in range(options.repeat):
            plugin_runs.append(measure(sandbox, plugin, roadmap_dir, options.timeout))
            plain_runs.append(measure(sandbox, plain, plain_dir, options.timeout))
            print(
                f"run {number + 1}: plugin {plugin_runs[-1]['wall_s']:.2f} s,"
                f" plain {plain_runs[-1]['wall_s']:.2f} s",
                file=sys.stderr,
            )

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return median(run[key] for run in runs)

    tasks = options.tasks
    extra_wall = (med(plugin_runs, "wall_s") - med(plain_runs, "wall_s")) / tasks
    extra_cpu = (med(plugin_runs, "cpu_s") - med(plain_runs, "cpu_s")) / tasks
    report = med(plugin_runs, "write_reports_s") / tasks
    emit(
        {
            "scenario": {
                "tasks": tasks,
                "workers": options.workers,
                "latency_ms": options.latency_ms,
                "repeat": options.repeat,
                "nodelay": options.nodelay,
            },
            "plugin_command": show_command(plugin, sandbox.url),
            "plain_command": show_command(plain),
            "plugin": {k: round(med(plugin_runs, k), 3) for k in plugin_runs[0]},
            "plain": {k: round(med(plain_runs, k), 3) for k in plain_runs[0]},
            "plugin_over_plain_wall": round(
                med(plugin_runs, "wall_s") / med(plain_runs, "wall_s"), 3
            ),
            "extra_wall_ms_per_task": round(extra_wall * 1e3, 3),
            "extra_cpu_ms_per_task": round(extra_cpu * 1e3, 3),
            "write_reports_ms_per_task": round(report * 1e3, 3),
            "extra_wall_ms_per_task_without_report": round((extra_wall - report) * 1e3, 3),
            "runs": {"plugin": plugin_runs, "plain": plain_runs},
        },
        options.json,
    )


if __name__ == "__main__":
    main()
