"""The `roadmap` command, in-process through main() and as `python -m pytest_roadmap.cli`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_roadmap.cli import main
from pytest_roadmap.tracker import METRICS

ROOT = Path(__file__).resolve().parents[2]

TASK_FILE = """
[[tasks]]
id = "cache"
title = "Add caching"
prompt = "Add a cache."
month = 1
week = 2

[[tasks]]
id = "fix"
title = "Fix failed request tracking"
prompt = "Fix it."
month = 1
week = 1
"""


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest_roadmap.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def tracker(tmp_path: Path) -> Path:
    return tmp_path / "progress.json"


def test_complete_metric_dogfood_report(tracker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = ["--tracker", str(tracker)]
    assert main(["complete", "1", "1", "Fix", "failed", "request", "tracking", *t]) == 0
    assert main(["complete", *t, "2", "3", "Add caching"]) == 0
    assert main(["metric", "latency", "120", *t]) == 0
    assert main(["metric", "cacheHitRate", "0.75", *t]) == 0
    assert main(["dogfood", "doc", *t]) == 0
    assert main(["dogfood", "doc", *t]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "completed: month1_week1_Fix failed request tracking",
        "completed: month2_week3_Add caching",
        "latency = 120",
        "cacheHitRate = 0.75",
        "docsGenerated = 1",
        "docsGenerated = 2",
    ]
    doc = json.loads(tracker.read_text(encoding="utf-8"))
    assert doc["metrics"]["latency"] == 120  # stays an integer, as the Node tool wrote
    assert doc["dogFooding"]["docsGenerated"] == 2
    assert doc["tasks"]["month2_week3_Add caching"]["completed"] is True


def test_report_is_the_originals_report(tracker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = ["--tracker", str(tracker)]
    main(["complete", "1", "1", "Done", *t])
    doc = json.loads(tracker.read_text(encoding="utf-8"))
    for n in range(15):  # 16 tasks, one complete: 6.25 %, which toFixed(1) rounds up
        doc["tasks"][f"month2_week1_Open {n}"] = {"name": f"Open {n}", "month": 2, "week": 1}
    tracker.write_text(json.dumps(doc), encoding="utf-8")
    capsys.readouterr()
    assert main(["report", *t]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed) == ["generatedAt", "summary", "metrics", "dogFooding", "targets"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", printed["generatedAt"])
    assert printed["summary"] == {
        "currentMonth": 1,
        "currentWeek": 1,
        "progress": "6.3%",
        "tasksCompleted": 1,
        "tasksTotal": 16,
    }
    # A new tracker starts from the original's baseline.
    assert printed["metrics"] == {
        "cacheHitRate": 15,
        "latency": 500,
        "selectionAccuracy": 85,
        "costSavings": 97,
        "errorRate": 5,
    }
    assert printed["dogFooding"]["docsGenerated"] == 0
    assert printed["targets"] == {
        "month1": {"cacheHitRate": 40, "latency": 200, "selectionAccuracy": 95, "errorRate": 2},
        "month3": {"cacheHitRate": 60, "latency": 200, "selectionAccuracy": 95, "errorRate": 2},
        "month6": {"cacheHitRate": 80, "latency": 150, "selectionAccuracy": 98, "errorRate": 1},
        "month12": {
            "cacheHitRate": 99,
            "latency": 100,
            "selectionAccuracy": 99.5,
            "errorRate": 0.1,
        },
    }


def test_report_of_an_empty_tracker(tracker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--tracker", str(tracker)]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["progress"] == "0%"  # the original printed `${0}%`
    assert (summary["tasksCompleted"], summary["tasksTotal"]) == (0, 0)
    assert not tracker.exists()  # reading never creates the file


def test_no_command_prints_help_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("usage: roadmap")
    for command in ("status", "complete", "metric", "dogfood", "report"):
        assert command in captured.out
    assert captured.err == ""


def test_status_with_tasks(
    tmp_path: Path,
    tracker: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "m1.toml").write_text(TASK_FILE, encoding="utf-8")
    main(["complete", "1", "1", "Fix failed request tracking", "--tracker", str(tracker)])
    capsys.readouterr()
    assert main(["status", "--tracker", str(tracker), "--tasks", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "Completed: 1 of 2 tasks (50 %)" in out
    assert "Pending tasks:\n  month 1 week 2: [cache] Add caching\n" in out
    # Without --tasks, ./roadmap_tasks is used when it exists.
    monkeypatch.chdir(tmp_path)
    folder.rename(tmp_path / "roadmap_tasks")
    assert main(["status", "--tracker", str(tracker)]) == 0
    assert "[cache] Add caching" in capsys.readouterr().out


def test_status_default_tracker_in_cwd(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["dogfood", "test"]) == 0
    assert (tmp_path / "ROADMAP_PROGRESS.json").exists()
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "Roadmap progress (ROADMAP_PROGRESS.json" in out
    assert "  testsGenerated: 1" in out
    assert "Pending" not in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fly"], "invalid choice: 'fly'"),
        (["metric", "speed", "1"], "argument NAME: invalid choice: 'speed'"),
        (["metric", "latency", "fast"], "argument VALUE: 'fast' is not a number"),
        (["metric", "latency", "nan"], "argument VALUE: 'nan' is not a finite number"),
        (["dogfood", "refactor"], "argument TYPE: invalid choice: 'refactor'"),
        (["complete", "1", "1"], "the following arguments are required: NAME"),
        (["complete", "x", "1", "n"], "argument MONTH: 'x' is not an integer"),
        (["complete", "1", "9", "n"], "argument WEEK: 9 is not between 1 and 5"),
        (["report", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_arguments(
    argv: list[str], message: str, tracker: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--tracker", str(tracker)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: roadmap")
    assert message in err
    assert not tracker.exists()


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("status", "complete", "metric", "dogfood", "report"):
        assert command in out
    assert main(["metric", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in METRICS)


def test_tracker_error_is_one_line(tracker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tracker.write_text('{"tasks": []}')
    assert main(["status", "--tracker", str(tracker)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"roadmap: error: {tracker}: 'tasks' must be an object, got an array\n"
    assert captured.out == ""


def test_missing_tasks_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    assert main(["status", "--tracker", str(tmp_path / "p.json"), "--tasks", str(missing)]) == 2
    assert capsys.readouterr().err == f"roadmap: error: task folder {missing} does not exist\n"


def test_bad_task_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.toml").write_text("[[tasks]]\nid = 'X'\n", encoding="utf-8")
    assert main(["status", "--tracker", str(tmp_path / "p.json"), "--tasks", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("roadmap: error: ")
    assert "bad.toml" in err
    assert err.count("\n") == 1


# --- as a separate process -------------------------------------------------------------


def test_module_runs_every_subcommand(tmp_path: Path) -> None:
    for args in (
        ["complete", "1", "1", "Fix failed request tracking"],
        ["metric", "errorRate", "0.01"],
        ["dogfood", "optimization"],
        ["status"],
    ):
        done = run_cli(*args, cwd=tmp_path)
        assert (done.returncode, done.stderr) == (0, ""), args
    report = run_cli("report", cwd=tmp_path)
    assert report.returncode == 0
    doc = json.loads(report.stdout)
    assert doc["metrics"]["errorRate"] == 0.01
    assert doc["dogFooding"]["optimizationsGenerated"] == 1
    assert doc["summary"]["progress"] == "100.0%"
    bare = run_cli(cwd=tmp_path)
    assert (bare.returncode, bare.stderr) == (0, "")
    assert bare.stdout.startswith("usage: roadmap")


@pytest.mark.parametrize(
    ("args", "first_line"),
    [
        (["metric", "speed", "1"], "usage: roadmap metric"),
        (["complete", "1"], "usage: roadmap complete"),
        (["status", "--tracker", "broken.json"], "roadmap: error: broken.json: invalid JSON"),
        (["report", "--tracker", "."], "roadmap: error: .: cannot read: Is a directory"),
    ],
)
def test_module_errors_exit_2_without_traceback(
    tmp_path: Path, args: list[str], first_line: str
) -> None:
    (tmp_path / "broken.json").write_text("{oops")
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith(first_line)
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
