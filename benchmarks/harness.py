"""Shared pieces of the benchmarks: a sandbox in its own process, task folders, timed runs.

Not run by itself. The benchmark scripts in this folder import it (`python
benchmarks/<script>.py` puts this folder on sys.path), and their command line from
command_line.py. Everything stays on 127.0.0.1, and every subprocess runs under a timeout.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_roadmap.sandbox import CHAT_PATH, HEALTH_PATH, SandboxSubprocess

HOST = "127.0.0.1"
# Plugins installed on this machine that only slow start-up; off in every run, plugin or not.
QUIET_PLUGINS = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
STARTUP_TIMEOUT = 20.0


def prompt_of(index: int) -> str:
    """The prompt of task `index`; the asyncio baseline sends exactly the same ones."""
    return f"Task {index}: write a function that returns the number {index}"


def task_id(index: int) -> str:
    return f"t{index:05d}"


# --------------------------------------------------------------------------- sandbox


class Sandbox(SandboxSubprocess):
    """The sandbox in its own process, so it competes for no GIL, with the knobs a
    benchmark sets; `extra` are more of roadmap-sandbox's options."""

    def __init__(
        self,
        latency_ms: float = 0.0,
        capacity: int | None = None,
        rate_limit: float | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        args = ["--latency-ms", f"{latency_ms:g}"]
        if capacity is not None:
            args += ["--capacity", str(capacity)]
        if rate_limit is not None:
            args += ["--rate-limit", f"{rate_limit:g}"]
        super().__init__(*args, *extra)


@dataclass(frozen=True)
class Traffic:
    """What the sandbox saw: request counts by kind and status."""

    chat: int
    health: int
    statuses: dict[int, int]
    first: float
    last_answer: float

    @property
    def total(self) -> int:
        return self.chat + self.health


def traffic(entries: Sequence[Mapping[str, Any]]) -> Traffic:
    chat = [e for e in entries if e["path"] == CHAT_PATH]
    health = [e for e in entries if e["path"] == HEALTH_PATH]
    statuses: dict[int, int] = {}
    for entry in chat:
        status = int(entry["status"] or 0)
        statuses[status] = statuses.get(status, 0) + 1
    arrivals = [float(e["arrived"]) for e in entries if e["path"] in (CHAT_PATH, HEALTH_PATH)]
    answers = [float(e["answered"]) for e in chat if e["answered"] is not None]
    return Traffic(
        chat=len(chat),
        health=len(health),
        statuses=statuses,
        first=min(arrivals, default=0.0),
        last_answer=max(answers, default=0.0),
    )


# --------------------------------------------------------------------------- folders


def write_tasks(folder: Path, count: int, files: int) -> None:
    """`count` tasks spread over `files` TOML files in folder/roadmap_tasks, plus pytest.ini."""
    tasks = folder / "roadmap_tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    for number, chunk in enumerate(_chunks(count, files)):
        blocks = []
        for index in chunk:
            blocks.append(
                "[[tasks]]\n"
                f'id = "{task_id(index)}"\n'
                f'title = "Benchmark task {index}"\n'
                f'prompt = "{prompt_of(index)}"\n'
                f"month = {1 + index % 3}\n"
                f"week = {1 + index % 5}\n"
            )
        (tasks / f"tasks_{number:03d}.toml").write_text("\n".join(blocks), encoding="utf-8")


def write_plain_tests(folder: Path, count: int, files: int, url: str) -> None:
    """The same requests as plain pytest functions: requests.post, no plugin involved."""
    tests = folder / "plain_tests"
    tests.mkdir(parents=True, exist_ok=True)
    (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    for number, chunk in enumerate(_chunks(count, files)):
        lines = [
            "import requests",
            "",
            f"URL = {url + CHAT_PATH!r}",
            "",
        ]
        for index in chunk:
            lines += [
                "",
                f"def test_{task_id(index)}():",
                "    body = {"
                f'"message": {prompt_of(index)!r}, "model": "custom:default", "useLLM": True'
                "}",
                "    answer = requests.post(URL, json=body, timeout=30).json()",
                '    assert "code" in answer or "message" in answer',
                "",
            ]
        (tests / f"test_plain_{number:03d}.py").write_text("\n".join(lines), encoding="utf-8")


def _chunks(count: int, parts: int) -> list[range]:
    size, extra = divmod(count, parts)
    chunks, start = [], 0
    for part in range(parts):
        end = start + size + (1 if part < extra else 0)
        chunks.append(range(start, end))
        start = end
    return [chunk for chunk in chunks if len(chunk)]


# --------------------------------------------------------------------------- probe

# A conftest.py dropped into a run's folder: each process (controller and workers) notes
# when it reached the main phases of a run and its own peak RSS, and the controller times
# pytest_roadmap's write_reports call (the report) and its whole terminal summary. It
# patches the function the plugin calls, so it measures the real call in the real run.
PROBE_CONFTEST = """\
import json, os, resource, time

import pytest

PROBE = {"pid": os.getpid(), "marks": {}}
_START = {}


def _mark(name):
    PROBE["marks"].setdefault(name, time.time())


def _time_write_reports():
    # Only in the controller, at configure time: importing the report code in every
    # process would add to the workers' start-up the plugin spares them.
    try:
        import pytest_roadmap.report as report
    except ImportError:
        return
    write_reports = report.write_reports

    def timed(record, folder, *more):
        start = time.perf_counter()
        try:
            return write_reports(record, folder, *more)
        finally:
            PROBE["write_reports_s"] = time.perf_counter() - start
            PROBE["tasks_in_record"] = len(record.results)

    report.write_reports = timed


def _last(name):
    PROBE["marks"][name] = time.time()


def pytest_runtest_logreport(report):
    _last("last_report")


def pytest_testnodedown(node, error):
    _mark("first_nodedown")
    _last("last_nodedown")


def pytest_configure(config):
    _mark("configure")
    PROBE["role"] = getattr(config, "workerinput", {}).get("workerid", "controller")
    if PROBE["role"] == "controller":
        _time_write_reports()


def pytest_collection_finish(session):
    _mark("collected")


def pytest_runtest_logstart(nodeid, location):
    _mark("first_test")


def pytest_sessionfinish(session):
    _mark("sessionfinish")


@pytest.hookimpl(hookwrapper=True)
def pytest_terminal_summary(terminalreporter):
    start = time.perf_counter()
    _mark("summary_start")
    yield
    PROBE["summary_s"] = time.perf_counter() - start


def pytest_unconfigure(config):
    _mark("unconfigure")
    PROBE["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    folder = os.environ.get("BENCH_PROBE_DIR")
    if folder:
        path = os.path.join(folder, f"probe-{PROBE['role']}-{os.getpid()}.json")
        with open(path, "w") as handle:
            json.dump(PROBE, handle)
"""


def write_probe(folder: Path) -> Path:
    """Put the probe conftest into `folder`; returns where the probes will write."""
    (folder / "conftest.py").write_text(PROBE_CONFTEST, encoding="utf-8")
    probes = folder / "probes"
    probes.mkdir(exist_ok=True)
    return probes


def read_probes(probes: Path) -> dict[str, dict[str, Any]]:
    """The probes of one run by role ("controller", "gw0", ...), then clear the folder."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(probes.glob("probe-*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        found[str(data["role"])] = data
        path.unlink()
    return found


# --------------------------------------------------------------------------- runs


def pytest_command(first: Sequence[str] = ("--roadmap",)) -> list[str]:
    """`python -m pytest` with `first` (default --roadmap), QUIET_PLUGINS and -q."""
    return [sys.executable, "-m", "pytest", *first, *QUIET_PLUGINS, "-q"]


def roadmap_command(
    api: str, workers: int, rate: float, extra: Iterable[str] = (), collect_only: bool = False
) -> list[str]:
    """The pytest command line of a roadmap run against `api`."""
    command = pytest_command()
    if collect_only:
        return [*command, "--co"]
    command += ["-n", str(workers), "--roadmap-api", api, "--roadmap-rate-limit", f"{rate:g}"]
    return [*command, "--roadmap-max-queue", "0", *extra]


def plain_command(workers: int, collect_only: bool = False) -> list[str]:
    """pytest over plain_tests/ with xdist and without pytest-roadmap."""
    command = pytest_command(("-p", "no:roadmap"))
    if collect_only:
        return [*command, "--co", "plain_tests"]
    return [*command, "-n", str(workers), "plain_tests"]


@dataclass
class Run:
    """One timed subprocess: wall time from start to exit, CPU of it and its children."""

    command: list[str]
    wall: float
    cpu: float
    returncode: int
    output: str
    extra: dict[str, Any] = field(default_factory=dict)

    def tail(self, lines: int = 3) -> str:
        return "\n".join(self.output.strip().splitlines()[-lines:])

    def check(self, what: str = "run") -> None:
        """End the benchmark, with the command and its last lines, unless it exited 0."""
        if self.returncode != 0:
            shown = show_command(self.command)
            raise SystemExit(f"{what} failed ({self.returncode}): {shown}\n{self.tail(20)}")


def timed(
    command: Sequence[str], cwd: Path, timeout: float, env: Mapping[str, str] | None = None
) -> Run:
    """Run `command` in `cwd`, timed from process start to exit; raise if it overruns."""
    full_env = dict(os.environ)
    full_env.pop("PYTEST_ADDOPTS", None)
    full_env.pop("BEAST_MODE_TOKEN", None)
    full_env.update(env or {})
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        list(command),
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(list(command), wall, cpu, done.returncode, done.stdout)


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def show_command(command: Sequence[str], url: str | None = None) -> str:
    """A command line for the docs, with the interpreter shown as `python` and the
    sandbox's `url` (its port changes every run) as URL."""
    shown = " ".join("python" if part == sys.executable else part for part in command)
    return shown.replace(url, "URL") if url else shown


def emit(result: Mapping[str, Any], path: Path | None) -> None:
    """Print the result as JSON, and save it to `path` when given."""
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if path is not None:
        path.write_text(text + "\n", encoding="utf-8")
