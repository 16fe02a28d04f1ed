"""The reports of a run: report.json, report.md, report.html and each task's saved output."""

from __future__ import annotations

# Aliased: importing the submodule report.json binds `json` in this package's namespace.
import json as jsonlib
from pathlib import Path
from typing import Any

from pytest_roadmap.atomic import sync_folder, write_atomic
from pytest_roadmap.errors import ReportError
from pytest_roadmap.report.html import render_html
from pytest_roadmap.report.json import SCHEMA_VERSION, build_json, render_json
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
    return _contained(root, outputs, task_id, suffix)


def _contained(root: Path, outputs: Path, task_id: str, suffix: str) -> Path:
    # A plain id cannot climb out of `outputs`, and os.replace swaps a symlink standing
    # at the target rather than writing through it, so no per-file resolve is needed.
    if not outputs.is_relative_to(root) or not ID_PATTERN.fullmatch(task_id):
        target = (outputs / f"{task_id}{suffix}").resolve()
        raise ValueError(f"task id {task_id!r} would put its output at {target}, outside {outputs}")
    return outputs / f"{task_id}{suffix}"


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


def _outputs(record: RunRecord, folder: Path) -> list[tuple[Path, str, TaskResult]]:
    """Every output file to write, with its text; paths are checked before anything is written."""
    planned: list[tuple[Path, str, TaskResult]] = []
    root = Path(folder).resolve()  # once: resolving costs a system call per path part
    outputs = (root / OUTPUTS).resolve()
    for result in record.results:
        if result.outcome != PASSED or not isinstance(result.answer, dict):
            continue
        answer: dict[str, Any] = result.answer
        code, message = answer.get("code"), answer.get("message")
        saved = {"code": code, "message": message}
        text = jsonlib.dumps(saved, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        planned.append((_contained(root, outputs, result.task.id, ".json"), text, result))
        if isinstance(code, str) and code:
            page = render_output_markdown(result, code, message)
            planned.append((_contained(root, outputs, result.task.id, ".md"), page, result))
    return planned


def write_reports(record: RunRecord, folder: Path) -> list[Path]:
    """Write every report of `record` into `folder` and return the files written.

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
    for path, _, result in planned:
        if path.suffix == ".json":
            result.output = f"{OUTPUTS}/{path.name}"
    # Render everything before writing anything: a value that cannot be rendered
    # then leaves the folder as it was.
    markdown = render_markdown(record)
    files = [
        (folder / "report.json", render_json(record)),
        (folder / "report.md", markdown),
        (folder / "report.html", render_html(record)),
        *((path, text) for path, text, _ in planned),
    ]
    current = folder
    try:
        if planned:
            current = folder / OUTPUTS
            current.mkdir(exist_ok=True)
        # One fsync per task output would cost most of the run's tail on a slow disk:
        # outputs are written atomically but synced once, as a folder, at the end.
        for current, text in files[3:]:
            write_atomic(current, text, durable=False)
        if planned:
            sync_folder(folder / OUTPUTS)
        for current, text in files[:3]:
            write_atomic(current, text)
    except OSError as exc:
        raise ReportError(
            f"cannot write reports to {folder}: {current.name}: {exc.strerror or exc}"
        ) from None
    append_step_summary(markdown)
    return [path for path, _ in files]
