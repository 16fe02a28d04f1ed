"""Reports: report.json fields, report.md, report.html, task outputs and atomic writes."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pytest_roadmap.report as report_module
from pytest_roadmap.atomic import write_atomic, write_many_atomic
from pytest_roadmap.checks.verdict import CheckResult, Verdict
from pytest_roadmap.errors import ReportError, RoadmapError
from pytest_roadmap.protocol import Usage
from pytest_roadmap.report import (
    SCHEMA_VERSION,
    OutputWriter,
    build_json,
    output_path,
    render_html,
    render_markdown,
    write_reports,
)
from pytest_roadmap.report.markdown import (
    STEP_SUMMARY_LIMIT,
    append_step_summary,
    fenced,
    md_code,
    md_text,
)
from pytest_roadmap.results import (
    DOGFOODING_COUNTERS,
    Alert,
    Attempt,
    ConcurrencyChange,
    PaceChange,
    RunRecord,
    Sample,
    TaskResult,
)
from pytest_roadmap.tasks import CATEGORIES, Task
from tests.support.chromium import CHROMIUM, console_lines, run_chromium

T0 = 1_736_510_400.0  # 2025-01-10T12:00:00Z
ROOT = Path(__file__).resolve().parents[2]
MALICIOUS = "<script>alert(1)</script>"


# --- a small factory -------------------------------------------------------------------


def make_task(task_id: str, **fields: Any) -> Task:
    values: dict[str, Any] = {"title": f"Title of {task_id}", "prompt": "Write it."}
    values.update(month=1, week=1)
    values.update(fields)
    return Task(id=task_id, **values)


def make_result(
    task: Task,
    outcomes: tuple[str, ...] = ("passed",),
    *,
    worker: str = "gw0",
    start: float = T0 + 1,
    duration: float = 2.0,
    error: str | None = None,
    answer: dict[str, Any] | None = None,
    batch: str | None = None,
) -> TaskResult:
    """A result whose attempts run back to back from `start`, the last deciding the outcome."""
    attempts = []
    for number, outcome in enumerate(outcomes, 1):
        begin = start + (number - 1) * (duration + 0.5)
        attempts.append(
            Attempt(
                number=number,
                outcome=outcome,
                started=begin,
                finished=begin + duration,
                worker=worker,
                error=None if outcome == "passed" else error,
            )
        )
    return TaskResult(
        task=task,
        attempts=attempts,
        outcome=outcomes[-1] if outcomes else "skipped",
        error=error,
        answer=answer,
        batch=batch,
    )


def make_record(results: list[TaskResult] | None = None, **fields: Any) -> RunRecord:
    values: dict[str, Any] = {
        "api": "https://api.example.com",
        "sandbox": False,
        "model": "coder-1",
        "workers": 2,
        "rate_limit": 5.0,
        "started": T0,
        "finished": T0 + 20.0,
        "run_id": "run-42",
        "health_probes": 7,
        "unhealthy_s": 1.5,
    }
    values.update(fields)
    return RunRecord(results=results or [], **values)


CODE = "def f():\n    return '```'  # a ``` run inside\n"


def sample_record() -> RunRecord:
    """Two workers; a pass with code, a rerun then failure, a skip, a pass without code."""
    results = [
        make_result(
            make_task("alpha", dogfooding="improvement", priority=1),
            answer={"code": CODE, "message": "Here it is.", "extra": 1},
            batch="b1",
        ),
        make_result(
            make_task("beta", week=2, dogfooding="test", title="Beta | `tick` <b>"),
            ("rerun", "failed"),
            worker="gw1",
            error="HTTP 500\nfrom | server",
        ),
        make_result(make_task("gamma", month=2), (), error="dependency alpha failed", worker="gw0"),
        make_result(
            make_task("delta", month=2, dogfooding="test"),
            worker="gw1",
            start=T0 + 8,
            answer={"code": "", "message": "Nothing to change."},
        ),
        make_result(
            make_task("eps", month=2, week=3, dogfooding="doc"),
            worker="gw0",
            start=T0 + 5,
            error="timeout",
            outcomes=("failed",),
        ),
    ]
    results[0].attempts[-1].usage = Usage(1200, 300)
    # beta's answers failed their checks twice; alpha's has none.
    wrong = Verdict(
        (
            CheckResult("parses", "parses as python", "passed", seconds=0.001),
            CheckResult("contains", "contains 'class Beta'", "failed", "the code lacks it", 0.5),
        )
    )
    for attempt in results[1].attempts:
        attempt.checks = wrong
    results[3].attempts[-1].usage = Usage(100, 20)
    record = make_record(results, protocol="openai", token_rate=3000.0, price_in=2.5)
    record.concurrency_changes = [
        ConcurrencyChange(T0 + 4, 4, 2, "429 | too many <requests>"),
        ConcurrencyChange(T0 + 12, 2, 3, "recovered"),
    ]
    record.pace_changes = [
        PaceChange(T0 + 6, "rate", 5.0, 3.8, "429\n| slow"),
        PaceChange(T0 + 6, "pause", 0.0, 1.0, "429"),
    ]
    record.refusals = {503: 1, 429: 3}
    record.samples = [
        Sample(T0 + s, 4 if s < 4 else 2 if s < 12 else 3, s / 4, 1, s != 6)
        for s in range(0, 21, 2)
    ]
    record.alerts = [Alert(T0 + 6, "failure_rate", "failure rate 50%\nabove 20%")]
    record.requests = [  # the client's own log: sent, status, answered, wait asked, words
        [T0 + 1.0, 200, T0 + 1.1, 0.0, ""],
        [T0 + 1.2, 200, T0 + 1.3, 0.0, ""],
        [T0 + 1.5, 429, T0 + 1.6, 2.0, "Retry-After 2 s on a 429"],
        [T0 + 4.0, 200, T0 + 4.2, 0.0, ""],
        [T0 + 4.5, None, None, 0.0, ""],
    ]
    record.budgets = {
        "retries": {"limit": 5, "used": 1},
        "tokens": {"limit": 10000, "used": 1620},
        "cost": {"limit": 1.0, "used": 0.00325},
        "stopped": None,
    }
    return record


@pytest.fixture
def record() -> RunRecord:
    return sample_record()


@pytest.fixture(autouse=True)
def no_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under GitHub Actions, write_reports would append to the real job summary."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


# --- report.json -----------------------------------------------------------------------


def test_json_run_and_totals(record: RunRecord) -> None:
    doc = build_json(record)
    assert doc["schema_version"] == SCHEMA_VERSION == 2
    assert doc["run"] == {
        "api": "https://api.example.com",
        "sandbox": False,
        "model": "coder-1",
        "run_id": "run-42",
        "started": "2025-01-10T12:00:00.000Z",
        "finished": "2025-01-10T12:00:20.000Z",
        "duration_s": 20.0,
        "workers": 2,
        "inflight": 1,
        "rate_limit": 5.0,
        "concurrency_changes": [
            {
                "at": "2025-01-10T12:00:04.000Z",
                "from": 4,
                "to": 2,
                "reason": "429 | too many <requests>",
            },
            {"at": "2025-01-10T12:00:12.000Z", "from": 2, "to": 3, "reason": "recovered"},
        ],
        "rate_changes": [
            {"at": "2025-01-10T12:00:06.000Z", "from": 5.0, "to": 3.8, "reason": "429 | slow"}
        ],
        "pauses": [{"at": "2025-01-10T12:00:06.000Z", "seconds": 1.0, "reason": "429"}],
        "refusals": {
            "total": 4,
            "by_status": [{"status": 429, "count": 3}, {"status": 503, "count": 1}],
        },
        "stopped": None,
        "health": {"probes": 7, "unhealthy_s": 1.5},
        "interrupted": None,
        "alerts": [
            {
                "at": "2025-01-10T12:00:06.000Z",
                "kind": "failure_rate",
                "message": "failure rate 50% above 20%",
            }
        ],
        "protocol": "openai",
        "token_rate": 3000.0,
        "price_in": 2.5,
        "price_out": None,
        "usage": {"prompt": 1300, "completion": 320, "total": 1620},
        "cost": 0.00325,
        "budgets": {
            "retries": {"limit": 5, "used": 1},
            "tokens": {"limit": 10000, "used": 1620},
            "cost": {"limit": 1.0, "used": 0.00325},
            "stopped": None,
        },
        "replay": None,
    }
    assert doc["checks"] == {
        "tasks_checked": 1,
        "answers_checked": 2,
        "passed": 0,
        "failed": 1,
        "errors": 0,
        "seconds": 1.002,
    }
    assert doc["totals"] == {
        "total": 5,
        "passed": 2,
        "failed": 2,
        "skipped": 1,
        "interrupted": 0,
        "not_run": 0,
        "rerun": 1,
        "success_rate": 0.5,
    }


def test_json_compliance_from_the_client_log(record: RunRecord) -> None:
    assert build_json(record)["compliance"] == {
        "requests": 5,
        "rate_limit": 5.0,
        "burst": 1,
        "allowed_per_second": 5,
        "max_per_second": 3,  # 1.0, 1.2 and 1.5 in [1.0, 2.0)
        "busiest_second_at": "2025-01-10T12:00:01.000Z",
        "held": True,
        "statuses": [{"status": 200, "count": 3}, {"status": 429, "count": 1}],
        "no_answer": 1,
        "refusals": {"total": 1, "by_status": [{"status": 429, "count": 1}]},
        "paused_s": 2.0,
        "pauses": [
            {"at": "2025-01-10T12:00:01.600Z", "seconds": 2.0, "reason": "Retry-After 2 s on a 429"}
        ],
        "sent_while_paused": 0,
    }


def test_markdown_and_html_show_compliance_and_budgets(record: RunRecord) -> None:
    text = render_markdown(record)
    assert "\n## Compliance\n" in text
    assert "3 requests, against at most 5 at 5 requests/s: held" in text
    assert "2.0 s in 1 pause (Retry-After 2 s on a 429)" in text
    assert "**Retry budget** | 1 of 5 retries used" in text
    assert "**Cost budget** | $0.0032 of $1 used" in text
    page = render_html(record)
    assert "<h2>Compliance</h2>" in page
    assert "1,620 of 10,000 tokens used" in page


def test_json_tasks(record: RunRecord) -> None:
    tasks = {t["id"]: t for t in build_json(record)["tasks"]}
    assert list(tasks) == ["alpha", "beta", "gamma", "delta", "eps"]
    assert tasks["alpha"] == {
        "id": "alpha",
        "title": "Title of alpha",
        "month": 1,
        "week": 1,
        "priority": 1,
        "dogfooding": "improvement",
        "batch": "b1",
        "outcome": "passed",
        "attempts": 1,
        "refusals": 0,
        "duration_s": 2.0,
        "started": "2025-01-10T12:00:01.000Z",
        "finished": "2025-01-10T12:00:03.000Z",
        "worker": "gw0",
        "error": None,
        "output": None,
        "usage": {"prompt": 1200, "completion": 300, "total": 1500},
        "answers": 0,
        "checks": None,
        "cost": 0.003,
    }
    beta = tasks["beta"]
    assert beta["answers"] == 2
    assert [c["status"] for c in beta["checks"]] == ["passed", "failed"]
    assert beta["checks"][1]["detail"] == "the code lacks it"
    assert (beta["outcome"], beta["attempts"], beta["duration_s"]) == ("failed", 2, 4.0)
    assert beta["error"] == "HTTP 500 from | server"  # one line
    assert beta["finished"] == "2025-01-10T12:00:05.500Z"
    gamma = tasks["gamma"]
    assert gamma["outcome"] == "skipped"
    assert gamma["attempts"] == 0
    assert gamma["started"] is gamma["finished"] is gamma["worker"] is None
    assert gamma["error"] == "dependency alpha failed"


def test_dogfooding_counts_passed_tasks_only(record: RunRecord) -> None:
    # alpha (improvement) and delta (test) passed; beta (test) and eps (doc) failed.
    assert build_json(record)["dogfooding"] == {
        "improvementsGenerated": 1,
        "testsGenerated": 1,
        "optimizationsGenerated": 0,
        "docsGenerated": 0,
    }
    assert set(DOGFOODING_COUNTERS) == set(CATEGORIES)


def test_json_has_no_nan(record: RunRecord, tmp_path: Path) -> None:
    record.rate_limit = float("inf")
    write_reports(record, tmp_path)
    assert json.loads((tmp_path / "report.json").read_text())["run"]["rate_limit"] is None


def test_unfinished_run_has_null_finish() -> None:
    assert build_json(make_record(finished=0.0))["run"]["finished"] is None


def _documented_fields() -> set[str]:
    text = (ROOT / "docs" / "report-json.md").read_text(encoding="utf-8")
    return set(re.findall(r"^\| `([^`]+)` \|", text, re.MULTILINE))


def _field_paths(value: object, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            if not isinstance(item, dict):  # sections are documented by their fields
                paths.add(path)
            paths |= _field_paths(item, path)
    elif isinstance(value, list):
        for item in value:
            paths |= _field_paths(item, f"{prefix}[]")
    return paths


def test_schema_doc_lists_every_field(record: RunRecord) -> None:
    assert _field_paths(build_json(record)) == _documented_fields()


# --- report.md -------------------------------------------------------------------------


def test_markdown_content(record: RunRecord) -> None:
    text = render_markdown(record)
    for heading in (
        "# Roadmap run report",
        "## Failures",
        "## Retries",
        "## Concurrency changes",
        "## Roadmap progress",
    ):
        assert f"\n{heading}\n" in f"\n{text}"
    assert "| **Passed** | 2 |" in text
    assert "| **Success rate** | 50 % of 4 that ran |" in text
    assert "| `beta` | Beta \\| \\`tick\\` &lt;b&gt; | 2 | HTTP 500 from \\| server |" in text
    assert "| `eps` | Title of eps | 1 | timeout |" in text
    assert "| `beta` | 2 | rerun → failed | HTTP 500 from \\| server |" in text
    assert "| +4.0 s | 4 | 2 | 429 \\| too many &lt;requests&gt; |" in text
    assert "| `gamma` | Title of gamma | dependency alpha failed |" in text
    # Month 1: alpha passed, beta failed. Month 2: delta passed of gamma, delta, eps.
    assert "| **Month 1** |  | **1/2** |" in text
    assert "|  | Week 1 | 1/1 | 100 % |" in text
    assert "| **Month 2** |  | **1/3** |" in text
    assert "|  | Week 3 | 0/1 | 0 % |" in text
    assert "1 improvements, 1 tests, 0 optimizations, 0 docs" in text


def test_markdown_table_rows_keep_their_columns(record: RunRecord) -> None:
    record.results[1].task = make_task("beta", title="a|b\n| c `d` <e>\\|")
    text = render_markdown(record)
    failures = text.split("## Failures")[1].split("##")[0]
    rows = [line for line in failures.splitlines() if line.startswith("|")]
    unescaped_pipes = [len(re.findall(r"(?<!\\)\|", row)) for row in rows]
    assert unescaped_pipes == [5] * len(rows)


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("a|b", "a\\|b"),
        ("`x`", "\\`x\\`"),
        ("<img src=x onerror=alert(1)>", "&lt;img src=x onerror=alert(1)&gt;"),
        ("one\ntwo\r\nthree", "one two three"),
        ("**bold** _it_ [l](u) ~s~", "\\*\\*bold\\*\\* \\_it\\_ \\[l\\](u) \\~s\\~"),
        ("&amp; \\", "&amp;amp; \\\\"),
    ],
)
def test_md_text_escapes(raw: str, escaped: str) -> None:
    assert md_text(raw) == escaped


def test_md_code_and_fence() -> None:
    assert md_code("a`b|c") == "``a`b\\|c``"
    assert md_code("`x") == "`` `x ``"
    assert fenced("a ```` b") == "`````\na ```` b\n`````\n"
    assert fenced("plain\n", "text") == "```text\nplain\n```\n"


def test_step_summary_appends(
    record: RunRecord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    write_reports(record, tmp_path / "out")
    expected = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert summary.read_text(encoding="utf-8") == "earlier step\n" + expected
    append_step_summary("second\n")
    assert summary.read_text(encoding="utf-8").endswith(expected + "second\n")


def test_step_summary_unset_writes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert append_step_summary("x") is None
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", "")
    assert append_step_summary("x") is None


def test_step_summary_truncates_to_github_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    append_step_summary("| row |\n" * (STEP_SUMMARY_LIMIT // 8 + 100))
    text = summary.read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) <= STEP_SUMMARY_LIMIT + 200
    assert text.endswith("see report.md.*\n")


def test_step_summary_unwritable_is_report_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "no" / "such" / "file"))
    with pytest.raises(ReportError, match="GITHUB_STEP_SUMMARY"):
        append_step_summary("x")


# --- task outputs ----------------------------------------------------------------------


def test_outputs(record: RunRecord, tmp_path: Path) -> None:
    written = write_reports(record, tmp_path)
    outputs = tmp_path / "outputs"
    assert sorted(p.name for p in outputs.iterdir()) == ["alpha.json", "alpha.md", "delta.json"]
    assert written.problems == []
    assert set(written.files) == {
        "report.json",
        "report.md",
        "report.html",
        "outputs/alpha.json",
        "outputs/alpha.md",
        "outputs/delta.json",
    }
    assert json.loads((outputs / "alpha.json").read_text()) == {
        "code": CODE,
        "message": "Here it is.",
    }
    assert json.loads((outputs / "delta.json").read_text()) == {
        "code": "",
        "message": "Nothing to change.",
    }
    by_id = {r.task.id: r for r in record.results}
    assert by_id["alpha"].output == "outputs/alpha.json"
    assert by_id["delta"].output == "outputs/delta.json"
    assert by_id["beta"].output is None
    tasks = {t["id"]: t for t in json.loads((tmp_path / "report.json").read_text())["tasks"]}
    assert tasks["alpha"]["output"] == "outputs/alpha.json"
    assert tasks["eps"]["output"] is None


def test_output_writer_writes_during_the_run_and_the_report_keeps_it(
    record: RunRecord, tmp_path: Path
) -> None:
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    (outputs / "alpha.md").write_text("from an earlier run")
    (outputs / "alpha.md").chmod(0o600)
    writer = OutputWriter(tmp_path)
    for result in record.results:
        writer.add(result)  # the plugin adds passed ones only; the writer checks anyway
    written = writer.close()
    assert sorted(written) == ["alpha.json", "alpha.md", "delta.json"]
    assert (outputs / "alpha.md").read_text().startswith("# Title of alpha")
    assert (outputs / "alpha.md").stat().st_mode & 0o777 == 0o600  # as writing in place would
    assert json.loads((outputs / "alpha.json").read_text())["message"] == "Here it is."
    # What the writer wrote is not written again (the marker survives) ...
    (outputs / "alpha.json").write_text("marker")
    names = write_reports(record, tmp_path, written).files
    assert (outputs / "alpha.json").read_text() == "marker"
    assert "outputs/alpha.json" in names
    assert {r.task.id: r.output for r in record.results}["alpha"] == "outputs/alpha.json"
    # ... and without that account every output is written.
    write_reports(record, tmp_path)
    assert json.loads((outputs / "alpha.json").read_text())["message"] == "Here it is."


def test_output_writer_gives_up_quietly_and_the_report_says_why(
    record: RunRecord, tmp_path: Path
) -> None:
    (tmp_path / "blocked").write_text("a file where the folder should be")
    writer = OutputWriter(tmp_path / "blocked" / "report")
    for result in record.results:
        writer.add(result)
    assert writer.close() == {}
    with pytest.raises(ReportError, match="blocked"):
        write_reports(record, tmp_path / "blocked" / "report", {})


def test_output_markdown_fence_outlasts_backticks(record: RunRecord, tmp_path: Path) -> None:
    write_reports(record, tmp_path)
    page = (tmp_path / "outputs" / "alpha.md").read_text(encoding="utf-8")
    assert page.startswith("# Title of alpha\n")
    assert "## Prompt\n\n```text\nWrite it.\n```\n" in page
    assert "## Message\n\n```text\nHere it is.\n```\n" in page
    # The code holds ``` runs, so its fence must be four backticks, closing after the code.
    assert page.endswith("## Code\n\n````\n" + CODE + "````\n")


def test_failed_task_answer_is_not_saved(tmp_path: Path) -> None:
    result = make_result(make_task("bad"), ("failed",), answer={"code": "x", "message": "m"})
    write_reports(make_record([result]), tmp_path)
    assert not (tmp_path / "outputs").exists()
    assert result.output is None


@pytest.mark.parametrize("task_id", ["../evil", "../../etc/passwd", "/tmp/abs", "sub/x", "../.."])
def test_output_path_refuses_leaving_folder(tmp_path: Path, task_id: str) -> None:
    with pytest.raises(ValueError, match="outside"):
        output_path(tmp_path, task_id, ".json")


def test_write_reports_refuses_escaping_id_and_writes_the_rest(tmp_path: Path) -> None:
    # Task() itself does not validate ids; only the loader does.
    escaping = make_result(make_task("../escape"), answer={"code": "x", "message": ""})
    fine = make_result(make_task("fine"), answer={"code": "", "message": "m"})
    done = write_reports(make_record([escaping, fine]), tmp_path / "out")
    assert not (tmp_path / "escape.json").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "outputs",
        "report.html",
        "report.json",
        "report.md",
    ]
    assert done.outputs == ["outputs/fine.json"]
    assert len(done.problems) == 1
    assert re.fullmatch(
        r"1 task outputs not written to .*/outputs: task '\.\./escape': task id '\.\./escape' "
        r"would put its output at .*escape\.json, outside .*/outputs",
        done.problems[0],
    )
    assert (escaping.output, fine.output) == (None, "outputs/fine.json")


@pytest.mark.parametrize("link", ["elsewhere", "loop"])
def test_outputs_link_out_of_the_folder_costs_only_the_outputs(tmp_path: Path, link: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "outputs").symlink_to(elsewhere if link == "elsewhere" else folder / "outputs")
    result = make_result(make_task("a"), answer={"code": "x", "message": ""})
    writer = OutputWriter(folder)  # during the run: writes nothing, raises nothing
    writer.add(result)
    assert writer.close() == {}
    done = write_reports(make_record([result]), folder)
    assert list(elsewhere.iterdir()) == []
    assert done.files == ["report.json", "report.md", "report.html"]
    [problem] = done.problems
    if link == "elsewhere":
        assert problem == (
            f"task outputs of 1 tasks not written: {folder / 'outputs'} leads to {elsewhere}, "
            "outside the report folder"
        )
    else:
        assert problem.startswith(f"task outputs of 1 tasks not written: {folder / 'outputs'} ")
    assert result.output is None
    assert json.loads((folder / "report.json").read_text())["tasks"][0]["output"] is None


def test_output_name_too_long_costs_only_that_output(tmp_path: Path) -> None:
    """A hand-built record can hold an id longer than a file name may be (the loader
    allows 128 characters): that task's outputs fail, the others and the reports do not."""
    long = make_result(make_task("x" * 300), answer={"code": "c", "message": "m"})
    fine = make_result(make_task("fine"), answer={"code": "c", "message": "m"})
    writer = OutputWriter(tmp_path)
    writer.add(long)
    writer.add(fine)
    assert sorted(writer.close()) == ["fine.json", "fine.md"]
    done = write_reports(make_record([long, fine]), tmp_path)
    assert done.files == [
        "report.json",
        "report.md",
        "report.html",
        "outputs/fine.json",
        "outputs/fine.md",
    ]
    assert done.problems == [
        f"2 task outputs not written to {tmp_path / 'outputs'}: {'x' * 300}.json: "
        "File name too long (and 1 more)"
    ]
    assert (long.output, fine.output) == (None, "outputs/fine.json")


# --- atomic writes ---------------------------------------------------------------------


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


def test_write_atomic_replaces(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    write_atomic(target, "one")
    write_atomic(target, "two ✓")
    assert target.read_text(encoding="utf-8") == "two ✓"
    assert _leftovers(tmp_path) == []


def test_write_atomic_failure_midway_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old", encoding="utf-8")
    # A lone surrogate cannot be encoded: the write fails, and leaves no temporary file.
    with pytest.raises(UnicodeEncodeError):
        write_atomic(target, "new \udc80 text")
    assert target.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_write_atomic_fsync_failure_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old", encoding="utf-8")

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output"):
        write_atomic(target, "new")
    assert target.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_write_many_atomic_writes_all_and_keeps_modes(tmp_path: Path) -> None:
    (tmp_path / "old.json").write_text("old", encoding="utf-8")
    (tmp_path / "old.json").chmod(0o600)
    write_many_atomic(tmp_path, [("old.json", "new"), ("fresh.md", "page ✓")])
    assert (tmp_path / "old.json").read_text(encoding="utf-8") == "new"
    assert (tmp_path / "old.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "fresh.md").read_text(encoding="utf-8") == "page ✓"
    assert _leftovers(tmp_path) == []


def test_write_many_atomic_failure_names_the_file_and_keeps_it(tmp_path: Path) -> None:
    (tmp_path / "b.json").mkdir()  # a folder where a file should go: the rename fails
    with pytest.raises(OSError) as caught:
        write_many_atomic(tmp_path, [("a.json", "one"), ("b.json", "two"), ("c.json", "three")])
    assert caught.value.filename == str(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_text(encoding="utf-8") == "one"
    assert (tmp_path / "b.json").is_dir() and not (tmp_path / "c.json").exists()
    assert _leftovers(tmp_path) == []


def test_write_many_atomic_keep_going_writes_the_others(tmp_path: Path) -> None:
    (tmp_path / "b.json").mkdir()
    failed = write_many_atomic(
        tmp_path,
        [("a.json", "one"), ("b.json", "two"), ("c.json", "bad \udc80"), ("d.json", "four")],
        keep_going=True,
    )
    assert [(name, type(exc)) for name, exc in failed] == [
        ("b.json", IsADirectoryError),
        ("c.json", UnicodeEncodeError),
    ]
    assert (tmp_path / "a.json").read_text() == "one" and (
        tmp_path / "d.json"
    ).read_text() == "four"
    assert not (tmp_path / "c.json").exists()
    assert _leftovers(tmp_path) == []


def test_write_atomic_keeps_mode_of_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old", encoding="utf-8")
    target.chmod(0o640)
    write_atomic(target, "new")
    assert target.stat().st_mode & 0o777 == 0o640


def test_unrenderable_report_keeps_its_old_file_and_costs_no_other(
    record: RunRecord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_reports(record, tmp_path)
    before = (tmp_path / "report.json").read_bytes()
    record.model = "another-model"

    def broken(record: RunRecord) -> str:
        raise TypeError("Object of type object is not JSON serializable")

    monkeypatch.setattr(report_module, "render_json", broken)
    done = write_reports(record, tmp_path)
    assert (tmp_path / "report.json").read_bytes() == before
    assert done.reports == ["report.md", "report.html"]
    assert done.problems == [
        f"report.json not written to {tmp_path}: TypeError: Object of type object is not JSON "
        "serializable"
    ]
    assert "another-model" in (tmp_path / "report.html").read_text(encoding="utf-8")
    assert _leftovers(tmp_path) == []


def test_failing_rename_midway_leaves_old_files(
    record: RunRecord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_reports(record, tmp_path)
    old_md = (tmp_path / "report.md").read_bytes()
    real_replace = os.replace
    calls = []

    def replace_then_fail(src: str | Path, dst: str | Path) -> None:
        calls.append(dst)
        if Path(dst).name == "report.md":  # report.json and report.html are replaced
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_fail)
    record.model = "another-model"
    done = write_reports(record, tmp_path)
    assert done.problems == [f"report.md not written to {tmp_path}: No space left on device"]
    assert (tmp_path / "report.md").read_bytes() == old_md
    assert "another-model" in (tmp_path / "report.json").read_text(encoding="utf-8")
    assert "another-model" in (tmp_path / "report.html").read_text(encoding="utf-8")
    assert done.reports == ["report.json", "report.html"]
    assert _leftovers(tmp_path) == []


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write to read-only folders"
)
def test_read_only_folder_is_report_error(record: RunRecord, tmp_path: Path) -> None:
    write_reports(record, tmp_path)
    old = (tmp_path / "report.json").read_bytes()
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(ReportError, match="Permission denied"):
            write_reports(record, tmp_path)
    finally:
        tmp_path.chmod(0o755)
    assert (tmp_path / "report.json").read_bytes() == old
    assert _leftovers(tmp_path) == []


def test_folder_that_cannot_be_created(record: RunRecord, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ReportError) as caught:
        write_reports(record, blocker / "reports")
    assert isinstance(caught.value, RoadmapError)
    assert (
        str(caught.value) == f"cannot create report folder {blocker / 'reports'}: Not a directory"
    )


# --- report.html -----------------------------------------------------------------------


def test_html_escapes_everything_from_tasks_and_api(record: RunRecord) -> None:
    record.results[0].task = make_task("alpha", title=MALICIOUS)
    record.results[1].attempts[0].error = f"boom {MALICIOUS}"
    record.results[1].attempts[0].worker = "<gw9>"
    record.model = MALICIOUS
    record.concurrency_changes[0] = ConcurrencyChange(T0 + 4, 4, 2, MALICIOUS)
    page = render_html(record)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;gw9&gt;" in page


def test_html_is_self_contained(record: RunRecord) -> None:
    page = render_html(record).lower()
    for needle in ("<script", "<link", "@import", "url(", "<img", "<iframe", " src="):
        assert needle not in page
    # The only http URLs are the API shown as text and the SVG namespace.
    assert not re.search(r"href=\"(?:https?:)?//", page)


def test_html_timeline_structure(record: RunRecord) -> None:
    page = render_html(record)
    assert page.count('id="timeline"') == 1
    assert re.findall(r'<g class="lane" data-worker="([^"]+)">', page) == ["gw0", "gw1"]
    bars = re.findall(r'<rect class="bar"[^>]*fill="(#[0-9a-f]{6})"', page)
    assert len(bars) == sum(len(r.attempts) for r in record.results) == 5
    assert set(bars) == {"#2e9e44", "#d1352b", "#f0a202"}
    assert "<title>beta: Beta | `tick` &lt;b&gt;\nattempt 1 of 2: rerun" in page
    assert 'class="limit"' in page
    assert 'class="rate"' in page
    assert page.count('class="change"') == 2
    assert 'class="unhealthy"' in page
    for item in ("passed", "failed", "rerun", "skipped", "concurrency limit", "rate limit"):
        assert item in page.split('class="legend"')[1]


def test_html_timeline_shows_the_learned_rate_and_the_pauses(record: RunRecord) -> None:
    page = render_html(record)
    # One marker per change of the learned rate, one shaded span per pause, with reasons.
    assert page.count('class="rate-change"') == len(record.rate_changes) == 1
    assert page.count('class="pause"') == len(record.pauses) == 1
    assert "rate 5 → 3.8/s: 429 | slow" in page
    assert "paused 1 s: 429" in page


def test_html_lanes_sort_numerically() -> None:
    results = [make_result(make_task(f"t{n}"), worker=f"gw{n}") for n in (10, 2, 1)]
    page = render_html(make_record(results))
    assert re.findall(r'data-worker="([^"]+)"', page) == ["gw1", "gw2", "gw10"]


def test_html_of_empty_run() -> None:
    page = render_html(make_record(finished=T0))
    assert 'id="timeline"' in page
    assert "No attempts were recorded." in page
    assert "no samples recorded" in page


# --- Chromium --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (looked for 'chromium' and 'chromium-browser')")
    folder = tmp_path_factory.mktemp("chromium")
    record = sample_record()
    record.results[0].task = make_task("alpha", title=MALICIOUS)
    with pytest.MonkeyPatch.context() as mp:  # module scope: the autouse guard is not active yet
        mp.delenv("GITHUB_STEP_SUMMARY", raising=False)
        write_reports(record, folder / "report")
    page = folder / "report" / "report.html"
    # A positive control: the same logging must catch a page that does log errors,
    # else "no CONSOLE lines" for the report would prove nothing.
    control = folder / "control.html"
    control.write_text(
        "<!DOCTYPE html><html><body><script>console.error('control-error');"
        "notDefined();</script></body></html>",
        encoding="utf-8",
    )
    shot = folder / "report.png"
    yield {
        "dom": run_chromium(page, folder / "p1", "--dump-dom"),
        "control": run_chromium(control, folder / "p2", "--dump-dom"),
        "shot": run_chromium(
            page, folder / "p3", "--window-size=1280,1600", f"--screenshot={shot}"
        ),
        "png": shot,
        "record": record,
    }


@pytest.mark.slow
def test_chromium_logging_catches_console_errors(rendered: dict[str, Any]) -> None:
    lines = console_lines(rendered["control"].stderr)
    assert any("control-error" in line for line in lines)
    assert any("Uncaught ReferenceError" in line for line in lines)


def test_chromium_renders_timeline_without_console_errors(rendered: dict[str, Any]) -> None:
    dom: str = rendered["dom"].stdout
    assert 'id="timeline"' in dom
    workers = {a.worker for r in rendered["record"].results for a in r.attempts}
    assert sorted(re.findall(r'class="lane" data-worker="([^"]+)"', dom)) == sorted(workers)
    assert "<script" not in dom.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert console_lines(rendered["dom"].stderr) == []
    assert console_lines(rendered["shot"].stderr) == []


def test_chromium_screenshot(rendered: dict[str, Any]) -> None:
    png: Path = rendered["png"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


def test_usage_and_cost_in_every_report(record: RunRecord) -> None:
    data = build_json(record)
    assert data["run"]["usage"] == {"prompt": 1300, "completion": 320, "total": 1620}
    # One price given: the other counts as 0.
    assert data["run"]["cost"] == pytest.approx(1300 * 2.5 / 1e6)
    tasks = {t["id"]: t for t in data["tasks"]}
    assert tasks["alpha"]["usage"] == {"prompt": 1200, "completion": 300, "total": 1500}
    assert tasks["alpha"]["cost"] == pytest.approx(0.003)
    assert tasks["beta"]["usage"] is None and tasks["beta"]["cost"] is None
    markdown = render_markdown(record)
    assert "| **Tokens** | 1,620 tokens (1,300 prompt + 320 completion) |" in markdown
    assert "| `alpha` | 1,200 | 300 | 1,500 | $0.0030 |" in markdown
    html = render_html(record)
    assert "<th>Tokens</th><th>Cost</th>" in html and "1,500" in html
    record.price_in = None
    assert build_json(record)["run"]["cost"] is None
    assert "| Cost |" not in render_markdown(record) and "<th>Cost</th>" not in render_html(record)
