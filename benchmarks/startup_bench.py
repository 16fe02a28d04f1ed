"""What the installed plugin costs a pytest run that does not use it (no --roadmap).

Times `pytest -q` over a few plain tests, process start to exit, with the plugin disabled
(`-p no:roadmap`) and enabled, alternating, and prints the medians. `--checkout DIR` (may
repeat) runs the enabled case once per source tree, through PYTHONPATH, to compare commits.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from command_line import BenchmarkParser
from harness import pytest_command

PLAIN_TESTS = "".join(f"def test_{i}():\n    pass\n" for i in range(4))


def timed(args: list[str], folder: Path, pythonpath: str | None) -> float:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    started = time.perf_counter()
    subprocess.run(
        [*pytest_command(()), *args],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
        check=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.repeat(7)
    parser.add_argument(
        "--checkout", action="append", default=[], help="source tree to time the plugin from"
    )
    options = parser.parse_args()
    kinds: dict[str, tuple[list[str], str | None]] = {
        "without the plugin": (["-p", "no:roadmap"], None)
    }
    for checkout in options.checkout or [""]:
        kinds[f"with the plugin {checkout}".rstrip()] = ([], checkout or None)
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        (folder / "test_plain.py").write_text(PLAIN_TESTS, encoding="utf-8")
        for _ in range(options.repeat):
            for kind, (args, pythonpath) in kinds.items():
                times[kind].append(timed(args, folder, pythonpath))
    bare = statistics.median(times["without the plugin"])
    for kind, seen in times.items():
        median = statistics.median(seen)
        runs = " ".join(f"{t:.2f}" for t in seen)
        print(f"{kind}: median {median:.3f} s (+{median - bare:.3f} s); runs {runs}")


if __name__ == "__main__":
    main()
