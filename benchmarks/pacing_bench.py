"""Learned pacing: roadmap runs with default settings against servers that limit them.

Each scenario starts a sandbox (its own process) that misbehaves one way, writes M tasks
of one chat request each, and runs `pytest --roadmap --roadmap-api URL` as a subprocess
with default settings except what the scenario names (-n, and --roadmap-max-queue 0 past
the default queue of 100 tasks); a real API URL, not the embedded sandbox, so the
progress tracker is written. The sandbox's log judges each run: chat requests, refusals
by status, start-up (process start to the first request); report.json gives passed /
failed / skipped and the concurrency changes. The bound is the physical one: the time M
tasks need at min(capacity(t) / L, server rate, client rate, N / L), health probes not
counted. `checks` holds the acceptance criteria of each scenario, `checks_met` in how
many runs each held. A run still going at --timeout is killed with its workers.

    capacity2          capacity 2 (503 beyond), -n 6, 48 tasks
    rate4-noheaders    server 4/s, 429 without Retry-After, client at its 10/s, -n 3,
                       40 tasks
    rate5-headers      server 5/s saying so on every answer, one run per header family
                       (--family to choose), default -n, 40 tasks
    capacity-4-1-4     capacity 4, then 1 for 6 s from 3 s after the first request, then
                       4 again, -n 6, 150 tasks
    quota10            after 10 answers every request gets 429 with Retry-After: 3600,
                       default -n, 30 tasks; then a --roadmap-resume run on the tracker it
                       left, against the server with the quota lifted
    gateway            a LiteLLM proxy's per-deployment rpm (--rpm 20 per calendar minute,
                       --gateway-headers: 429 with llm_provider-retry-after: 60 only, 2xx
                       with x-ratelimit-*-requests and no reset), default -n 4, 40 tasks
    gateway-queue      the same proxy holding over-limit requests until the next minute
                       (--rpm-queue) instead of refusing them
    gateway-told       the gateway, the user telling the run its limit
                       (--roadmap-rate-limit 20/min): health probes eat that rate
    nolimits           no limits: the runs of rows 1-3 of docs/benchmarks.md (--rows),
                       with the rate limits they name; row 3 against plain xdist
                       functions doing the same requests (extra_ms_per_task); it has
                       no checks: "no slower" means against the same script run on the
                       code from before, on the same machine

The gateway scenarios' bound is the issue's: the calendar minutes the work needs,
ceil(M / rpm) * 60 s (`minutes_bound_s`), judged with 1.3x; `windows_over_rpm` counts the
calendar minutes in which the sandbox admitted more than rpm (always 0: it refuses).

L is 250 ms in all but nolimits (--latency-ms changes it everywhere, --tasks M, -n N).

    python benchmarks/pacing_bench.py --scenario capacity2 --repeat 3
    python benchmarks/pacing_bench.py --scenario all --repeat 1 --json pacing.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from command_line import BenchmarkParser, settings_of, whole
from harness import (
    Sandbox,
    emit,
    median,
    plain_command,
    pytest_command,
    show_command,
    write_plain_tests,
    write_tasks,
)

from pytest_roadmap.sandbox import CHAT_PATH, HEALTH_PATH, max_in_flight

CLIENT_RATE = 10.0  # the plugin's default rate limit, requests per second
DEFAULT_WORKERS = 3  # the plugin's default concurrency
DEFAULT_QUEUE = 100  # the plugin's default --roadmap-max-queue
REFUSED = (429, 503)
HEADER_FAMILIES = ("ratelimit", "ratelimit-policy", "x-ratelimit")
# The settings of the original system that would reach the runs through the environment.
ENV_SETTINGS = (
    "PYTEST_ADDOPTS",
    "BEAST_MODE_TOKEN",
    "BEAST_MODE_API",
    "MAX_CONCURRENCY",
    "RATE_LIMIT",
    "TASK_TIMEOUT",
    "CUSTOM_MODEL",
    "ROADMAP_STORE",
    "ROADMAP_RUN_ID",
    "ROADMAP_SHARDS",
    "GITHUB_STEP_SUMMARY",
)
TASK_OF_MESSAGE = re.compile(r"^Task (\d+):")
TRACKER = "ROADMAP_PROGRESS.json"
POLL_S = 0.02


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    """One server and one run shape; `steps` is a capacity schedule counted from the
    first request, in [seconds, capacity] steps (the sandbox starts at `capacity`)."""

    name: str
    tasks: int
    latency_ms: float = 250.0
    workers: int | None = None  # None: the plugin's default concurrency
    client_rate: float | None = None  # None: the plugin's default rate limit
    capacity: int | None = None
    steps: tuple[tuple[float, int], ...] = ()
    server_rate: float | None = None
    sandbox_args: tuple[str, ...] = ()
    quota: int | None = None
    plain: bool = False  # also time plain xdist functions doing the same requests
    files: int = 2  # task files to spread the tasks over
    rpm: int | None = None  # a gateway's chat requests per calendar minute
    extra: tuple[str, ...] = ()  # more pytest options
    checks: Callable[[Mapping[str, Any], int], dict[str, bool]] = field(
        default=lambda run, tasks: {}
    )


# The acceptance criteria of each scenario, from one run's figures and the task count.


def _within(run: Mapping[str, Any], factor: float) -> bool:
    return bool(run["wall_s"] <= factor * run["bound_s"] + run["startup_s"])


def capacity2_checks(run: Mapping[str, Any], tasks: int) -> dict[str, bool]:
    return {
        "all_passed": run["passed"] == tasks,
        "refused_at_most_10pc": run["refused_share"] <= 0.10,
        "wall_within_1.35x_bound_plus_startup": _within(run, 1.35),
    }


def rate4_checks(run: Mapping[str, Any], tasks: int) -> dict[str, bool]:
    return {
        "all_passed": run["passed"] == tasks,
        "refused_at_most_10pc": run["refused_share"] <= 0.10,
        "wall_within_1.4x_bound_plus_startup": _within(run, 1.4),
    }


def rate5_checks(run: Mapping[str, Any], tasks: int) -> dict[str, bool]:
    return {"all_passed": run["passed"] == tasks, "at_most_2_refusals": run["refusals_all"] <= 2}


def capacity_414_checks(run: Mapping[str, Any], tasks: int) -> dict[str, bool]:
    phases = list(run["max_in_flight_by_phase"].values())
    return {
        "all_passed": run["passed"] == tasks,
        "refused_at_most_10pc": run["refused_share"] <= 0.10,
        "limit_came_back_up_in_report": bool(run["limit_came_back_up"]),
        "server_saw_more_than_1_in_flight_after_the_dip": phases[-1] > 1,
    }


def gateway_checks(run: Mapping[str, Any], tasks: int) -> dict[str, bool]:
    return {
        "all_passed": run["passed"] == tasks,
        "refused_at_most_10pc": run["refused_share"] <= 0.10,
        "wall_within_1.3x_minutes_bound_plus_startup": _within(run, 1.3),
    }


def quota_checks(run: Mapping[str, Any], tasks: int) -> dict[str, bool]:
    end = run["end_after_first_3600_s"]
    after = run["requests_after_first_3600"]
    return {
        "ended_within_20s_of_first_3600": end is not None and end <= 20.0,
        "at_most_5_requests_after_it": after is not None and after <= 5,
        "tracker_holds_the_quota": run["tracker_completed"] == run["quota"]
        and bool(run["tracker_matches_answers"]),
        "resume_sends_only_the_rest": run["resume_resent_answered"] == 0
        and run["resume_missing"] == 0,
    }


def _scenarios(options: argparse.Namespace) -> list[Scenario]:
    def tasks(default: int) -> int:
        return int(options.tasks or default)

    def latency(default: float) -> float:
        return float(options.latency_ms if options.latency_ms is not None else default)

    # The servers refuse past N in flight and say nothing of when to come back.
    quiet = () if options.capacity_retry_after else ("--no-capacity-retry-after",)
    wanted = set(options.scenario)
    every = "all" in wanted
    found: list[Scenario] = []
    if every or "capacity2" in wanted:
        m = tasks(48)
        found.append(
            Scenario(
                "capacity2",
                m,
                latency(250.0),
                workers=6,
                capacity=2,
                sandbox_args=("--capacity", "2", *quiet),
                checks=capacity2_checks,
            )
        )
    if every or "rate4-noheaders" in wanted:
        m = tasks(40)
        found.append(
            Scenario(
                "rate4-noheaders",
                m,
                latency(250.0),
                workers=3,
                server_rate=4.0,
                sandbox_args=("--rate-limit", "4", "--no-rate-limit-retry-after"),
                checks=rate4_checks,
            )
        )
    # nginx's limit_req with no burst: a request less than 1/rate after the last one it
    # admitted is refused (503 unless limit_req_status says 429), nothing said of why.
    spacing = {
        "nginx4-503": (40, 4.0, "503"),
        "nginx4-429": (40, 4.0, "429"),
        "nginx7-503": (60, 7.0, "503"),
        "nginx7-429": (60, 7.0, "429"),
    }
    for name, (count, rate, status) in spacing.items():
        if every or name in wanted or "nginx" in wanted:
            found.append(
                Scenario(
                    name,
                    tasks(count),
                    latency(250.0),
                    workers=3,
                    server_rate=rate,
                    sandbox_args=(
                        "--rate-limit",
                        f"{rate:g}",
                        "--rate-limit-spacing",
                        "--rate-limit-status",
                        status,
                        "--no-rate-limit-retry-after",
                    ),
                    checks=rate4_checks,
                )
            )
    if every or "rate5-headers" in wanted:
        m = tasks(40)
        for family in options.family or HEADER_FAMILIES:
            found.append(
                Scenario(
                    f"rate5-headers:{family}",
                    m,
                    latency(250.0),
                    server_rate=5.0,
                    sandbox_args=("--rate-limit", "5", "--rate-limit-headers", family),
                    checks=rate5_checks,
                )
            )
    if every or "capacity-4-1-4" in wanted:
        m = tasks(150)
        found.append(
            Scenario(
                "capacity-4-1-4",
                m,
                latency(250.0),
                workers=6,
                capacity=4,
                steps=((0.0, 4), (3.0, 1), (9.0, 4)),
                sandbox_args=("--capacity", "4", *quiet),
                checks=capacity_414_checks,
            )
        )
    if every or "quota10" in wanted:
        m = tasks(30)
        found.append(
            Scenario(
                "quota10",
                m,
                latency(250.0),
                quota=10,
                sandbox_args=("--quota", "10"),
                checks=quota_checks,
            )
        )
    gateways = {
        "gateway": ((), ()),
        "gateway-queue": (("--rpm-queue",), ()),
        "gateway-told": ((), ("--roadmap-rate-limit", "20/min")),
    }
    for name, (server, client) in gateways.items():
        if every or name in wanted:
            found.append(
                Scenario(
                    name,
                    tasks(40),
                    latency(250.0),
                    workers=4,
                    rpm=20,
                    sandbox_args=("--rpm", "20", "--gateway-headers", *server),
                    extra=client,
                    checks=gateway_checks,
                )
            )
    if every or "nolimits" in wanted:
        # The runs of docs/benchmarks.md rows 1-3, with the rate limits those rows name.
        rows = {
            1: Scenario("nolimits:row1", 600, 50.0, workers=4, client_rate=50.0, files=10),
            2: Scenario("nolimits:row2", 200, 200.0, workers=8, client_rate=1000.0, files=10),
            3: Scenario(
                "nolimits:row3", 2000, 0.0, workers=2, client_rate=1e5, plain=True, files=20
            ),
        }
        for row in options.rows:
            shape = rows[row]
            found.append(
                Scenario(
                    shape.name,
                    tasks(shape.tasks),
                    latency(shape.latency_ms),
                    workers=shape.workers,
                    client_rate=shape.client_rate,
                    plain=shape.plain,
                    files=shape.files,
                )
            )
    return found


# --------------------------------------------------------------------------- bound


def physical_bound(scenario: Scenario, schedule_offset: float = 0.0) -> float:
    """Seconds M tasks need at min(capacity(t) / L, server rate, client rate, N / L).

    `schedule_offset`: when the capacity schedule started, in seconds after the first
    request (the capacity before it is `capacity`).
    """
    if scenario.rpm is not None:
        return math.ceil(scenario.tasks / scenario.rpm) * 60.0
    latency = scenario.latency_ms / 1000.0
    rates = [scenario.server_rate or math.inf, scenario.client_rate or CLIENT_RATE]
    if latency > 0:
        rates.append((scenario.workers or DEFAULT_WORKERS) / latency)
    ceiling = min(rates)

    def rate(capacity: int | None) -> float:
        if capacity is None or latency == 0:
            return ceiling
        return min(ceiling, capacity / latency)

    phases = [(0.0, rate(scenario.capacity))]
    phases += [(schedule_offset + at, rate(capacity)) for at, capacity in scenario.steps]
    left = float(scenario.tasks)
    for (start, speed), (end, _) in zip(phases, [*phases[1:], (math.inf, 0.0)], strict=True):
        if speed <= 0:
            continue
        if left <= speed * (end - start):
            return start + left / speed
        left -= speed * (end - start)
    return math.inf


# --------------------------------------------------------------------------- runs


@dataclass
class Timed:
    """One subprocess run: wall time from start to exit, or to the timeout's kill."""

    started: float
    ended: float
    returncode: int | None
    output: str
    timed_out: bool

    @property
    def wall(self) -> float:
        return self.ended - self.started

    def tail(self, lines: int = 5) -> str:
        return "\n".join(self.output.strip().splitlines()[-lines:])


def run_timed(
    command: Sequence[str],
    cwd: Path,
    timeout: float,
    while_running: Callable[[], None] | None = None,
) -> Timed:
    """Run `command` in `cwd` in a process group of its own; `while_running` is called in
    a thread as soon as it has started. On timeout the whole group is killed."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_SETTINGS}
    started = time.time()
    process = subprocess.Popen(
        list(command),
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    helper = None
    if while_running is not None:
        helper = threading.Thread(target=while_running, daemon=True)
        helper.start()
    timed_out = False
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(process.pid, signal.SIGKILL)  # the run's own group: workers included
        output, _ = process.communicate()
    ended = time.time()
    if helper is not None:
        helper.join(10)
    return Timed(started, ended, None if timed_out else process.returncode, output, timed_out)


def roadmap_command(url: str, scenario: Scenario, extra: Iterable[str] = ()) -> list[str]:
    """`pytest --roadmap` with default settings except what the scenario names."""
    command = [*pytest_command(), "--roadmap-api", url]
    if scenario.workers is not None:
        command += ["-n", str(scenario.workers)]
    if scenario.client_rate is not None:
        command += ["--roadmap-rate-limit", f"{scenario.client_rate:g}"]
    if scenario.tasks > DEFAULT_QUEUE:
        command += ["--roadmap-max-queue", "0"]
    return [*command, *scenario.extra, *extra]


def read_report(folder: Path) -> dict[str, Any] | None:
    path = folder / "roadmap-report" / "report.json"
    if not path.exists():
        return None
    return dict(json.loads(path.read_text(encoding="utf-8")))


def tasks_of(entries: Iterable[Mapping[str, Any]], answered_only: bool = False) -> set[int]:
    """The task indices of the chat requests (answered 200 only, if asked), by prompt."""
    found = set()
    for entry in entries:
        task = TASK_OF_MESSAGE.match(str(entry.get("message") or ""))
        if task and entry["path"] == CHAT_PATH and (entry["status"] == 200 or not answered_only):
            found.add(int(task[1]))
    return found


def by_status(entries: Iterable[Mapping[str, Any]]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for entry in entries:
        status = int(entry["status"] or 0)
        if status in REFUSED:
            counts[status] = counts.get(status, 0) + 1
    return counts


def came_back_up(changes: Sequence[Mapping[str, Any]]) -> bool:
    """The concurrency limit rose again after its lowest point."""
    if not changes:
        return False
    targets = [int(c["to"]) for c in changes]
    low = targets.index(min(targets))
    return any(t > targets[low] for t in targets[low + 1 :])


def measure(sandbox: Sandbox, scenario: Scenario, folder: Path, timeout: float) -> dict[str, Any]:
    """One run of the scenario and what the sandbox and the report say of it."""
    if scenario.steps:
        sandbox.configure(capacity_schedule=None)
    if scenario.quota is not None:
        sandbox.configure(quota=scenario.quota)  # the resume run before turned it off
    sandbox.reset()
    for stale in (folder / "roadmap-report" / "report.json", folder / TRACKER):
        stale.unlink(missing_ok=True)
    command = roadmap_command(sandbox.url, scenario)
    schedule_at: list[float] = []

    def start_schedule() -> None:
        # The schedule counts from its configure call: make that the first request, so the
        # dip falls in the work whatever start-up takes.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sandbox.log():
                schedule_at.append(time.time())
                sandbox.configure(capacity_schedule=[list(step) for step in scenario.steps])
                return
            time.sleep(POLL_S)

    run = run_timed(command, folder, timeout, start_schedule if scenario.steps else None)
    entries = sandbox.log()
    result = figures(scenario, run, entries, read_report(folder), schedule_at)
    if scenario.quota is not None:
        result.update(quota_figures(sandbox, scenario, folder, timeout, run, entries))
    result["checks"] = scenario.checks(result, scenario.tasks)
    return result


def figures(
    scenario: Scenario,
    run: Timed,
    entries: Sequence[Mapping[str, Any]],
    report: Mapping[str, Any] | None,
    schedule_at: Sequence[float] = (),
) -> dict[str, Any]:
    chat = [e for e in entries if e["path"] == CHAT_PATH]
    health = [e for e in entries if e["path"] == HEALTH_PATH]
    first = min((float(e["arrived"]) for e in entries), default=run.ended)
    refused = by_status(chat)
    offset = schedule_at[0] - first if schedule_at else 0.0
    bound = physical_bound(scenario, offset)
    totals = report["totals"] if report else {}
    changes = report["run"].get("concurrency_changes", []) if report else []
    startup = first - run.started
    result: dict[str, Any] = {
        "returncode": run.returncode,
        "timed_out": run.timed_out,
        "passed": totals.get("passed"),
        "failed": totals.get("failed"),
        "skipped": totals.get("skipped"),
        "chat": len(chat),
        "refused": refused,
        "refused_share": sum(refused.values()) / len(chat) if chat else 0.0,
        "health": len(health),
        "health_refused": by_status(health),
        "refusals_all": sum(by_status(entries).values()),
        "wall_s": run.wall,
        "bound_s": bound,
        "wall_over_bound": run.wall / bound if bound > 0 else None,
        "startup_s": startup,
        "wall_minus_startup_over_bound": (run.wall - startup) / bound if bound > 0 else None,
        "changes": [f"{c['from']}->{c['to']}" for c in changes],
        "limit_came_back_up": came_back_up(changes),
        "rate_changes": [
            f"{c['from']:.3g}->{c['to']:.3g}: {c['reason']}"
            for c in (report["run"].get("rate_changes", []) if report else [])
        ],
        # Each request's arrival after the first, with its status when not 200 (h: health).
        "timeline": " ".join(
            f"{float(e['arrived']) - first:.2f}"
            + ("" if e["status"] == 200 else f"!{e['status']}")
            + ("h" if e["path"] == HEALTH_PATH else "")
            for e in entries
        ),
    }
    if scenario.rpm is not None:
        admitted: dict[int, int] = {}
        for entry in chat:
            if entry["status"] == 200:
                # A queued request went upstream in the minute it was answered in.
                minute = int(float(entry["answered"] or entry["arrived"]) // 60)
                admitted[minute] = admitted.get(minute, 0) + 1
        result["minutes_used"] = len(admitted)
        result["windows_over_rpm"] = sum(1 for n in admitted.values() if n > scenario.rpm)
        result["timeouts"] = sum(1 for e in chat if e["answered"] is None)
        result["tasks_sent_twice"] = len(chat) - len(tasks_of(chat)) - sum(refused.values())
    if scenario.steps:
        # The server's side of "came back up": chat requests answered 200 at once, among
        # those that arrived in each phase.
        phases: dict[str, int] = {}
        for index, (_, capacity) in enumerate(scenario.steps):
            start = first + offset + scenario.steps[index][0]
            end = (
                first
                + offset
                + (scenario.steps[index + 1][0] if index + 1 < len(scenario.steps) else math.inf)
            )
            inside = [e for e in chat if e["status"] == 200 and start <= e["arrived"] < end]
            phases[f"{index}:capacity {capacity}"] = max_in_flight(inside)
        result["max_in_flight_by_phase"] = phases
    if run.timed_out or run.returncode not in (0, 1):
        result["output_tail"] = run.tail()
    return result


def quota_figures(
    sandbox: Sandbox,
    scenario: Scenario,
    folder: Path,
    timeout: float,
    run: Timed,
    entries: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The end of a quota run, the tracker it left, and a --roadmap-resume run after it
    against the server without the quota."""
    quota_429 = [e for e in entries if e["status"] == 429 and e["answered"] is not None]
    first_answer = min((float(e["answered"]) for e in quota_429), default=None)
    after = (
        sum(1 for e in entries if float(e["arrived"]) > first_answer)
        if first_answer is not None
        else None
    )
    answered = tasks_of(entries, answered_only=True)
    completed = tracker_completed(folder / TRACKER)

    # The second run: the same tracker, --roadmap-resume, and the quota lifted, so every
    # task it sends can pass.
    sandbox.configure(quota=None)
    sandbox.reset()
    (folder / "roadmap-report" / "report.json").unlink(missing_ok=True)
    command = roadmap_command(sandbox.url, scenario, ["--roadmap-resume"])
    resume = run_timed(command, folder, timeout)
    resumed = sandbox.log()
    sent = tasks_of(resumed)
    report = read_report(folder)
    totals = report["totals"] if report else {}
    return {
        "quota": scenario.quota,
        "end_after_first_3600_s": run.ended - first_answer if first_answer is not None else None,
        "requests_after_first_3600": after,
        "tracker_completed": len(completed) if completed is not None else None,
        "tracker_matches_answers": completed == answered,
        "resume_wall_s": resume.wall,
        "resume_returncode": resume.returncode,
        "resume_chat": sum(1 for e in resumed if e["path"] == CHAT_PATH),
        "resume_tasks_sent": len(sent),
        # Sent again though run 1 had its answer; answered by neither run.
        "resume_resent_answered": len(sent & answered),
        "resume_missing": scenario.tasks - len(answered | tasks_of(resumed, answered_only=True)),
        "resume_passed": totals.get("passed"),
        "resume_skipped": totals.get("skipped"),
    }


def tracker_completed(path: Path) -> set[int] | None:
    """Task indices the tracker marks completed (its names are the tasks' titles)."""
    if not path.exists():
        return None
    tasks = json.loads(path.read_text(encoding="utf-8")).get("tasks", {})
    done = set()
    for entry in tasks.values():
        found = re.fullmatch(r"Benchmark task (\d+)", str(entry.get("name", "")))
        if found and entry.get("completed") is True:
            done.add(int(found[1]))
    return done


def measure_plain(
    sandbox: Sandbox, scenario: Scenario, folder: Path, timeout: float
) -> dict[str, Any]:
    """Plain xdist functions doing the same requests, no plugin: row 3's baseline."""
    sandbox.reset()
    command = plain_command(scenario.workers or 2)
    run = run_timed(command, folder, timeout)
    entries = sandbox.log()
    first = min((float(e["arrived"]) for e in entries), default=run.ended)
    return {"wall_s": run.wall, "startup_s": first - run.started, "returncode": run.returncode}


# --------------------------------------------------------------------------- main


def summarize(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The median of every number in the runs (None where some run has none)."""
    summary: dict[str, Any] = {}
    for key in dict.fromkeys(key for run in runs for key in run):
        values = [run.get(key) for run in runs]
        numbers = [
            float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        if numbers:
            summary[key] = round(median(numbers), 3) if len(numbers) == len(values) else None
    return summary


def checks_met(runs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """For each acceptance check, in how many runs it held: "2/3"."""
    names = dict.fromkeys(name for run in runs for name in run["checks"])
    return {
        name: f"{sum(bool(run['checks'].get(name)) for run in runs)}/{len(runs)}" for name in names
    }


def run_scenario(scenario: Scenario, repeat: int, timeout: float) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    plain_runs: list[dict[str, Any]] = []
    server_args = scenario.sandbox_args
    with (
        Sandbox(latency_ms=scenario.latency_ms, extra=scenario.sandbox_args) as sb,
        tempfile.TemporaryDirectory() as tmp,
    ):
        folder, plain_folder = Path(tmp, "roadmap"), Path(tmp, "plain")
        write_tasks(folder, scenario.tasks, scenario.files)
        if scenario.plain:
            write_plain_tests(plain_folder, scenario.tasks, scenario.files, sb.url)
        command = show_command(roadmap_command(sb.url, scenario), sb.url)
        for number in range(repeat):
            runs.append(measure(sb, scenario, folder, timeout))
            shown = {k: runs[-1][k] for k in ("passed", "failed", "chat", "refused", "wall_s")}
            print(f"{scenario.name} run {number + 1}: {shown}", file=sys.stderr)
            if scenario.plain:
                plain_runs.append(measure_plain(sb, scenario, plain_folder, timeout))
    result: dict[str, Any] = {
        "server": ["roadmap-sandbox", "--latency-ms", f"{scenario.latency_ms:g}", *server_args],
        "command": command,
        "tasks": scenario.tasks,
        "capacity_schedule_from_first_request": [list(s) for s in scenario.steps] or None,
        "checks_met": checks_met(runs),
        "median": summarize(runs),
        "runs": runs,
    }
    if plain_runs:
        plain_wall = median(run["wall_s"] for run in plain_runs)
        result["plain"] = {"median": summarize(plain_runs), "runs": plain_runs}
        result["extra_ms_per_task"] = round(
            (result["median"]["wall_s"] - plain_wall) / scenario.tasks * 1000, 3
        )
    return result


def main() -> None:
    names = ["all", "capacity2", "rate4-noheaders", "rate5-headers", "capacity-4-1-4"]
    names += ["quota10", "gateway", "gateway-queue", "gateway-told", "nolimits"]
    names += ["nginx", "nginx4-503", "nginx4-429", "nginx7-503", "nginx7-429"]
    parser = BenchmarkParser(__doc__)
    parser.add_argument(
        "--scenario", nargs="+", choices=names, default=["all"], help="scenarios to run"
    )
    parser.add_argument(
        "--family",
        nargs="+",
        choices=HEADER_FAMILIES,
        help="rate5-headers: only these header families (default: each)",
    )
    parser.add_argument(
        "--rows", nargs="+", type=int, choices=[1, 2, 3], default=[1, 2, 3], help="nolimits rows"
    )
    parser.add_argument(
        "--capacity-retry-after",
        action="store_true",
        help="the capacity scenarios' 503s carry Retry-After: 1 (each then pauses the whole run)",
    )
    parser.add_argument(
        "-n",
        "--workers",
        type=whole(1),
        default=None,
        help="N, xdist workers, instead of each scenario's own (the issue 24 row: -n 4)",
    )
    parser.tasks(None, help="M, tasks, instead of each scenario's own")
    parser.latency(None, help="L instead of each scenario's own")
    parser.repeat(3, help="runs of each scenario (median)")
    parser.timeout(300.0)
    parser.output()
    options = parser.parse_args()

    scenarios = _scenarios(options)
    if options.workers is not None:
        scenarios = [replace(scenario, workers=options.workers) for scenario in scenarios]
    results = {
        scenario.name: run_scenario(scenario, options.repeat, options.timeout)
        for scenario in scenarios
    }
    emit(
        {"settings": settings_of(options), "scenarios": results},
        options.json,
    )


if __name__ == "__main__":
    main()
