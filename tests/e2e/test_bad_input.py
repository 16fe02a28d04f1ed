"""The bad-input corpus: every malformed file gives one clear line and the right exit status."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.support.project import Roadmap, task_toml

CORPUS = Path(__file__).parents[1] / "corpus"
TASK_FILES = sorted((CORPUS / "tasks").glob("*.toml"))
BATCH_FILES = json.loads((CORPUS / "batches" / "expected.json").read_text())
TRACKERS = json.loads((CORPUS / "trackers" / "expected.json").read_text())


def _expectation(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    assert first.startswith("# expect: "), path
    return first.removeprefix("# expect: ")


@pytest.mark.parametrize("path", TASK_FILES, ids=[p.stem for p in TASK_FILES])
def test_malformed_task_file(roadmap: Roadmap, path: Path) -> None:
    shutil.copy(path, roadmap.pytester.path / "roadmap_tasks" / path.name)
    roadmap.tasks("good", task_toml("fine"))
    result = roadmap.run()
    expected = _expectation(path)
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output
    if expected == "NONE":  # an empty task file is allowed: it holds no tasks
        result.assert_outcomes(passed=1)
        return
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([f"roadmap_tasks/{path.name}: {expected}"])
    assert roadmap.sandbox.log() == []


def test_ten_megabyte_prompt(roadmap: Roadmap) -> None:
    big = "x" * (10 * 1024 * 1024)
    roadmap.raw(
        "huge.toml", f'[[tasks]]\nid = "a"\ntitle = "t"\nprompt = "{big}"\nmonth = 1\nweek = 1\n'
    )
    result = roadmap.run()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            "roadmap_tasks/huge.toml: task 1 (id 'a'): 'prompt' is 10485760 characters; at most "
            "1000000 are allowed"
        ]
    )


@pytest.mark.parametrize("name", sorted(BATCH_FILES), ids=lambda n: n.removesuffix(".json"))
def test_malformed_batch_file(roadmap: Roadmap, name: str) -> None:
    roadmap.tasks("month1", task_toml("a"), task_toml("b"))
    (roadmap.pytester.path / "bad").mkdir()
    shutil.copy(CORPUS / "batches" / name, roadmap.pytester.path / "bad" / name)
    result = roadmap.run("--roadmap-batches", f"bad/{name}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: pytest-roadmap: bad/{name}: {BATCH_FILES[name]}"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()
    assert roadmap.sandbox.log() == []


@pytest.mark.parametrize("name", sorted(TRACKERS), ids=lambda n: n.removesuffix(".json"))
def test_malformed_tracker(roadmap: Roadmap, name: str) -> None:
    roadmap.tasks("month1", task_toml("a"))
    tracker = roadmap.pytester.path / "ROADMAP_PROGRESS.json"
    shutil.copy(CORPUS / "trackers" / name, tracker)
    before = tracker.read_bytes()
    result = roadmap.run("--roadmap-resume")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: pytest-roadmap: --roadmap-resume: {TRACKERS[name]}"])
    # Without --roadmap-resume the run goes ahead and says why the tracker was left alone.
    result = roadmap.run()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"roadmap: tracker not updated: {TRACKERS[name]}"])
    assert tracker.read_bytes() == before
    assert "Traceback" not in result.stdout.str()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_task_file_that_is_not_a_regular_file(roadmap: Roadmap) -> None:
    """pytest itself passes over FIFOs and devices; a tasks folder must not lose them
    without a word, and must never open a FIFO (it would wait for a writer)."""
    folder = roadmap.pytester.path / "roadmap_tasks"
    roadmap.tasks("good", task_toml("fine"))
    os.mkfifo(folder / "pipe.toml")
    (folder / "later").mkdir()
    os.mkfifo(folder / "later" / "deep.toml")
    (folder / "device.toml").symlink_to(os.devnull)
    (folder / "gone.toml").symlink_to(folder / "no-such-file")
    result = roadmap.run()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines_random(
        [
            "roadmap_tasks/pipe.toml: is a FIFO; a task file must be a regular file",
            "roadmap_tasks/later/deep.toml: is a FIFO; a task file must be a regular file",
            f"roadmap_tasks/device.toml: is a character device (a link to {os.devnull}); *",
            "roadmap_tasks/gone.toml: is a link to *no-such-file, which does not exist",
        ]
    )
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert roadmap.sandbox.log() == []
    # Named on the command line, it is the same error.
    result = roadmap.run("roadmap_tasks/pipe.toml")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["roadmap_tasks/pipe.toml: is a FIFO; *"])
