"""The reports of a run: report.json, report.md, report.html and each task's saved output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_roadmap.atomic import write_atomic, write_many_atomic
from pytest_roadmap.errors import ReportError
from pytest_roadmap.report.html import render_html
from pytest_roadmap.report.json import SCHEMA_VERSION, build_json, dumps, render_json
from pytest_roadmap.report.markdown import (
    append_step_summary,
    fenced,
    md_text,
    render_markdown,
)
from pytest_roadmap.results import PASSED, RunRecord, TaskResult
from pytest_roadmap.tasks import ID_PATTERN

__all__ = [
    "SCHEMA_VERSION",
    "append_step_summary",
    "build_json",
    "output_path",
    "render_html",
    "render_json",
    "render_markdown",
    "render_output_markdown",
    "write_reports",
]

OUTPUTS = "outputs"


def output_path(folder: Path, task_id: str, suffix: str) -> Path:
    """`folder/outputs/<task_id><suffix>`, refused (ValueError) if it would leave `folder`.

    Ids are already restricted to [a-z0-9_-]+, but a RunRecord can be built by hand
    and a symlinked outputs folder can point anywhere, so check the resolved path.
    """
    root = Path(folder).resolve()
    outputs = (root / OUTPUTS).resolve()
    return outputs / _contained(outputs, outputs.is_relative_to(root), task_id, suffix)


def _contained(outputs: Path, inside: bool, task_id: str, suffix: str) -> str:
    """The output's file name in `outputs`, or ValueError if it would not stay there."""
    # A plain id cannot climb out of `outputs`, and os.replace swaps a symlink standing
    # at the target rather than writing through it, so no per-file resolve is needed.
    # `inside`: outputs/ itself lies within the report folder (checked once per report).
    if not inside or not ID_PATTERN.fullmatch(task_id):
        target = (outputs / f"{task_id}{suffix}").resolve()
        raise ValueError(f"task id {task_id!r} would put its output at {target}, outside {outputs}")
    return f"{task_id}{suffix}"


def render_output_markdown(result: TaskResult, code: str, message: object) -> str:
    """A readable page for one task's answer: title, prompt, message and code."""
    task = result.task
    parts = [
        f"# {md_text(task.title)}",
        "",
        f"Task `{task.id}`, month {task.month}, week {task.week}.",
        "",
        "## Prompt",
        "",
        fenced(task.prompt, "text"),
    ]
    if isinstance(message, str) and message.strip():
        parts += ["## Message", "", fenced(message, "text")]
    parts += ["## Code", "", fenced(code)]
    return "\n".join(parts)


def _outputs(record: RunRecord, folder: Path) -> list[tuple[str, str, TaskResult]]:
    """Every output file (its name in outputs/) with its text; checked before anything is
    written."""
    planned: list[tuple[str, str, TaskResult]] = []
    root = Path(folder).resolve()  # once: resolving costs a system call per path part
    outputs = (root / OUTPUTS).resolve()
    inside = outputs.is_relative_to(root)
    for result in record.results:
        if result.outcome != PASSED or not isinstance(result.answer, dict):
            continue
        answer: dict[str, Any] = result.answer
        code, message = answer.get("code"), answer.get("message")
        text = _saved_answer(code, message)
        planned.append((_contained(outputs, inside, result.task.id, ".json"), text, result))
        if isinstance(code, str) and code:
            page = render_output_markdown(result, code, message)
            planned.append((_contained(outputs, inside, result.task.id, ".md"), page, result))
    return planned


def _saved_answer(code: object, message: object) -> str:
    """`{"code": ..., "message": ...}` as json.dumps(indent=2) writes it."""
    if all(value is None or isinstance(value, str) for value in (code, message)):
        # The same text, without json's pure-Python indenting encoder (a third of the
        # report's time at 10,000 tasks): a string or null has no inner lines to indent.
        return f'{{\n  "code": {dumps(code)},\n  "message": {dumps(message)}\n}}\n'
    return dumps({"code": code, "message": message}, 2) + "\n"


def write_reports(record: RunRecord, folder: Path) -> list[str]:
    """Write every report of `record` into `folder`; return the files written, as paths
    relative to `folder` ("report.json", ..., "outputs/<id>.json").

    Sets each saved task's `TaskResult.output`, appends report.md to the GitHub step
    summary when GITHUB_STEP_SUMMARY is set, and raises ReportError (one line naming
    the folder and the OS reason) when the folder cannot be created or written.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot create report folder {folder}: {exc.strerror or exc}") from None
    planned = _outputs(record, folder)
    for name, _, result in planned:
        if name.endswith(".json"):
            result.output = f"{OUTPUTS}/{name}"
    # Render everything before writing anything: a value that cannot be rendered
    # then leaves the folder as it was.
    markdown = render_markdown(record)
    reports = [
        (folder / "report.json", render_json(record)),
        (folder / "report.md", markdown),
        (folder / "report.html", render_html(record)),
    ]
    current = folder
    try:
        if planned:
            current = folder / OUTPUTS
            current.mkdir(exist_ok=True)
            write_many_atomic(current, ((name, text) for name, text, _ in planned))
        for current, text in reports:
            write_atomic(current, text)
    except OSError as exc:
        # write_atomic and write_many_atomic name the file; mkdir and a bare OSError may not
        failed = Path(exc.filename).name if isinstance(exc.filename, str) else current.name
        raise ReportError(
            f"cannot write reports to {folder}: {failed}: {exc.strerror or exc}"
        ) from None
    append_step_summary(markdown)
    return [path.name for path, _ in reports] + [f"{OUTPUTS}/{name}" for name, _, _ in planned]
