"""Time `write_reports` alone on a synthetic run of N passed tasks (no pytest, no server).

The scale benchmark times the report inside a full run, which takes minutes at 10,000
tasks; this isolates the report so its growth and a profile are quick to get. Every task
passed with one attempt and an answer the size of the sandbox's (the worst case: passed
tasks also get two saved output files each).

    python benchmarks/report_bench.py --counts 1000 10000 --repeat 3 [--profile] [--under DIR]

`--under` picks the file system: the report writes 2 files per passed task, and creating a
file costs 0.3-0.7 ms on some virtual disks against about 0.01 ms on tmpfs (/dev/shm).
"""

from __future__ import annotations

import cProfile
import pstats
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from command_line import BenchmarkParser

from pytest_roadmap.report import write_reports
from pytest_roadmap.results import PASSED, Attempt, RunRecord, TaskResult
from pytest_roadmap.tasks import Task


def make_record(count: int) -> RunRecord:
    start = time.time()
    record = RunRecord(
        api="http://127.0.0.1:1",
        sandbox=True,
        model="m",
        workers=2,
        rate_limit=10.0,
        started=start,
        finished=start + count * 0.01,
        run_id="bench",
    )
    for n in range(count):
        task = Task(
            id=f"task{n:05d}",
            title=f"Task {n}",
            prompt=f"Write function number {n}.",
            month=1 + n % 12,
            week=1 + n % 4,
            priority=1 + n % 5,
            dogfooding="improvement",
            source=f"roadmap_tasks/file{n % 50:02d}.toml",
        )
        t0 = start + n * 0.01
        record.results.append(
            TaskResult(
                task=task,
                attempts=[Attempt(1, PASSED, t0, t0 + 0.05, f"gw{n % 2}")],
                outcome=PASSED,
                answer={"code": f"def f{n}():\n    return {n}\n", "message": "done"},
            )
        )
    return record


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.counts([1000, 10000])
    parser.repeat(3)
    parser.add_argument("--profile", action="store_true", help="cProfile the last count once")
    parser.add_argument("--under", default=None, help="folder for the reports (default: TMPDIR)")
    args = parser.parse_args()
    print(f"reports under {args.under or tempfile.gettempdir()}")
    for count in args.counts:
        times = []
        for _ in range(args.repeat):
            record = make_record(count)
            folder = Path(tempfile.mkdtemp(prefix="roadmap-report-bench-", dir=args.under))
            try:
                t0 = time.perf_counter()
                write_reports(record, folder / "report")
                times.append(time.perf_counter() - t0)
            finally:
                shutil.rmtree(folder)
        runs = " / ".join(f"{t:.2f}" for t in times)
        print(f"{count} tasks: write_reports median {statistics.median(times):.2f} s ({runs})")
    if args.profile:
        record = make_record(args.counts[-1])
        folder = Path(tempfile.mkdtemp(prefix="roadmap-report-bench-", dir=args.under))
        try:
            with cProfile.Profile() as profile:
                write_reports(record, folder / "report")
        finally:
            shutil.rmtree(folder)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
