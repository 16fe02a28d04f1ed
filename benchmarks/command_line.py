"""The benchmarks' shared command line: one parser, with the options they have in common.

A script builds its parser as `BenchmarkParser(__doc__)` (described by its docstring's first
line), adds the common options it takes through the methods below, each with the script's
own default, then its own options. So `--tasks`, `-n/--workers`, `--latency-ms`, `--rate`,
`--files`, `--counts`, `--repeat`, `--seconds`, `--timeout` and `--json` mean the same and
are checked the same everywhere: a bad value is one usage line, never a traceback.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pytest_roadmap.sandbox.cli import number_argument

_Number = TypeVar("_Number", int, float)


def number(
    convert: Callable[[str], _Number], what: str, check: Callable[[_Number], bool]
) -> Callable[[str], _Number]:
    """An argparse type for a finite number that `check` accepts; `what` says which."""
    return number_argument(convert, what, lambda value: math.isfinite(value) and check(value))


def whole(minimum: int) -> Callable[[str], int]:
    """A whole number >= `minimum`."""
    return number(int, f"a whole number >= {minimum}", lambda value: value >= minimum)


POSITIVE = number(float, "a number > 0", lambda value: value > 0)
NOT_NEGATIVE = number(float, "a number >= 0", lambda value: value >= 0)


class BenchmarkParser(argparse.ArgumentParser):
    """A benchmark's command line; each method adds one of the shared options."""

    def __init__(self, doc: str | None) -> None:
        super().__init__(description=(doc or "").strip().splitlines()[0])

    def tasks(self, default: int | None, help: str = "M, tasks (one chat request each)") -> None:
        self.add_argument("--tasks", type=whole(1), default=default, help=help)

    def workers(self, default: int, help: str = "N, xdist workers (the concurrency)") -> None:
        self.add_argument("-n", "--workers", type=whole(1), default=default, help=help)

    def latency(self, default: float | None, help: str = "L, the sandbox's latency") -> None:
        self.add_argument("--latency-ms", type=NOT_NEGATIVE, default=default, help=help)

    def rate(self, default: float, help: str = "R, requests per second") -> None:
        self.add_argument("--rate", type=POSITIVE, default=default, help=help)

    def files(self, default: int, help: str = "task files to spread the tasks over") -> None:
        self.add_argument("--files", type=whole(1), default=default, help=help)

    def counts(self, default: list[int], help: str = "task counts, one row each") -> None:
        self.add_argument("--counts", type=whole(1), nargs="+", default=default, help=help)

    def repeat(
        self,
        default: int,
        help: str = "runs of each kind (median)",
        flag: str = "--repeat",
        minimum: int = 1,
    ) -> None:
        self.add_argument(flag, type=whole(minimum), default=default, help=help)

    def seconds(self, default: float, help: str = "length of each run") -> None:
        self.add_argument("--seconds", type=POSITIVE, default=default, help=help)

    def timeout(self, default: float, help: str = "seconds per run, at most") -> None:
        self.add_argument("--timeout", type=POSITIVE, default=default, help=help)

    def output(self) -> None:
        self.add_argument("--json", type=Path, default=None, help="also save the result here")


def settings_of(options: argparse.Namespace) -> dict[str, Any]:
    """The options as JSON-ready data for a result (paths as text)."""
    return {
        name: str(value) if isinstance(value, Path) else value
        for name, value in vars(options).items()
    }
