"""What the roadmap prints: the header lines, the status of a refused attempt, and the
closing summary."""

from __future__ import annotations

from collections.abc import Sequence

from pytest_roadmap.display import counted, escape_controls, shown_url
from pytest_roadmap.protocol import BEAST
from pytest_roadmap.results import FAILED, INTERRUPTED, NOT_RUN, PASSED, SKIPPED, RunRecord
from pytest_roadmap.settings import Settings
from pytest_roadmap.usage import shown_cost, shown_usage


def header_line(settings: Settings, api_url: str, workers: int, distributed: bool) -> str:
    """What the run will do; `workers` only when xdist really runs the tasks in workers,
    and the requests each keeps in flight when more than one."""
    url = escape_controls(shown_url(api_url))
    where = f"{url} (sandbox)" if settings.sandbox else url
    inflight = settings.inflight
    if distributed:
        shown = str(workers) + (f" inflight={inflight}" if inflight > 1 else "")
    elif inflight > 1:
        shown = f"0 (in-process) inflight={inflight}"
    else:
        shown = "0 (in-process, one task at a time)"
    protocol = f" protocol={settings.protocol}" if settings.protocol != BEAST else ""
    tokens = f" tokens={settings.token_rate:g}/min" if settings.token_rate is not None else ""
    return (
        f"roadmap: api={where}{protocol} model={settings.model} workers={shown} "
        f"rate={settings.rate_limit:g}/s{tokens} timeout={settings.timeout:g}s"
    )


def replaced_timeout_line(seconds: float, origin: str) -> str:
    """Beside pytest-timeout's own header line ("timeout: 300.0s"), which a project's ini file
    may set for its ordinary tests: the tasks are timed per attempt instead."""
    return (
        f"roadmap: pytest-timeout's timeout: {seconds}s ({origin}) does not apply to tasks: "
        "each attempt's call has its own, from the task timeout"
    )


# pytest_report_teststatus's (category, letter, word) for an attempt refused for load or held
# back by a pause: it ran nothing and spent no retry, so pytest-rerunfailures' "rerun" (R,
# counted in the summary's "N rerun") would read as flakiness. Lower case, like pytest's
# letters for what is not a failure (s, x).
REFUSED_STATUS = ("refused", "r", ("REFUSED", {"yellow": True}))


def summary_lines(record: RunRecord, batches: Sequence[str] = (), left_out: int = 0) -> list[str]:
    """The roadmap summary: totals, timing, failures with reasons, batches, changes, progress."""
    total = len(record.results)
    passed, failed, skipped = record.count(PASSED), record.count(FAILED), record.count(SKIPPED)
    ran = [r for r in record.results if r.attempts]
    average = sum(r.duration_s for r in ran) / len(ran) if ran else 0.0
    label = " (sandbox)" if record.sandbox else ""
    cut_off, not_run = record.count(INTERRUPTED), record.count(NOT_RUN)
    unfinished = (f", {cut_off} interrupted" if cut_off else "") + (
        f", {not_run} not run" if not_run else ""
    )
    checks = record.checks
    why = ""
    if failed and checks.tasks:
        wrong = checks.failed + checks.errors
        why = f" ({counted(wrong, 'wrong answer')}, {counted(failed - wrong, 'API failure')})"
    replay = "replay of saved answers, nothing sent: " if record.replay else ""
    # A retry follows a failed attempt; one refused for load was no failure.
    retries = sum(1 for r in record.results for a in r.attempts[:-1] if not a.refused)
    refused = sum(r.refusals for r in record.results)
    lines = [
        f"roadmap{label}: {replay}{counted(total, 'task')}: {passed} completed, {failed} failed"
        f"{why}, "
        f"{skipped} skipped{unfinished}; success rate {100.0 * record.success_rate:.0f}%",
        f"duration {record.duration_s:.1f} s, average {average:.2f} s per task, "
        f"{counted(retries, 'retry', 'retries')}"
        + (f", {counted(refused, 'attempt')} refused for load" if refused else ""),
    ]
    if checks.tasks:
        lines.append(f"checks: {checks.words()}")
    for result in record.results:
        if result.outcome == FAILED:
            lines.append(f"FAILED {result.task.id}: {result.error or 'no reason recorded'}")
    skipped_reasons: dict[str, int] = {}
    for result in record.results:
        if result.outcome == SKIPPED and result.error:
            skipped_reasons[result.error] = skipped_reasons.get(result.error, 0) + 1
    for reason, count in skipped_reasons.items():
        lines.append(f"SKIPPED {count}: {reason}")
    for name in batches:
        members = [r for r in record.results if r.batch == name]
        if members:
            counts = [sum(1 for r in members if r.outcome == o) for o in (PASSED, FAILED, SKIPPED)]
            lines.append(
                f"batch {name!r}: {counts[0]} passed, {counts[1]} failed, {counts[2]} skipped"
            )
    if left_out:
        noun = "task" if left_out == 1 else "tasks"
        lines.append(
            f"{left_out} {noun} in no batch left out (batch mode runs only the tasks its "
            "batches name)"
        )
    for change in record.concurrency_changes:
        lines.append(f"concurrency {change.old} -> {change.new}: {change.reason}")
    for pace in record.rate_changes:
        if pace.old != pace.new:
            lines.append(f"rate {pace.old:.3g}/s -> {pace.new:.3g}/s: {pace.reason}")
    pauses = record.pauses
    if pauses:
        lines.append(
            f"{counted(len(pauses), 'pause')} of every worker, "
            f"{sum(p.new for p in pauses):.1f} s in all (last: {pauses[-1].reason})"
        )
    requests_refused = sum(record.refusals.values())
    if requests_refused:
        by_status = ", ".join(f"{n} x {status}" for status, n in sorted(record.refusals.items()))
        lines.append(
            f"{counted(requests_refused, 'request')} refused for load ({by_status}): they ran "
            "nothing and spent no retry"
        )
    usage = record.usage
    if usage is not None:
        spent = record.cost_of(usage)
        cost = f", cost {shown_cost(spent)}" if spent is not None else ""
        lines.append(f"tokens: {shown_usage(usage)}{cost}")
    if record.stopped:
        lines.append(
            f"STOPPED: {record.stopped}; the tasks not run are skipped "
            "(--roadmap-resume continues later)"
        )
    months: dict[int, list[bool]] = {}
    for result in record.results:
        months.setdefault(result.task.month, []).append(result.outcome == PASSED)
    for month in sorted(months):
        done = months[month]
        # Only this run's: under -k or --lf the month has more tasks (`roadmap status`).
        lines.append(f"Month {month}: {sum(done)}/{len(done)} tasks of this run complete")
    return lines
