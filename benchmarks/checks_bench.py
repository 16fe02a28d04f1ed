"""What the checks cost: the checks that read the answer, and run_untrusted beyond the
command it runs.

The checks that read the answer (text, structure) are judged in this process on an answer
of about 200 lines of Python: each kind alone, and all of them as one task's checks, many
times over; the table gives the median and p90 of one judgement.

Each round runs `python -c pass` through run_untrusted (one small file written into its
scratch folder) and through a plain subprocess.run (`harness.timed`), the two back to back
and their order swapped every round, so that a change of load lands on both. Wall times;
the first three rounds warm the caches and are not kept. Prints a markdown table: median
and p90 of each kind; of run_untrusted's own measure of its command (`Execution.seconds`)
and what the call took beyond it, in the same call (scratch folder and file, environment,
the group kill, the drain, the cleanup); and of the per-round difference between the two
kinds, which also holds what differs in starting and waiting for the process.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from command_line import BenchmarkParser
from harness import show_command, timed

from pytest_roadmap.checks import Context, judge, read_checks
from pytest_roadmap.checks.execution import run_untrusted

WARM_UP = 3
COMMAND = ("python", "-c", "pass")
FILES = {"solution.py": "def add(a, b):\n    return a + b\n"}
TIMEOUT = 60.0


def p90(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def plain_round(folder: Path) -> float:
    """Wall seconds of `python -c pass` through subprocess.run."""
    run = timed([sys.executable, *COMMAND[1:]], folder, TIMEOUT)
    run.check("subprocess.run")
    return run.wall


def untrusted_round() -> tuple[float, float]:
    """Wall seconds of the whole run_untrusted call, and its `Execution.seconds`."""
    start = time.perf_counter()
    execution = run_untrusted(COMMAND, FILES, timeout=TIMEOUT)
    wall = time.perf_counter() - start
    if execution.exit_code != 0:
        raise SystemExit(f"run_untrusted failed: {execution}")
    return wall, execution.seconds


def execution_rows(rounds: int) -> list[tuple[str, list[float]]]:
    """(what, seconds of each kept round) for run_untrusted against subprocess.run."""
    plain: list[float] = []
    untrusted: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as name:
        for round_ in range(rounds + WARM_UP):
            if round_ % 2:
                bare, checked = plain_round(Path(name)), untrusted_round()
            else:
                checked, bare = untrusted_round(), plain_round(Path(name))
            if round_ >= WARM_UP:
                plain.append(bare)
                untrusted.append(checked)
    whole = [wall for wall, _ in untrusted]
    return [
        (f"subprocess.run `{show_command([sys.executable, *COMMAND[1:]])}`", plain),
        (f"run_untrusted `{' '.join(COMMAND)}`, whole call", whole),
        ("run_untrusted, its command alone (`Execution.seconds`)", [c for _, c in untrusted]),
        (
            "run_untrusted beyond its command (whole call - `Execution.seconds`)",
            [wall - command for wall, command in untrusted],
        ),
        (
            "run_untrusted - subprocess.run (per-round difference)",
            [checked - bare for checked, bare in zip(whole, plain, strict=True)],
        ),
    ]


# One task's checks that read the answer; the schema is inline so that nothing is read.
READING_CHECKS: list[dict[str, object]] = [
    {"contains": ["class Cache", "def get"]},
    {"icontains": ["least recently used"]},
    {"not_contains": ["TODO", "NotImplementedError"]},
    {"regex": r"def put\(self, key"},
    {"parses": "python"},
    {"json_schema": {"type": "object", "required": ["code"]}, "part": "message"},
]
ANSWER = {
    "code": 'class Cache:\n    """Evicts the least recently used entry."""\n\n'
    + "".join(
        f"    def get_{i}(self, key):\n        return self.items.get(key, {i})\n\n"
        for i in range(60)
    )
    + "    def get(self, key):\n        return 1\n\n    def put(self, key, value):\n        pass\n",
    "message": '{"code": "see above"}',
}


def reading_rows(repeats: int) -> list[tuple[str, list[float]]]:
    """(what, seconds of each judgement) for each check that reads the answer, and for all
    of them as one task's checks."""
    context = Context()
    rows: list[tuple[str, list[float]]] = []
    sets = [(next(iter(table)), [table]) for table in READING_CHECKS]
    sets.append(("all six, one task's checks", READING_CHECKS))
    for what, tables in sets:
        checks = read_checks(tables, "bench.toml (id 'bench')", Path("."))
        judge(checks, ANSWER, context)  # warm: the first json_schema judgement imports
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            verdict = judge(checks, ANSWER, context)
            times.append(time.perf_counter() - start)
            if not verdict.passed:
                raise SystemExit(f"{what}: the benchmark's answer failed: {verdict.paragraph()}")
        rows.append((what, times))
    return rows


def table(rows: Sequence[tuple[str, list[float]]]) -> str:
    lines = ["| what | median ms | p90 ms |", "|---|---:|---:|"]
    for what, values in rows:
        lines.append(
            f"| {what} | {statistics.median(values) * 1000:.3f} | {p90(values) * 1000:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.repeat(30, help="rounds kept (each runs both kinds)", flag="--rounds", minimum=2)
    options = parser.parse_args()
    repeats = 2000
    print(f"{sys.platform}, Python {sys.version.split()[0]}")
    print()
    lines = len(str(ANSWER["code"]).splitlines())
    print(f"Checks that read the answer ({lines} lines of code), {repeats} judgements each:")
    print()
    print(table(reading_rows(repeats)))
    print()
    print(f"The command check's runner, {options.rounds} rounds, wall time:")
    print()
    print(table(execution_rows(options.rounds)))


if __name__ == "__main__":
    main()
