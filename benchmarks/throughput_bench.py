"""Wall time of a roadmap run against the physical bound max(M/R, M*L/N) and the asyncio baseline.

M tasks with one chat request each go to a sandbox (its own process) of latency L, first
through `pytest --roadmap -n N --roadmap-rate-limit R`, then through
benchmarks/asyncio_runner.py with the same R and N; both are timed from process start to
exit and alternate, `--repeat` times each. The sandbox log splits each run into start-up
(process start to first request), work (first request to last answer) and wind-down (last
answer to exit), and counts health probes. The two runs of docs/benchmarks.md:

    python benchmarks/throughput_bench.py --tasks 600 --latency-ms 50 --rate 50 --workers 4
    python benchmarks/throughput_bench.py --tasks 200 --latency-ms 200 --rate 1000 --workers 8
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from command_line import BenchmarkParser
from harness import (
    Run,
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

RUNNER = Path(__file__).with_name("asyncio_runner.py")


def measure(
    sandbox: Sandbox, command: list[str], cwd: Path, timeout: float, probes: Path | None = None
) -> dict[str, Any]:
    """One timed run and what the sandbox saw of it (and the probes, when given)."""
    sandbox.reset()
    started = time.time()
    env = {"BENCH_PROBE_DIR": str(probes)} if probes else None
    run: Run = timed(command, cwd, timeout, env)
    seen = traffic(sandbox.log())
    phases = phases_of(read_probes(probes), started) if probes else {}
    run.check()
    return {
        "wall_s": run.wall,
        "cpu_s": run.cpu,
        "startup_s": seen.first - started,
        "work_s": seen.last_answer - seen.first,
        "winddown_s": started + run.wall - seen.last_answer,
        "chat": seen.chat,
        "health": seen.health,
        "statuses": seen.statuses,
        **phases,
    }


def phases_of(probes: dict[str, dict[str, Any]], started: float) -> dict[str, Any]:
    """Seconds from process start to each phase, from the probe conftest's notes."""
    controller = probes.get("controller")
    if controller is None:
        return {}
    marks = controller["marks"]
    workers = [probe for role, probe in probes.items() if role != "controller"]
    phases = {f"controller_{name}_at": marks[name] - started for name in marks}
    if workers:
        phases["workers_configured_at"] = max(w["marks"]["configure"] for w in workers) - started
        phases["workers_done_at"] = max(w["marks"]["unconfigure"] for w in workers) - started
        # Per phase, the first and the last worker to reach it: how staggered start-up is.
        for name in ("configure", "collected", "first_test", "sessionfinish", "unconfigure"):
            seen = sorted(w["marks"][name] - started for w in workers if name in w["marks"])
            if seen:
                phases[f"workers_{name}_first_last"] = [round(seen[0], 3), round(seen[-1], 3)]
    phases["write_reports_s"] = controller.get("write_reports_s")
    phases["summary_s"] = controller.get("summary_s")
    return phases


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("wall_s", "cpu_s", "startup_s", "work_s", "winddown_s", "chat", "health")
    return {key: round(median(run[key] for run in runs), 3) for key in keys}


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.tasks(600)
    parser.latency(50.0)
    parser.rate(50.0)
    parser.workers(4)
    parser.files(10)
    parser.repeat(3)
    parser.timeout(300.0)
    parser.add_argument("--extra", default="", help="more pytest arguments, space-separated")
    parser.output()
    parser.add_argument(
        "--probe",
        action="store_true",
        help="drop the probe conftest into the run folder and report each phase's time",
    )
    options = parser.parse_args()

    latency = options.latency_ms / 1000.0
    bound = max(options.tasks / options.rate, options.tasks * latency / options.workers)
    plugin_runs: list[dict[str, Any]] = []
    baseline_runs: list[dict[str, Any]] = []
    with Sandbox(latency_ms=options.latency_ms) as sandbox, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_tasks(folder, options.tasks, options.files)
        probes = write_probe(folder) if options.probe else None
        plugin = roadmap_command(sandbox.url, options.workers, options.rate, options.extra.split())
        baseline = [
            sys.executable,
            str(RUNNER),
            "--api",
            sandbox.url,
            "--tasks",
            str(options.tasks),
            "--concurrency",
            str(options.workers),
            "--rate",
            f"{options.rate:g}",
        ]
        for number in range(options.repeat):
            plugin_runs.append(measure(sandbox, plugin, folder, options.timeout, probes))
            baseline_runs.append(measure(sandbox, baseline, folder, options.timeout))
            print(
                f"run {number + 1}: plugin {plugin_runs[-1]['wall_s']:.2f} s,"
                f" baseline {baseline_runs[-1]['wall_s']:.2f} s",
                file=sys.stderr,
            )
    plugin_median = summarize(plugin_runs)
    baseline_median = summarize(baseline_runs)
    emit(
        {
            "scenario": {
                "tasks": options.tasks,
                "latency_s": latency,
                "rate": options.rate,
                "workers": options.workers,
                "bound_s": bound,
                "repeat": options.repeat,
            },
            "plugin_command": show_command(plugin, sandbox.url),
            "plugin": plugin_median,
            "baseline": baseline_median,
            "plugin_over_bound": round(plugin_median["wall_s"] / bound, 3),
            "baseline_over_bound": round(baseline_median["wall_s"] / bound, 3),
            "plugin_over_baseline": round(plugin_median["wall_s"] / baseline_median["wall_s"], 3),
            "plugin_work_over_bound": round(plugin_median["work_s"] / bound, 3),
            "runs": {"plugin": plugin_runs, "baseline": baseline_runs},
        },
        options.json,
    )


if __name__ == "__main__":
    main()
