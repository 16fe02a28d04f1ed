"""What the installed plugin costs a pytest run that does not use it (no --roadmap).

Runs `pytest -q` over one plain test with the plugin disabled (`-p no:roadmap`) and enabled,
back to back in each round (so a change of load lands on both), and prints the median of the
per-round differences in wall time and in CPU time (user + sys of the pytest process and
every process it waited for, as `harness.timed` counts it). Run it with the Python of the
environment to measure: a venv with `pip install .` is what a user has (an editable install
skips pytest's assertion rewriting of the plugin's modules). `--checkout DIR` (may repeat)
adds an enabled case per source tree, through PYTHONPATH, to compare commits; `-n 2` passes
xdist's workers.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

from command_line import BenchmarkParser, whole
from harness import pytest_command, timed

PLAIN_TEST = "def test_one():\n    pass\n"
WITHOUT = "without the plugin"


def timed_run(args: list[str], folder: Path, pythonpath: str | None) -> tuple[float, float]:
    """(wall, CPU) seconds of one pytest run, start to exit."""
    env = {"PYTHONPATH": pythonpath} if pythonpath else {}
    run = timed([*pytest_command(()), "-p", "no:cacheprovider", *args], folder, 120, env)
    run.check(f"pytest {' '.join(args)}")
    return run.wall, run.cpu


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.repeat(40)
    parser.add_argument("-n", "--workers", type=whole(0), default=0, help="xdist workers (0: none)")
    parser.add_argument(
        "--checkout", action="append", default=[], help="source tree to time the plugin from"
    )
    options = parser.parse_args()
    # Bytecode caches as a user's install has them: without them every run compiles.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    workers = ["-n", str(options.workers)] if options.workers else []
    kinds: dict[str, tuple[list[str], str | None]] = {WITHOUT: (["-p", "no:roadmap"], None)}
    for checkout in options.checkout or [""]:
        kinds[f"with the plugin {checkout}".rstrip()] = ([], checkout or None)
    seen: dict[str, list[tuple[float, float]]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        (folder / "test_one.py").write_text(PLAIN_TEST, encoding="utf-8")
        for round_ in range(options.repeat + 3):  # three rounds to warm the caches, not kept
            for kind, (args, pythonpath) in kinds.items():
                result = timed_run([*args, *workers], folder, pythonpath)
                if round_ >= 3:
                    seen[kind].append(result)
    bare = seen[WITHOUT]
    for kind, runs in seen.items():
        line = [f"{kind} ({len(runs)} rounds):"]
        for what, index in (("wall", 0), ("CPU", 1)):
            median = statistics.median(run[index] for run in runs) * 1000
            line.append(f"{what} median {median:.1f} ms")
            if kind != WITHOUT:
                pairs = zip(runs, bare, strict=True)
                diff = statistics.median(a[index] - b[index] for a, b in pairs)
                line[-1] += f" ({diff * 1000:+.1f} ms a round)"
        print(" ".join(line))


if __name__ == "__main__":
    main()
