"""The reports of a run: report.json, report.md, report.html and each task's saved output."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from pytest_roadmap.atomic import write_atomic, write_many_atomic
from pytest_roadmap.errors import ReportError, shown
from pytest_roadmap.report.html import render_html
from pytest_roadmap.report.json import SCHEMA_VERSION, build_json, render_json
from pytest_roadmap.report.markdown import append_step_summary, render_markdown
from pytest_roadmap.report.outputs import (
    OUTPUTS,
    OutputFolder,
    OutputWriter,
    render_output_markdown,
    saves_output,
)
from pytest_roadmap.results import RunRecord, TaskResult

__all__ = [
    "SCHEMA_VERSION",
    "OutputWriter",
    "WrittenReports",
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


@dataclass
class WrittenReports:
    """What `write_reports` wrote, and what it could not, one line each."""

    reports: list[str] = field(default_factory=list)  # "report.json", "report.md", ...
    outputs: list[str] = field(default_factory=list)  # "outputs/<id>.json", ... in place
    problems: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[str]:
        """Every file in place, relative to the report folder: reports, then task outputs."""
        return self.reports + self.outputs


def write_reports(
    record: RunRecord, folder: Path, written: Collection[str] | None = None
) -> WrittenReports:
    """Write every report of `record` into `folder`: each passed task's outputs, then
    report.json, report.md and report.html.

    Each file is attempted on its own: one that cannot be rendered or written (a full disk,
    an outputs/ link that leads out of the folder, a name too long) keeps its old version,
    is named in `problems`, and costs none of the others. `written`: names (in outputs/) of
    the task outputs an `OutputWriter` wrote during the run; those are neither rendered nor
    written again. Sets each saved task's `TaskResult.output` (None for a task whose output
    could not be written), appends report.md to the GitHub step summary when
    GITHUB_STEP_SUMMARY is set, and raises ReportError (one line naming the folder and the
    OS reason) only when the folder itself cannot be created.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot create report folder {folder}: {exc.strerror or exc}") from None
    done = WrittenReports()
    done.outputs, problem = _write_task_outputs(record, folder, written or ())
    if problem is not None:
        done.problems.append(problem)
    markdown: str | None = None
    for name, render in (
        ("report.json", render_json),
        ("report.md", render_markdown),
        ("report.html", render_html),
    ):
        try:
            text = render(record)
            write_atomic(folder / name, text)
        except Exception as exc:  # any one report's failure must not cost the others
            done.problems.append(f"{name} not written to {folder}: {_reason(exc)}")
            continue
        done.reports.append(name)
        if name == "report.md":
            markdown = text
    if markdown is not None:
        try:
            append_step_summary(markdown)
        except ReportError as exc:
            done.problems.append(str(exc))
    return done


def _write_task_outputs(
    record: RunRecord, folder: Path, done: Collection[str]
) -> tuple[list[str], str | None]:
    """Write the task outputs still missing; return the outputs in place (as paths
    relative to `folder`) and one line about those that are not, if any."""
    for result in record.results:
        result.output = None
    saving = [result for result in record.results if saves_output(result)]
    if not saving:
        return [], None
    outputs = OutputFolder(folder)
    if outputs.problem is not None:
        return [], f"task outputs of {len(saving)} tasks not written: {outputs.problem}"
    planned: list[tuple[TaskResult, list[str]]] = []
    missing: list[tuple[str, str]] = []
    failed: list[tuple[str, str]] = []  # (file or task, reason)
    for result in saving:
        try:
            names = outputs.names(result)
            if any(name not in done for name in names):  # rendered only if still to write
                missing += [
                    (name, text) for name, text in outputs.files(result) if name not in done
                ]
        except Exception as exc:  # this task's alone
            failed.append((f"task {shown(result.task.id)}", _reason(exc)))
        else:
            planned.append((result, names))
    if missing:
        try:
            outputs.path.mkdir(exist_ok=True)
        except OSError as exc:
            failed += [(name, _reason(exc)) for name, _ in missing]
        else:
            problems = write_many_atomic(outputs.path, missing, keep_going=True)
            failed += [(name, _reason(exc)) for name, exc in problems]
    lost = {name for name, _ in failed}
    files: list[str] = []
    for result, names in planned:
        kept = [name for name in names if name not in lost]
        if names[0] in kept:  # its answer (<id>.json) is in place
            result.output = f"{OUTPUTS}/{names[0]}"
        files += [f"{OUTPUTS}/{name}" for name in kept]
    if not failed:
        return files, None
    first, reason = failed[0]
    more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    return files, (
        f"{len(failed)} task outputs not written to {outputs.path}: {first}: {reason}{more}"
    )


def _reason(exc: BaseException) -> str:
    """An error in a few words: the OS reason, or the exception's own line."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, ReportError | ValueError | OSError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
