"""report.md: the run for people, also appended to the GitHub Actions step summary."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from pytest_roadmap.budgets import budget_rows
from pytest_roadmap.compliance import compliance_rows, of_record
from pytest_roadmap.display import escape_controls, shown_workers
from pytest_roadmap.errors import ReportError
from pytest_roadmap.results import (
    DOGFOODING_COUNTERS,
    FAILED,
    PASSED,
    SKIPPED,
    RunRecord,
    TaskResult,
    iso_utc,
)
from pytest_roadmap.usage import priced, shown_cost, shown_usage

# GitHub refuses a step summary above 1 MiB; keep a margin for the truncation note.
STEP_SUMMARY_LIMIT = 1024 * 1024 - 1024

# Backslash escapes stop Markdown syntax (GFM needs `\|` even inside table code
# spans); entities stop raw HTML and entity references.
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_SPECIAL = re.compile(r"[\\`*_\[\]|~&<>]")


def md_text(value: object) -> str:
    """Any text as inert inline Markdown on one line, safe in a table cell; line breaks
    become spaces, other control characters show escaped."""
    text = escape_controls(" ".join(str(value).split()))
    return _SPECIAL.sub(lambda m: _ESCAPES.get(m.group(), "\\" + m.group()), text)


def md_code(value: object) -> str:
    """Text as an inline code span on one line, safe in a table cell."""
    text = escape_controls(" ".join(str(value).split())).replace("|", "\\|")
    if not text:
        return ""
    ticks = "`" * (longest_backtick_run(text) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def longest_backtick_run(text: str) -> int:
    """Length of the longest run of backticks in `text`."""
    if "`" not in text:  # most text has none: skip the regex (10,000 tasks, 3 calls each)
        return 0
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


def fenced(text: str, info: str = "") -> str:
    """A fenced code block that no backtick run inside `text` can close early; line breaks
    and tabs stay, other control characters are shown escaped."""
    text = escape_controls(text.replace("\r\n", "\n"), keep="\n\t")
    fence = "`" * max(3, longest_backtick_run(text) + 1)
    body = text if text.endswith("\n") else text + "\n"
    return f"{fence}{info}\n{body}{fence}\n"


def _table(header: Iterable[str], rows: Iterable[Iterable[str]], align: str = "") -> list[str]:
    head = list(header)
    marks = [":---:" if a == "c" else "---:" if a == "r" else "---" for a in align.ljust(len(head))]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(marks) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return [*lines, ""]


def _seconds(value: float) -> str:
    return f"{value:.1f} s"


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f} %" if whole else "-"


def _bar(part: int, whole: int, width: int = 10) -> str:
    filled = round(width * part / whole) if whole else 0
    return "█" * filled + "░" * (width - filled)


def _summary(record: RunRecord) -> list[str]:
    passed, failed, skipped = (record.count(o) for o in (PASSED, FAILED, SKIPPED))
    ran = passed + failed
    rows = [
        ("API", md_text(record.api) + (" (sandbox)" if record.sandbox else "")),
        ("Model", md_text(record.model)),
        ("Run id", md_text(record.run_id) if record.run_id else "-"),
        ("Started", iso_utc(record.started) if record.started else "-"),
        ("Finished", iso_utc(record.finished) if record.finished else "-"),
        ("Duration", _seconds(record.duration_s)),
        ("Workers", shown_workers(record.workers, record.inflight)),
        ("Rate limit", f"{record.rate_limit:g} requests/s"),
        ("Tasks", str(len(record.results))),
        ("Passed", str(passed)),
        ("Failed", str(failed)),
        ("Skipped", str(skipped)),
        ("Reruns", str(record.reruns)),
        ("Refused for load", _refusals(record)),
        ("Success rate", f"{_percent(passed, ran)} of {ran} that ran"),
        ("Health probes", f"{record.health_probes}, unhealthy for {_seconds(record.unhealthy_s)}"),
    ]
    if record.stopped:
        rows.append(("Stopped", md_text(record.stopped)))
    if record.token_rate is not None:
        rows.append(("Token limit", f"{record.token_rate:g} tokens/min"))
    usage = record.usage
    if usage is not None:
        rows.append(("Tokens", shown_usage(usage)))
        if priced(record.price_in, record.price_out):
            rows.append(("Cost", shown_cost(record.cost_of(usage))))
    rows += [(label, md_text(text)) for label, text in budget_rows(record.budgets)]
    totals = record.checks
    if totals.tasks:
        rows.append(("Checks", md_text(totals.words())))
    if record.replay:
        rows.insert(0, ("Replay", md_text(f"answers of {record.replay}; nothing was sent")))
    rows.append(("Dogfooding", dogfooding_text(record)))
    return _table(("Run", ""), ([f"**{k}**", v] for k, v in rows))


def _checks(record: RunRecord) -> list[str]:
    """Each judged task's checks and what they found (the first line of it)."""
    rows = [
        [
            md_code(result.task.id)
            + (f" ({result.answers} answers)" if result.answers > 1 else ""),
            md_text(check.label),
            check.status,
            md_text(check.detail.splitlines()[0][:200] if check.detail else ""),
        ]
        for result, check in record.judged()
    ]
    return ["## Checks", "", *_table(("Task", "Check", "Result", "Why"), rows)] if rows else []


def _compliance(record: RunRecord) -> list[str]:
    """What the run's own log says it did to the API, so the limits can be checked."""
    rows = compliance_rows(of_record(record))
    return [
        "## Compliance",
        "",
        "From the run's own log of every request it sent.",
        "",
        *_table(("Limit", ""), ([f"**{k}**", md_text(v)] for k, v in rows)),
    ]


def _refusals(record: RunRecord) -> str:
    """Requests the API refused (429, 503): they ran nothing and spent no retry."""
    total = sum(record.refusals.values())
    if not total:
        return "0"
    by_status = ", ".join(
        f"{n} of status {status}" for status, n in sorted(record.refusals.items())
    )
    return f"{total} ({by_status})"


def dogfooding_text(record: RunRecord) -> str:
    """Passed dogfooding tasks per category, e.g. "2 improvements, 0 tests, ..."."""
    generated = record.dogfooding_generated
    return ", ".join(f"{generated[c]} {k}s" for k, c in DOGFOODING_COUNTERS.items())


def _failures(record: RunRecord) -> list[str]:
    failed = [r for r in record.results if r.outcome == FAILED]
    lines = ["## Failures", ""]
    if not failed:
        return [*lines, "No task failed.", ""]
    rows = (
        [md_code(r.task.id), md_text(r.task.title), str(len(r.attempts)), _reason(r)]
        for r in failed
    )
    return lines + _table(("Task", "Title", "Attempts", "Reason"), rows, "llr")


def _skipped(record: RunRecord) -> list[str]:
    skipped = [r for r in record.results if r.outcome == SKIPPED]
    if not skipped:
        return []
    rows = ([md_code(r.task.id), md_text(r.task.title), _reason(r)] for r in skipped)
    return ["## Skipped", "", *_table(("Task", "Title", "Reason"), rows)]


def _reason(result: TaskResult) -> str:
    return md_text(result.error) if result.error else "-"


def _retries(record: RunRecord) -> list[str]:
    retried = [r for r in record.results if len(r.attempts) > 1]
    lines = ["## Retries", ""]
    if not retried:
        return [*lines, "No task needed a retry.", ""]
    rows = (
        [
            md_code(r.task.id),
            str(len(r.attempts)),
            " → ".join(a.outcome for a in r.attempts),
            md_text(next((a.error for a in reversed(r.attempts) if a.error), "-")),
        ]
        for r in retried
    )
    return lines + _table(("Task", "Attempts", "Outcomes", "Last error"), rows, "lr")


def _concurrency(record: RunRecord) -> list[str]:
    lines = ["## Concurrency changes", ""]
    if not record.concurrency_changes:
        return [*lines, "The concurrency limit did not change.", ""]
    rows = (
        [f"+{_seconds(c.at - record.started)}", str(c.old), str(c.new), md_text(c.reason)]
        for c in record.concurrency_changes
    )
    return lines + _table(("After start", "From", "To", "Reason"), rows, "rrr")


def _pace(record: RunRecord) -> list[str]:
    """The learned send rate's changes and the pauses the API asked for."""
    if not record.pace_changes:
        return []
    rows = (
        [
            f"+{_seconds(c.at - record.started)}",
            c.kind,
            f"{c.old:.3g}/s → {c.new:.3g}/s" if c.kind == "rate" else _seconds(c.new),
            md_text(c.reason),
        ]
        for c in record.pace_changes
        if c.kind != "stop"
    )
    return [
        "## Send rate and pauses",
        "",
        *_table(("After start", "What", "Change", "Reason"), rows, "r"),
    ]


def _usage(record: RunRecord) -> list[str]:
    """Tokens per task (and their cost, with a price), when the answers said."""
    if record.usage is None:
        return []
    with_cost = priced(record.price_in, record.price_out)
    header = ["Task", "Prompt", "Completion", "Total"] + (["Cost"] if with_cost else [])
    rows = []
    for r in record.results:
        usage = r.usage
        if usage is None:
            continue
        row = [md_code(r.task.id), f"{usage.prompt:,}", f"{usage.completion:,}", f"{usage.total:,}"]
        if with_cost:
            row.append(shown_cost(record.cost_of(usage)))
        rows.append(row)
    return ["## Token usage", "", *_table(header, rows, "lrrrr")]


def _progress(record: RunRecord) -> list[str]:
    weeks: dict[int, dict[int, list[TaskResult]]] = defaultdict(lambda: defaultdict(list))
    for r in record.results:
        weeks[r.task.month][r.task.week].append(r)
    rows: list[list[str]] = []
    for month in sorted(weeks):
        in_month = [r for week in weeks[month].values() for r in week]
        done = sum(r.outcome == PASSED for r in in_month)
        total = len(in_month)
        rows.append(
            [
                f"**Month {month}**",
                "",
                f"**{done}/{total}**",
                f"{_bar(done, total)} {_percent(done, total)}",
            ]
        )
        for week in sorted(weeks[month]):
            results = weeks[month][week]
            done = sum(r.outcome == PASSED for r in results)
            rows.append(
                ["", f"Week {week}", f"{done}/{len(results)}", _percent(done, len(results))]
            )
    lines = ["## Roadmap progress", "", "Passed tasks of those selected for this run.", ""]
    if not rows:
        return [*lines, "No tasks were selected.", ""]
    return lines + _table(("Month", "Week", "Passed", "Progress"), rows, "llrl")


def render_markdown(record: RunRecord) -> str:
    """report.md as text."""
    lines = ["# Roadmap run report", ""]
    parts = (
        _summary,
        _checks,
        _compliance,
        _failures,
        _skipped,
        _retries,
        _concurrency,
        _pace,
        _usage,
    )
    for part in (*parts, _progress):
        lines.extend(part(record))
    return "\n".join(lines)


def append_step_summary(markdown: str) -> Path | None:
    """Append `markdown` to the file named by GITHUB_STEP_SUMMARY, if that is set.

    Returns the file appended to. Appending (not replacing) is what GitHub expects:
    other steps' summaries may already be there.
    """
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    data = markdown.encode("utf-8")
    if len(data) > STEP_SUMMARY_LIMIT:
        cut = data[:STEP_SUMMARY_LIMIT].decode("utf-8", "ignore")
        cut = cut[: cut.rfind("\n") + 1]
        markdown = cut + "\n\n*Truncated to fit the step summary; see report.md.*\n"
    path = Path(target)
    try:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(markdown if markdown.endswith("\n") else markdown + "\n")
    except OSError as exc:
        raise ReportError(
            f"cannot append to GITHUB_STEP_SUMMARY file {path}: {exc.strerror or exc}"
        ) from None
    return path
