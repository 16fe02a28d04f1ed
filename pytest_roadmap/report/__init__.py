"""The reports of a run: report.json, report.md, report.html and each task's saved output."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from pytest_roadmap.atomic import write_atomic, write_many_atomic
from pytest_roadmap.errors import ReportError
from pytest_roadmap.report.html import render_html
from pytest_roadmap.report.json import SCHEMA_VERSION, build_json, render_json
from pytest_roadmap.report.markdown import append_step_summary, render_markdown
from pytest_roadmap.report.outputs import (
    OUTPUTS,
    OutputFolder,
    OutputWriter,
    render_output_markdown,
)
from pytest_roadmap.results import RunRecord

__all__ = [
    "SCHEMA_VERSION",
    "OutputWriter",
    "append_step_summary",
    "build_json",
    "output_path",
    "render_html",
    "render_json",
    "render_markdown",
    "render_output_markdown",
    "write_reports",
]


def output_path(folder: Path, task_id: str, suffix: str) -> Path:
    """`folder/outputs/<task_id><suffix>`, refused (ValueError) if it would leave `folder`.

    Ids are already restricted to [a-z0-9_-]+, but a RunRecord can be built by hand
    and a symlinked outputs folder can point anywhere, so check the resolved path.
    """
    outputs = OutputFolder(folder)
    return outputs.path / outputs.name(task_id, suffix)


def write_reports(
    record: RunRecord, folder: Path, written: Collection[str] | None = None
) -> list[str]:
    """Write every report of `record` into `folder`; return the files written, as paths
    relative to `folder` ("report.json", ..., "outputs/<id>.json").

    `written`: names (in outputs/) of the task outputs an `OutputWriter` wrote during the
    run; those are neither rendered nor written again. Sets each saved task's
    `TaskResult.output`, appends report.md to the GitHub step summary when
    GITHUB_STEP_SUMMARY is set, and raises ReportError (one line naming the folder and the
    OS reason) when the folder cannot be created or written.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot create report folder {folder}: {exc.strerror or exc}") from None
    outputs = OutputFolder(folder)
    done = written or ()
    names: list[str] = []
    missing: list[tuple[str, str]] = []
    for result in record.results:
        saved = outputs.names(result)
        if not saved:
            continue
        result.output = f"{OUTPUTS}/{saved[0]}"
        names += saved
        if any(name not in done for name in saved):  # rendered only if still to write
            missing += [(name, text) for name, text in outputs.files(result) if name not in done]
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
        if missing:
            current = folder / OUTPUTS
            current.mkdir(exist_ok=True)
            write_many_atomic(current, missing)
        for current, text in reports:
            write_atomic(current, text)
    except OSError as exc:
        # write_atomic and write_many_atomic name the file; mkdir and a bare OSError may not
        failed = Path(exc.filename).name if isinstance(exc.filename, str) else current.name
        raise ReportError(
            f"cannot write reports to {folder}: {failed}: {exc.strerror or exc}"
        ) from None
    append_step_summary(markdown)
    return [path.name for path, _ in reports] + [f"{OUTPUTS}/{name}" for name in names]
