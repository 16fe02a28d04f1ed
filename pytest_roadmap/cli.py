"""The `roadmap` command: read and edit the progress file (ROADMAP_PROGRESS.json).

With no command it prints the help and exits 0, as the original tracker script did. Bad
arguments print the usage and exit 2 (argparse's convention); a RoadmapError prints one
`roadmap: error: ...` line and exits 2. Neither prints a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pytest_roadmap.display import escape_controls
from pytest_roadmap.errors import RoadmapError
from pytest_roadmap.results import DOGFOODING_COUNTERS
from pytest_roadmap.tasks import load_tasks
from pytest_roadmap.tracker import DEFAULT_PATH, METRICS, ProgressTracker

PROG = "roadmap"
DEFAULT_TASKS = Path("roadmap_tasks")


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value

    return parse


def _number(text: str) -> float:
    """A finite number; integers stay integers so the file reads as the Node tool wrote it."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `roadmap` and its subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--tracker",
        type=Path,
        default=DEFAULT_PATH,
        metavar="PATH",
        help=f"the progress file (default: {DEFAULT_PATH})",
    )
    parser = argparse.ArgumentParser(
        prog=PROG, description="Read and update the roadmap progress file."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    status = commands.add_parser(
        "status", parents=[common], help="show progress, metrics and pending tasks"
    )
    status.add_argument(
        "--tasks",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"folder of task files to compare against (default: {DEFAULT_TASKS}, if present)",
    )

    complete = commands.add_parser("complete", parents=[common], help="mark a task completed")
    complete.add_argument("month", type=_int_between(1, 1200), metavar="MONTH")
    complete.add_argument("week", type=_int_between(1, 5), metavar="WEEK")
    complete.add_argument(
        "name", nargs="+", metavar="NAME", help="the task's title (several words are joined)"
    )

    metric = commands.add_parser("metric", parents=[common], help="set a metric")
    metric.add_argument("name", choices=METRICS, metavar="NAME", help=", ".join(METRICS))
    metric.add_argument("value", type=_number, metavar="VALUE", help="a number")

    dogfood = commands.add_parser(
        "dogfood", parents=[common], help="count one dogfooding item of a type"
    )
    kinds = tuple(DOGFOODING_COUNTERS)
    dogfood.add_argument("kind", choices=kinds, metavar="TYPE", help=", ".join(kinds))

    commands.add_parser(
        "report",
        parents=[common],
        help="print a JSON report: summary, metrics, dogfooding and the roadmap's targets",
    )
    return parser


def _status(tracker: ProgressTracker, tasks_dir: Path | None) -> None:
    if tasks_dir is not None and not tasks_dir.is_dir():
        raise RoadmapError(f"task folder {tasks_dir} does not exist")
    folder = tasks_dir or DEFAULT_TASKS
    tasks = load_tasks(folder) if folder.is_dir() else None
    # Titles come from task files and the tracker file: show their control characters.
    print("\n".join(escape_controls(line) for line in tracker.status_lines(tasks)))


def run(args: argparse.Namespace) -> None:
    """Carry out one parsed command."""
    tracker = ProgressTracker(args.tracker)
    if args.command == "status":
        _status(tracker, args.tasks)
    elif args.command == "complete":
        key = tracker.complete(args.month, args.week, " ".join(args.name))
        print(f"completed: {escape_controls(key)}")
    elif args.command == "metric":
        tracker.set_metric(args.name, args.value)
        print(f"{args.name} = {args.value}")
    elif args.command == "dogfood":
        count = tracker.dogfood(args.kind)
        print(f"{DOGFOODING_COUNTERS[args.kind]} = {count}")
    elif args.command == "report":
        print(json.dumps(tracker.report(), indent=2, ensure_ascii=False))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `roadmap`; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse has printed the usage (exit 2) or the help (exit 0).
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 0
    try:
        run(args)
    except RoadmapError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
