"""What a replay judges: the answers the last run saved in the report folder, and the
grades its rubric checks got, read back without sending anything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pytest_roadmap.checks.verdict import CheckResult

OUTPUTS = "outputs"  # as the report writes it (report/outputs.py)


class NoSavedAnswer(Exception):
    """The task has no answer saved by the last run: a replay skips it, saying why."""


class SavedAnswers:
    """The last run's saved answers (`outputs/<id>.json`) and verdicts (report.json)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._verdicts: dict[str, dict[str, CheckResult]] | None = None

    def answer(self, task_id: str) -> dict[str, Any]:
        """The saved answer `{code, message}`; NoSavedAnswer when there is none."""
        path = self.folder / OUTPUTS / f"{task_id}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NoSavedAnswer(
                f"no saved answer to replay: {path} does not exist (the last run got no "
                "answer for this task, or did not run it)"
            ) from None
        except (OSError, ValueError) as exc:
            raise NoSavedAnswer(
                f"no saved answer to replay: {path} cannot be read: {exc}"
            ) from None
        if not isinstance(data, dict) or not ("code" in data or "message" in data):
            raise NoSavedAnswer(f"no saved answer to replay: {path} holds no code or message")
        return {key: data.get(key) for key in ("code", "message")}

    def verdicts(self, task_id: str) -> dict[str, CheckResult]:
        """The checks the last run reported for the task, by label."""
        if self._verdicts is None:
            self._verdicts = self._read()
        return self._verdicts.get(task_id, {})

    def _read(self) -> dict[str, dict[str, CheckResult]]:
        try:
            report = json.loads((self.folder / "report.json").read_text(encoding="utf-8"))
            tasks = report["tasks"]
            found: dict[str, dict[str, CheckResult]] = {}
            for task in tasks:
                checks = [CheckResult.from_dict(c) for c in task.get("checks") or ()]
                found[str(task["id"])] = {c.label: c for c in checks}
            return found
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}  # no usable report: rubric checks then say they were not graded
