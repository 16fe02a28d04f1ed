"""report.html: one self-contained page with the summary and a timeline of the run.

No scripts, no network: inline CSS and inline SVG only, so the file can be attached
to a CI run and opened anywhere. Every text from task files or the API goes through
html.escape, inside SVG too (inline SVG is parsed by the HTML parser).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape as escape_html

from pytest_roadmap.budgets import budget_rows
from pytest_roadmap.compliance import compliance_rows, of_record
from pytest_roadmap.display import counted, escape_controls, shown_workers
from pytest_roadmap.report.markdown import dogfooding_text
from pytest_roadmap.results import (
    FAILED,
    PASSED,
    RERUN,
    SKIPPED,
    Attempt,
    RunRecord,
    Sample,
    TaskResult,
    iso_utc,
)
from pytest_roadmap.usage import priced, shown_cost, shown_usage

OUTCOME_COLOURS = {PASSED: "#2e9e44", FAILED: "#d1352b", RERUN: "#f0a202", SKIPPED: "#9aa0a6"}
LIMIT_COLOUR = "#3367d6"
RATE_COLOUR = "#8e44ad"
UNHEALTHY_COLOUR = "#fbe3e3"
PAUSE_COLOUR = "#fff1c9"

# Timeline geometry, in SVG user units (the SVG scales to the page width).
WIDTH = 1000
LEFT = 96  # room for lane labels
RIGHT = 16
TOP = 8
LANE_H = 22
LANE_GAP = 4
PANEL_GAP = 26
PANEL_H = 64
AXIS_H = 34
# Steps a time axis may use, in seconds: round numbers a person reads at a glance.
TICK_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)

CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  margin: 0 auto; max-width: 1200px; padding: 16px 24px 48px; color: #1f2328; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
.sub { color: #57606a; margin: 0 0 12px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0; }
.card { border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 14px; min-width: 96px; }
.card b { display: block; font-size: 22px; }
.card.passed b { color: #1a7f37; } .card.failed b { color: #cf222e; }
.card.rerun b { color: #9a6700; } .card.skipped b { color: #57606a; }
table { border-collapse: collapse; margin: 6px 0; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { border-radius: 10px; padding: 0 8px; color: #fff; font-size: 12px; white-space: nowrap; }
.badge.passed { background: #2e9e44; } .badge.failed { background: #d1352b; }
.badge.rerun { background: #f0a202; color: #1f2328; } .badge.skipped { background: #9aa0a6; }
.badge.error { background: #8250df; } pre { margin: 0; white-space: pre-wrap; font-size: 12px; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 18px; list-style: none; padding: 0;
  margin: 6px 0 0; color: #393f46; }
.legend li { display: flex; align-items: center; gap: 6px; }
.sw { display: inline-block; width: 16px; height: 12px; border-radius: 2px; }
.ln { display: inline-block; width: 18px; height: 0; border-top: 2px solid; }
.ln.dashed { border-top-style: dashed; }
#timeline { width: 100%; height: auto; display: block; border: 1px solid #d0d7de;
  border-radius: 6px; background: #fff; }
#timeline text { font: 11px system-ui, sans-serif; fill: #393f46; }
#timeline text.lane-label { font: 12px ui-monospace, Menlo, Consolas, monospace; fill: #1f2328; }
#timeline text.bar-label { font-size: 10px; pointer-events: none; }
#timeline .grid { stroke: #eaeef2; }
#timeline .lane-bg { fill: #8c959f; fill-opacity: 0.09; }
#timeline .panel-bg { fill: #8c959f; fill-opacity: 0.03; stroke: #eaeef2; }
#timeline rect.bar { stroke: #fff; stroke-width: 0.5; }
#timeline rect.bar:hover { stroke: #1f2328; stroke-width: 1.5; }
"""


def escape(text: str) -> str:
    """Text for HTML: markup escaped, and control characters shown escaped (raw, an ESC
    sequence reaches the terminal of whoever views the file's source)."""
    return escape_html(escape_controls(text, keep="\n\t"))


@dataclass(frozen=True)
class TimeAxis:
    """Maps epoch seconds onto the shared x axis of every timeline panel."""

    start: float
    end: float

    @property
    def span(self) -> float:
        return self.end - self.start

    def x(self, epoch: float) -> float:
        return LEFT + (epoch - self.start) / self.span * (WIDTH - LEFT - RIGHT)

    def ticks(self) -> list[float]:
        """Seconds after start for about eight gridlines."""
        step = next((s for s in TICK_STEPS if self.span / s <= 10), 3600.0)
        while self.span / step > 10:
            step *= 2
        return [i * step for i in range(int(self.span / step) + 1)]


def _f(value: float) -> str:
    return f"{value:.1f}"


def _clock(seconds: float, span: float) -> str:
    if span < 10:  # ticks can be half a second apart: whole seconds would repeat
        return f"{seconds:.1f} s"
    if span < 120:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _worker_key(worker: str) -> list[object]:
    # gw2 before gw10: compare digit runs as numbers.
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", worker)]


def _time_axis(record: RunRecord) -> TimeAxis:
    starts = [a.started for r in record.results for a in r.attempts]
    ends = [a.finished for r in record.results for a in r.attempts]
    ats = [s.at for s in record.samples] + [c.at for c in record.concurrency_changes]
    ats += [c.at for c in record.pace_changes]
    start = min([t for t in (record.started, *starts, *ats) if t > 0], default=0.0)
    end = max([record.finished, *ends, *ats], default=start)
    return TimeAxis(start, max(end, start + 1.0))


def _attempt_title(result: TaskResult, attempt: Attempt) -> str:
    lines = [
        f"{result.task.id}: {result.task.title}",
        f"attempt {attempt.number} of {len(result.attempts)}: {attempt.outcome}, "
        f"{attempt.duration_s:.2f} s on {attempt.worker}",
    ]
    if attempt.error:
        lines.append(attempt.error)
    return escape("\n".join(lines))


def _bar(axis: TimeAxis, y: float, result: TaskResult, attempt: Attempt) -> str:
    x0 = axis.x(attempt.started)
    # A fast attempt must still show as a sliver rather than vanish.
    width = max(2.0, axis.x(attempt.finished) - x0)
    colour = OUTCOME_COLOURS.get(attempt.outcome, OUTCOME_COLOURS[SKIPPED])
    parts = [
        f'<g class="attempt {escape(attempt.outcome)}">'
        f'<rect class="bar" x="{_f(x0)}" y="{_f(y + 2)}" width="{_f(width)}" '
        f'height="{LANE_H - 4}" rx="2" fill="{colour}">'
        f"<title>{_attempt_title(result, attempt)}</title></rect>"
    ]
    label = result.task.id
    if width > 6.5 * len(label) + 8:
        ink = "#1f2328" if attempt.outcome in (RERUN, SKIPPED) else "#fff"
        parts.append(
            f'<text class="bar-label" x="{_f(x0 + 4)}" y="{_f(y + LANE_H / 2 + 3.5)}" '
            f'style="fill:{ink}">{escape(label)}</text>'
        )
    parts.append("</g>")
    return "".join(parts)


def _lanes(axis: TimeAxis, record: RunRecord, top: float) -> tuple[list[str], float]:
    by_worker: dict[str, list[tuple[TaskResult, Attempt]]] = {}
    for result in record.results:
        for attempt in result.attempts:
            by_worker.setdefault(attempt.worker, []).append((result, attempt))
    parts: list[str] = []
    y = top
    for worker in sorted(by_worker, key=_worker_key):
        parts.append(f'<g class="lane" data-worker="{escape(worker)}">')
        parts.append(
            f'<rect class="lane-bg" x="{LEFT}" y="{_f(y)}" '
            f'width="{WIDTH - LEFT - RIGHT}" height="{LANE_H}"/>'
        )
        parts.append(
            f'<text class="lane-label" x="{LEFT - 8}" y="{_f(y + LANE_H / 2 + 4)}" '
            f'text-anchor="end">{escape(worker)}</text>'
        )
        parts.extend(_bar(axis, y, r, a) for r, a in by_worker[worker])
        parts.append("</g>")
        y += LANE_H + LANE_GAP
    if not by_worker:
        parts.append(f'<text x="{LEFT}" y="{_f(y + 15)}">No attempts were recorded.</text>')
        y += LANE_H + LANE_GAP
    return parts, y - LANE_GAP


def _panel(top: float, title: str, unit: str, peak: float, body: Iterable[str]) -> list[str]:
    """A chart box on the shared time axis, with its name and 0/peak marks on the left."""
    right = WIDTH - RIGHT
    return [
        f'<g class="panel" data-panel="{escape(title)}">',
        f'<rect class="panel-bg" x="{LEFT}" y="{_f(top)}" width="{right - LEFT}" '
        f'height="{PANEL_H}"/>',
        f'<text x="{LEFT - 8}" y="{_f(top + PANEL_H / 2 - 2)}" text-anchor="end">{title}</text>',
        f'<text x="{LEFT - 8}" y="{_f(top + PANEL_H / 2 + 11)}" text-anchor="end">{unit}</text>',
        f'<text x="{LEFT + 4}" y="{_f(top + 11)}">{peak:g}</text>',
        f'<text x="{LEFT + 4}" y="{_f(top + PANEL_H - 3)}">0</text>',
        *body,
        "</g>",
    ]


def _scale(top: float, peak: float) -> tuple[float, float]:
    """The panel's baseline y and units per value: y = base - value * per."""
    return top + PANEL_H, (PANEL_H - 14) / peak


def _limit_panel(axis: TimeAxis, record: RunRecord, top: float) -> list[str]:
    samples = sorted(record.samples, key=lambda s: s.at)
    peak = float(
        max([s.limit for s in samples] + [c.new for c in record.concurrency_changes] + [1])
    )
    base, per = _scale(top, peak)
    body: list[str] = []
    # The limit as a step line through the monitor's samples and every change between them.
    steps = sorted(
        [(s.at, s.limit) for s in samples] + [(c.at, c.new) for c in record.concurrency_changes]
    )
    if len(steps) > 1:
        path = [f"M{_f(axis.x(steps[0][0]))},{_f(base - steps[0][1] * per)}"]
        for at, limit in steps[1:]:
            path.append(f"H{_f(axis.x(at))}V{_f(base - limit * per)}")
        body.append(
            f'<path class="limit" d="{"".join(path)}" fill="none" '
            f'stroke="{LIMIT_COLOUR}" stroke-width="2"/>'
        )
    else:
        body.append(f'<text x="{LEFT + 40}" y="{_f(top + 36)}">no samples recorded</text>')
    for c in record.concurrency_changes:
        tip = escape(f"limit {c.old} → {c.new}: {c.reason}")
        body.append(
            f'<circle class="change" cx="{_f(axis.x(c.at))}" cy="{_f(base - c.new * per)}" '
            f'r="4" fill="#fff" stroke="{LIMIT_COLOUR}" stroke-width="2">'
            f"<title>{tip}</title></circle>"
        )
    return _panel(top, "limit", "slots", peak, body)


def _rate_panel(axis: TimeAxis, record: RunRecord, top: float) -> list[str]:
    samples = sorted(record.samples, key=lambda s: s.at)
    cap = record.rate_limit if math.isfinite(record.rate_limit) and record.rate_limit > 0 else 0.0
    observed = max([s.requests_per_s for s in samples if math.isfinite(s.requests_per_s)] + [0.0])
    peak = round(max(observed, cap, 1.0), 2)
    base, per = _scale(top, peak)
    body: list[str] = []
    if cap:
        y = _f(base - cap * per)
        body.append(
            f'<line class="rate-limit" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y}" y2="{y}" '
            f'stroke="{RATE_COLOUR}" stroke-opacity="0.6" stroke-dasharray="5 4">'
            f"<title>rate limit {cap:g} requests/s</title></line>"
        )
    for pause in record.pauses:
        x0, x1 = axis.x(pause.at), axis.x(min(pause.at + pause.new, axis.end))
        body.append(
            f'<rect class="pause" x="{_f(x0)}" y="{_f(top)}" width="{_f(max(1.0, x1 - x0))}" '
            f'height="{PANEL_H}" fill="{PAUSE_COLOUR}">'
            f"<title>{escape(f'paused {pause.new:.3g} s: ' + ' '.join(pause.reason.split()))}"
            "</title></rect>"
        )
    for change in record.rate_changes:
        reason = " ".join(change.reason.split())
        tip = escape(f"rate {change.old:.3g} → {change.new:.3g}/s: {reason}")
        body.append(
            f'<circle class="rate-change" cx="{_f(axis.x(change.at))}" '
            f'cy="{_f(base - min(change.new, peak) * per)}" r="4" fill="#fff" '
            f'stroke="{RATE_COLOUR}" stroke-width="2"><title>{tip}</title></circle>'
        )
    # Each point's rate is the mean since the point before: a flat step over that span.
    points = [s for s in samples if math.isfinite(s.requests_per_s)]
    if len(points) > 1:
        path = [f"M{_f(axis.x(points[0].at))},{_f(base - points[1].requests_per_s * per)}"]
        for i, point in enumerate(points[1:], 1):
            path.append(f"H{_f(axis.x(point.at))}")
            if i + 1 < len(points):
                path.append(f"V{_f(base - points[i + 1].requests_per_s * per)}")
        body.append(
            f'<path class="rate" d="{"".join(path)}" fill="none" '
            f'stroke="{RATE_COLOUR}" stroke-width="2" stroke-linejoin="round"/>'
        )
    else:
        body.append(f'<text x="{LEFT + 40}" y="{_f(top + 36)}">no samples recorded</text>')
    return _panel(top, "requests", "per s", peak, body)


def _unhealthy(axis: TimeAxis, samples: Sequence[Sample], top: float, bottom: float) -> list[str]:
    """Shade the spans where the health probe said the server was down."""
    ordered = sorted(samples, key=lambda s: s.at)
    parts = []
    for i, s in enumerate(ordered):
        if s.healthy:
            continue
        end = ordered[i + 1].at if i + 1 < len(ordered) else axis.end
        x0 = axis.x(s.at)
        parts.append(
            f'<rect class="unhealthy" x="{_f(x0)}" y="{_f(top)}" '
            f'width="{_f(max(1.0, axis.x(end) - x0))}" height="{_f(bottom - top)}" '
            f'fill="{UNHEALTHY_COLOUR}"><title>server unhealthy</title></rect>'
        )
    return parts


def render_timeline(record: RunRecord) -> str:
    """The timeline SVG: worker lanes, then limit and request rate on the same time axis."""
    axis = _time_axis(record)
    lanes, lanes_bottom = _lanes(axis, record, TOP)
    limit_top = lanes_bottom + PANEL_GAP
    rate_top = limit_top + PANEL_H + PANEL_GAP
    bottom = rate_top + PANEL_H
    height = bottom + AXIS_H
    grid: list[str] = []
    for seconds in axis.ticks():
        x = _f(axis.x(axis.start + seconds))
        grid.append(f'<line class="grid" x1="{x}" x2="{x}" y1="{TOP}" y2="{_f(bottom)}"/>')
        grid.append(
            f'<text x="{x}" y="{_f(bottom + 14)}" text-anchor="middle">'
            f"{_clock(seconds, axis.span)}</text>"
        )
    grid.append(
        f'<text x="{WIDTH - RIGHT}" y="{_f(bottom + 29)}" text-anchor="end">'
        "time since the run started</text>"
    )
    label = f"Timeline of {len(record.results)} tasks over {axis.span:.1f} s"
    return "\n".join(
        [
            f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} '
            f'{_f(height)}" role="img" aria-label="{escape(label)}">',
            *_unhealthy(axis, record.samples, TOP, bottom),
            *grid,
            *lanes,
            *_limit_panel(axis, record, limit_top),
            *_rate_panel(axis, record, rate_top),
            "</svg>",
        ]
    )


LEGEND = [
    f'<li><span class="sw" style="background:{colour}"></span>{name}</li>'
    for name, colour in OUTCOME_COLOURS.items()
] + [
    f'<li><span class="ln" style="color:{LIMIT_COLOUR}"></span>concurrency limit '
    f"(○ = a change)</li>",
    f'<li><span class="ln" style="color:{RATE_COLOUR}"></span>requests per second</li>',
    f'<li><span class="ln dashed" style="color:{RATE_COLOUR}"></span>rate limit '
    "(○ = a change of the learned rate)</li>",
    f'<li><span class="sw" style="background:{PAUSE_COLOUR}"></span>every worker paused</li>',
    f'<li><span class="sw" style="background:{UNHEALTHY_COLOUR};border:1px solid #e6b8b8">'
    "</span>server unhealthy</li>",
]


def _cards(record: RunRecord) -> str:
    ran = record.count(PASSED) + record.count(FAILED)
    cards = [
        ("passed", "Passed", str(record.count(PASSED))),
        ("failed", "Failed", str(record.count(FAILED))),
        ("skipped", "Skipped", str(record.count(SKIPPED))),
        ("rerun", "Reruns", str(record.reruns)),
        ("", "Success rate", f"{record.success_rate:.0%}" if ran else "-"),
        ("", "Duration", f"{record.duration_s:.1f} s"),
        ("", "Tasks", str(len(record.results))),
    ]
    totals = record.checks
    if totals.tasks:
        cards.insert(2, ("failed", "Wrong answers", str(totals.failed + totals.errors)))
    usage = record.usage
    if usage is not None:
        cards.append(("", "Tokens", f"{usage.total:,}"))
        if priced(record.price_in, record.price_out):
            cards.append(("", "Cost", escape(shown_cost(record.cost_of(usage)))))
    return (
        '<div class="cards">'
        + "".join(f'<div class="card {c}"><b>{v}</b>{n}</div>' for c, n, v in cards)
        + "</div>"
    )


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: str = "") -> str:
    """An HTML table; cells arrive escaped. `numeric` marks right-aligned columns (n)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{cell}</td>' if numeric[i : i + 1] == "n" else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _settings(record: RunRecord) -> str:
    rows = [
        ("API", escape(record.api) + (" (sandbox)" if record.sandbox else "")),
        ("Model", escape(record.model)),
        ("Run id", escape(record.run_id or "-")),
        ("Started", iso_utc(record.started) if record.started else "-"),
        ("Finished", iso_utc(record.finished) if record.finished else "-"),
        ("Workers", shown_workers(record.workers, record.inflight)),
        ("Rate limit", f"{record.rate_limit:g} requests/s"),
        (
            "Health",
            f"{counted(record.health_probes, 'probe')}, unhealthy for {record.unhealthy_s:.1f} s",
        ),
        ("Protocol", escape(record.protocol)),
        (
            "Token limit",
            f"{record.token_rate:g} tokens/min" if record.token_rate is not None else "none",
        ),
        ("Tokens", escape(shown_usage(record.usage))),
        *[(label, escape(text)) for label, text in budget_rows(record.budgets)],
        ("Dogfooding", escape(dogfooding_text(record))),
    ]
    if record.replay:
        rows.insert(0, ("Replay", escape(f"answers of {record.replay}; nothing was sent")))
    return _table(("Setting", "Value"), rows)


def _compliance(record: RunRecord) -> str:
    rows = [(label, escape(text)) for label, text in compliance_rows(of_record(record))]
    return '<p class="sub">From the run\'s own log of every request it sent.</p>' + _table(
        ("Limit", "What the run did"), rows
    )


def _task_rows(record: RunRecord) -> Iterable[Sequence[str]]:
    with_usage = record.usage is not None
    with_cost = with_usage and priced(record.price_in, record.price_out)
    for r in record.results:
        output = f'<a href="{escape(r.output)}">{escape(r.output)}</a>' if r.output else ""
        usage = r.usage
        tokens = [f"{usage.total:,}" if usage else "-"] if with_usage else []
        costs = [escape(shown_cost(record.cost_of(usage)))] if with_cost else []
        yield (
            f"<code>{escape(r.task.id)}</code>",
            escape(r.task.title),
            f"{r.task.month}/{r.task.week}",
            f'<span class="badge {escape(r.outcome)}">{escape(r.outcome)}</span>',
            str(len(r.attempts)),
            f"{r.duration_s:.1f} s",
            escape(r.worker or "-"),
            escape(" ".join((r.error or "").split())),
            output,
            *tokens,
            *costs,
        )


def _checks(record: RunRecord) -> list[str]:
    """Each judged task's checks: what each wanted and what it found."""
    rows = [
        (
            f"<code>{escape(result.task.id)}</code>{_answers(result.answers)}",
            escape(check.label),
            f'<span class="badge {escape(check.status)}">{escape(check.status)}</span>',
            f"<pre>{escape(check.detail)}</pre>" if check.detail else "",
        )
        for result, check in record.judged()
    ]
    if not rows:
        return []
    return [
        "<h2>Checks</h2>",
        f'<p class="sub">{escape(record.checks.words())}</p>',
        _table(("Task", "Check", "Result", "What the answer had"), rows),
    ]


def _answers(count: int) -> str:
    return f" ({count} answers)" if count > 1 else ""


def _changes(record: RunRecord) -> str:
    if not record.concurrency_changes:
        return "<p>The concurrency limit did not change.</p>"
    rows = (
        (f"+{c.at - record.started:.1f} s", str(c.old), str(c.new), escape(c.reason))
        for c in record.concurrency_changes
    )
    return _table(("After start", "From", "To", "Reason"), rows, "nnn")


def render_html(record: RunRecord) -> str:
    """report.html as text."""
    title = "Roadmap replay report" if record.replay else "Roadmap run report"
    sub = f"{escape(record.model)} on {escape(record.api)}" + (
        " (sandbox)" if record.sandbox else ""
    )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{title}</title>",
            f"<style>{CSS}</style>",
            "</head>",
            "<body>",
            f"<h1>{title}</h1>",
            f'<p class="sub">{sub}</p>',
            _cards(record),
            "<h2>Timeline</h2>",
            '<p class="sub">One lane per worker, one bar per attempt; hover a bar for the '
            "task, attempt and error.</p>",
            render_timeline(record),
            f'<ul class="legend">{"".join(LEGEND)}</ul>',
            "<h2>Tasks</h2>",
            _table(
                (
                    "Task",
                    "Title",
                    "Month/week",
                    "Outcome",
                    "Attempts",
                    "Duration",
                    "Worker",
                    "Error",
                    "Output",
                    *(["Tokens"] if record.usage is not None else []),
                    *(
                        ["Cost"]
                        if record.usage is not None and priced(record.price_in, record.price_out)
                        else []
                    ),
                ),
                _task_rows(record),
                "    nn   nn",
            ),
            *_checks(record),
            "<h2>Compliance</h2>",
            _compliance(record),
            "<h2>Concurrency changes</h2>",
            _changes(record),
            "<h2>Run</h2>",
            _settings(record),
            "</body>",
            "</html>",
            "",
        ]
    )
