"""Each passed task's saved output, written while the run goes on.

A report writes two files per passed task (`outputs/<id>.json` and `outputs/<id>.md`). At
the end of a 10,000-task run, creating those 20,000 files took 4-14 s on a slow disk, all
of it after the last task, while the controller had sat idle for most of the run. The
`OutputWriter` writes them from a daemon thread on the controller as tasks pass, in batches
(one folder sync per batch), and the end-of-run report skips whatever it wrote already.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

from pytest_roadmap.atomic import list_folder, write_many_atomic
from pytest_roadmap.report.json import dumps
from pytest_roadmap.report.markdown import fenced, md_text
from pytest_roadmap.results import FAILED, PASSED, TaskResult
from pytest_roadmap.tasks import ID_PATTERN

OUTPUTS = "outputs"
# The writer gathers the results of this many seconds into one write_many_atomic call (one
# folder sync): written one by one, 2,000 tasks cost the workers 3.5 ms each, because the
# thread kept taking the controller's GIL from the loop that hands tasks out.
BATCH_WAIT = 1.0


class OutputFolder:
    """`folder/outputs/`, resolved once, and the file names of one task's outputs.

    `problem` says, in words, why no output can be written there (a link that leads out
    of the report folder or cannot be followed), or is None.
    """

    def __init__(self, folder: Path) -> None:
        link = Path(folder) / OUTPUTS
        self.problem: str | None = None
        try:
            root = Path(folder).resolve()  # once: resolving costs a system call per path part
            self.path = (root / OUTPUTS).resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
            self.path, self._inside = link, False
            self.problem = f"{link} cannot be followed: {exc}"
            return
        self._inside = self.path.is_relative_to(root)
        if not self._inside:
            self.problem = f"{link} leads to {self.path}, outside the report folder"

    def name(self, task_id: str, suffix: str) -> str:
        """The output's file name in outputs/, or ValueError if it would not stay there."""
        # A plain id cannot climb out of outputs/, and os.replace swaps a symlink standing
        # at the target rather than writing through it, so no per-file resolve is needed.
        if not self._inside or not ID_PATTERN.fullmatch(task_id):
            target = (self.path / f"{task_id}{suffix}").resolve()
            raise ValueError(
                f"task id {task_id!r} would put its output at {target}, outside {self.path}"
            )
        return f"{task_id}{suffix}"

    def names(self, result: TaskResult) -> list[str]:
        """The output files of `result` (`<id>.json`, then `<id>.md` if it has code); none
        unless it passed with an answer. Cheap: nothing is rendered."""
        answer = result.answer
        if not saves_output(result) or not isinstance(answer, dict):
            return []
        names = [self.name(result.task.id, ".json")]
        code = answer.get("code")
        if isinstance(code, str) and code:
            names.append(self.name(result.task.id, ".md"))
        return names

    def files(self, result: TaskResult) -> list[tuple[str, str]]:
        """`(name, text)` of each output file of `result`, as `names` lists them."""
        names = self.names(result)
        if not names:
            return []
        answer = cast("dict[str, Any]", result.answer)  # `names` checked that it is one
        code, message = answer.get("code"), answer.get("message")
        files = [(names[0], saved_answer(code, message))]
        if len(names) > 1:
            files.append((names[1], render_output_markdown(result, str(code), message)))
        return files


def saves_output(result: TaskResult) -> bool:
    """The task passed with an answer, or ended with an answer that failed its checks
    (kept for --roadmap-replay): its outputs keep the answer."""
    if not isinstance(result.answer, dict):
        return False
    return result.outcome == PASSED or (result.outcome == FAILED and result.verdict is not None)


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


def saved_answer(code: object, message: object) -> str:
    """`{"code": ..., "message": ...}` as json.dumps(indent=2) writes it."""
    if all(value is None or isinstance(value, str) for value in (code, message)):
        # The same text, without json's pure-Python indenting encoder (a third of the
        # report's time at 10,000 tasks): a string or null has no inner lines to indent.
        return f'{{\n  "code": {dumps(code)},\n  "message": {dumps(message)}\n}}\n'
    return dumps({"code": code, "message": message}, 2) + "\n"


class OutputWriter:
    """Writes passed tasks' outputs into `folder/outputs/` from a daemon thread.

    Best effort and silent: an output it cannot write (a full disk, an id that would leave
    the folder) is left out and the others are still written; without a folder to write in
    (`OutputFolder.problem`, or one that cannot be created) it writes nothing. The
    end-of-run report writes whatever is missing, meets the same errors and says so.
    `close()` says what was written.
    """

    def __init__(self, folder: Path) -> None:
        # Resolved now, in the caller's working directory (a Python task may change it).
        self._outputs = OutputFolder(folder)
        self._queue: queue.SimpleQueue[TaskResult | None] = queue.SimpleQueue()
        self._written: dict[str, str] = {}  # file name in outputs/ -> its task's id
        self._thread = threading.Thread(target=self._run, name="roadmap-outputs", daemon=True)
        self._thread.start()

    def add(self, result: TaskResult) -> None:
        """A task passed: write its outputs soon."""
        self._queue.put(result)

    def close(self) -> Mapping[str, str]:
        """Write what is queued, stop, and return `{file name in outputs/: task id}` of
        every file written."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        return self._written

    def _batches(self) -> Iterator[list[TaskResult]]:
        """Queued results, those of up to BATCH_WAIT seconds at a time, until close()."""
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            until = time.monotonic() + BATCH_WAIT
            while (left := until - time.monotonic()) > 0:
                try:
                    more = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if more is None:
                    yield batch
                    return
                batch.append(more)
            yield batch

    def _run(self) -> None:
        batches = self._batches()
        # The files there before the run (their modes are kept), listed once.
        existing: dict[str, os.DirEntry[str]] | None = None
        for batch in batches:
            if existing is None:
                existing = self._open_folder()
                if existing is None:
                    # Nowhere to write: the end-of-run report meets the same error and says
                    # so. Until close(), take what comes without writing it.
                    for _ in batches:
                        pass
                    return
            files: list[tuple[str, str]] = []
            owners: dict[str, str] = {}
            for result in batch:
                try:
                    produced = self._outputs.files(result)
                except Exception:  # this task's alone: the end-of-run report says why
                    continue
                for name, text in produced:
                    files.append((name, text))
                    owners[name] = result.task.id
            failed = write_many_atomic(self._outputs.path, files, existing, keep_going=True)
            left_out = {name for name, _ in failed}
            self._written.update((n, o) for n, o in owners.items() if n not in left_out)

    def _open_folder(self) -> dict[str, os.DirEntry[str]] | None:
        """The outputs folder's entries, creating it if need be; None if it cannot be used."""
        if self._outputs.problem is not None:
            return None
        try:
            self._outputs.path.mkdir(parents=True, exist_ok=True)
            return list_folder(self._outputs.path)
        except OSError:
            return None
