"""The report, outputs, JUnit properties and tracker of real runs, checked against the sandbox."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.project import Roadmap, task_toml

ORIGINAL = {
    "currentMonth": 1,
    "currentWeek": 2,
    "tasks": {
        "month1_week1_Task kept": {
            "name": "Task kept",
            "month": 1,
            "week": 1,
            "completed": True,
            "completedAt": "2025-01-10T12:00:00.000Z",
            "notes": ["done by hand"],
            "owner": "ana",
        }
    },
    "metrics": {
        "cacheHitRate": 0.5,
        "latency": 180,
        "selectionAccuracy": 0,
        "costSavings": 0,
        "errorRate": 0,
    },
    "dogFooding": {
        "improvementsGenerated": 2,
        "testsGenerated": 0,
        "optimizationsGenerated": 0,
        "docsGenerated": 0,
    },
    "lastUpdated": "2025-01-10T12:00:00.000Z",
    "team": {"name": "platform"},
}


def test_report_json_matches_what_the_server_saw(roadmap: Roadmap) -> None:
    roadmap.tasks(
        "month1",
        task_toml("good", 1, 1, dogfooding="improvement"),
        task_toml("retried", 1, 2, dogfooding="test"),
        task_toml("broken", 2, 1, dogfooding="optimization"),
    )
    roadmap.sandbox.configure(
        rules=[
            {"match": "do retried", "status": 503, "times": 1},
            {"match": "do broken", "status": 400},
        ]
    )
    result = roadmap.run("-n", "2", "--junitxml", "junit.xml")
    assert result.parseoutcomes() == {"passed": 2, "failed": 1, "refused": 1}
    report = json.loads((roadmap.pytester.path / "roadmap-report" / "report.json").read_text())
    assert report["schema_version"] == 2
    assert report["totals"] == {
        "total": 3,
        "passed": 2,
        "failed": 1,
        "skipped": 0,
        "interrupted": 0,
        "not_run": 0,
        "rerun": 1,
        "success_rate": pytest.approx(2 / 3, abs=1e-3),
    }
    assert report["run"]["api"] == roadmap.sandbox.url
    assert report["run"]["workers"] == 2 and report["run"]["sandbox"] is False
    seen = Counter(e["task"] for e in roadmap.chats())
    last_worker = {e["task"]: e["worker"] for e in roadmap.chats()}
    tasks = {t["id"]: t for t in report["tasks"]}
    for task_id, task in tasks.items():
        assert task["attempts"] == seen[task_id]
        assert task["worker"] == last_worker[task_id]
    assert tasks["good"]["outcome"] == "passed" and tasks["good"]["error"] is None
    assert tasks["broken"]["outcome"] == "failed"
    assert "answered 400" in tasks["broken"]["error"]
    assert tasks["good"]["output"] == "outputs/good.json"
    saved = json.loads(
        (roadmap.pytester.path / "roadmap-report" / "outputs" / "good.json").read_text()
    )
    assert saved["message"] and saved["code"]
    assert (roadmap.pytester.path / "roadmap-report" / "outputs" / "good.md").is_file()
    assert not (roadmap.pytester.path / "roadmap-report" / "outputs" / "broken.json").exists()
    assert report["dogfooding"] == {
        "improvementsGenerated": 1,
        "testsGenerated": 1,
        "optimizationsGenerated": 0,
        "docsGenerated": 0,
    }
    markdown = (roadmap.pytester.path / "roadmap-report" / "report.md").read_text()
    assert "broken" in markdown and "answered 400" in markdown
    assert (roadmap.pytester.path / "roadmap-report" / "report.html").is_file()
    result.stdout.fnmatch_lines(["report: report.json, report.md, report.html in *roadmap-report*"])
    # JUnit carries the per-task properties
    tree = ET.parse(roadmap.pytester.path / "junit.xml")
    props = {
        case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
        for case in tree.iter("testcase")
    }
    assert props["retried"]["attempts"] == "2"
    # Its 503 was a refusal for load: it ran nothing and spent none of the retries.
    assert props["retried"]["refusals"] == "1"
    assert tasks["retried"]["refusals"] == 1 and tasks["good"]["refusals"] == 0
    assert report["run"]["refusals"] == {"total": 1, "by_status": [{"status": 503, "count": 1}]}
    assert props["retried"]["dogfooding"] == "test"
    assert props["retried"]["month"] == "1" and props["retried"]["week"] == "2"
    assert props["retried"]["worker"] == last_worker["retried"]


@pytest.mark.parametrize("workers", ["0", "2"])
def test_outputs_are_written_while_the_run_goes_on(roadmap: Roadmap, workers: str) -> None:
    # The second task waits for the first one's saved output, so it must appear before
    # the run ends; the report at the end still lists it.
    roadmap.tasks("month1", task_toml("first"))
    (roadmap.pytester.path / "roadmap_tasks" / "test_later.py").write_text(
        "import json, pathlib, time\n"
        "def test_later():\n"
        "    saved = pathlib.Path('roadmap-report/outputs/first.json')\n"
        "    deadline = time.monotonic() + 30\n"
        "    while not saved.exists():\n"
        "        assert time.monotonic() < deadline, 'no output while the run went on'\n"
        "        time.sleep(0.02)  # poll interval\n"
        "    assert json.loads(saved.read_text())['code']\n"
    )
    result = roadmap.run("-n", workers)
    result.assert_outcomes(passed=2)
    report = json.loads((roadmap.pytester.path / "roadmap-report" / "report.json").read_text())
    assert {t["id"]: t["output"] for t in report["tasks"]}["first"] == "outputs/first.json"
    result.stdout.fnmatch_lines(
        ["report: report.json, report.md, report.html in * (+2 task outputs)"]
    )


def test_step_summary_is_appended(roadmap: Roadmap, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = roadmap.pytester.path / "summary.md"
    summary.write_text("# earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    roadmap.tasks("month1", task_toml("a"))
    roadmap.run().assert_outcomes(passed=1)
    text = summary.read_text()
    assert text.startswith("# earlier step\n") and "a" in text and len(text) > 40


def test_tracker_round_trip_from_the_original_format(roadmap: Roadmap) -> None:
    tracker = roadmap.pytester.path / "ROADMAP_PROGRESS.json"
    tracker.write_text(json.dumps(ORIGINAL, indent=2))
    roadmap.tasks(
        "month1",
        task_toml("kept", title="Task kept"),
        task_toml("fresh", title="Fresh work", dogfooding="improvement"),
        task_toml("bad", title="Bad work"),
    )
    roadmap.sandbox.configure(rules=[{"match": "do bad", "status": 400}])
    result = roadmap.run()
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["tracker: updated *ROADMAP_PROGRESS.json"])
    doc = json.loads(tracker.read_text())
    assert doc["team"] == {"name": "platform"}
    kept = doc["tasks"]["month1_week1_Task kept"]
    assert kept["owner"] == "ana" and kept["completedAt"] == "2025-01-10T12:00:00.000Z"
    fresh = doc["tasks"]["month1_week1_Fresh work"]
    assert fresh["completed"] is True and fresh["completedAt"].endswith("Z")
    bad = doc["tasks"]["month1_week1_Bad work"]
    assert bad["completed"] is False and "answered 400" in bad["notes"][-1]
    assert doc["dogFooding"]["improvementsGenerated"] == 3
    assert doc["metrics"]["latency"] == 180


def test_resume_skips_completed_tasks(roadmap: Roadmap) -> None:
    tracker = roadmap.pytester.path / "ROADMAP_PROGRESS.json"
    tracker.write_text(json.dumps(ORIGINAL))
    roadmap.tasks("month1", task_toml("kept", title="Task kept"), task_toml("fresh"))
    result = roadmap.run("--roadmap-resume", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*already complete in ROADMAP_PROGRESS.json (--roadmap-resume)*"])
    assert [e["task"] for e in roadmap.chats()] == ["fresh"]


def test_broken_tracker_is_one_clear_line(roadmap: Roadmap) -> None:
    (roadmap.pytester.path / "ROADMAP_PROGRESS.json").write_text("{ not json")
    roadmap.tasks("month1", task_toml("a"))
    result = roadmap.run("--roadmap-resume")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: pytest-roadmap: --roadmap-resume: *ROADMAP_PROGRESS.json*"]
    )
    assert "Traceback" not in result.stderr.str()


def test_unwritable_report_folder_is_reported_not_raised(roadmap: Roadmap) -> None:
    (roadmap.pytester.path / "blocked").write_text("a file where the folder should be")
    roadmap.tasks("month1", task_toml("a"))
    result = roadmap.run("--roadmap-report", "blocked/report")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["roadmap: report not written: *blocked*"])
    assert "Traceback" not in result.stdout.str()


def test_two_runs_finishing_together_lose_no_update(roadmap: Roadmap) -> None:
    tracker = roadmap.pytester.path / "ROADMAP_PROGRESS.json"
    tracker.write_text(json.dumps(ORIGINAL))
    names = [f"t{i}" for i in range(6)]
    roadmap.tasks("month1", *(task_toml(n, title=f"Work {n}") for n in names))
    common = [
        "--roadmap",
        "-n",
        "0",
        "--roadmap-api",
        roadmap.sandbox.url,
        "--roadmap-rate-limit",
        "500",
    ]
    first = roadmap.spawn(*common, "-k", "t0 or t1 or t2", "--roadmap-report", "r1")
    second = roadmap.spawn(*common, "-k", "t3 or t4 or t5", "--roadmap-report", "r2")
    for proc in (first, second):
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out.decode()
    doc = json.loads(tracker.read_text())
    for name in names:
        assert doc["tasks"][f"month1_week1_Work {name}"]["completed"] is True
    assert doc["team"] == {"name": "platform"}


def test_interrupted_run_leaves_valid_files(roadmap: Roadmap) -> None:
    tracker = roadmap.pytester.path / "ROADMAP_PROGRESS.json"
    tracker.write_text(json.dumps(ORIGINAL))
    before = tracker.read_bytes()
    roadmap.tasks("month1", task_toml("quick"), task_toml("stuck"))
    roadmap.sandbox.configure(rules=[{"match": "do stuck", "hang": True}])
    proc = roadmap.spawn("--roadmap", "-n", "0", "--roadmap-api", roadmap.sandbox.url)
    deadline = time.monotonic() + 60
    while not any(e["task"] == "stuck" for e in roadmap.chats()):
        assert time.monotonic() < deadline, "the stuck task never reached the server"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    text = out.decode()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, text
    assert "KeyboardInterrupt" in text
    report = roadmap.pytester.path / "roadmap-report" / "report.json"
    if report.exists():  # written whole or not at all
        json.loads(report.read_text())
    json.loads(tracker.read_text())
    assert tracker.read_bytes() == before or json.loads(tracker.read_text())["team"]
    leftovers = [p for p in roadmap.pytester.path.rglob("*.tmp*")]
    assert leftovers == []


def test_sigterm_ends_the_run_cleanly(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("stuck"))
    roadmap.sandbox.configure(rules=[{"match": "do stuck", "hang": True}])
    proc = roadmap.spawn("--roadmap", "-n", "0", "--roadmap-api", roadmap.sandbox.url)
    done = threading.Event()

    def wait_for_request() -> None:
        while not any(e["task"] == "stuck" for e in roadmap.chats()):
            time.sleep(0.02)
        done.set()

    threading.Thread(target=wait_for_request, daemon=True).start()
    assert done.wait(60)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode != 0


# Appended to a copy of report.html (which has no script of its own): what Chromium drew of
# each chart's line, in CSS pixels, into the DOM that --dump-dom prints.
MEASURE_LINES = """
<script>
const drawn = {};
for (const name of ["limit", "rate"]) {
  const line = document.querySelector("#timeline path." + name);
  const box = line && line.getBoundingClientRect();
  drawn[name] = line && {width: box.width, length: line.getTotalLength(),
                         stroke: getComputedStyle(line).stroke};
}
drawn.timeline = document.getElementById("timeline").getBoundingClientRect().width;
const out = document.createElement("pre");
out.id = "drawn";
out.textContent = JSON.stringify(drawn);
document.body.appendChild(out);
</script>
"""


@pytest.mark.slow
def test_html_report_of_a_real_run_renders_in_chromium(roadmap: Roadmap, tmp_path: Path) -> None:
    from tests.support.chromium import CHROMIUM, console_lines, run_chromium

    if CHROMIUM is None:
        pytest.skip("chromium is not installed")
    roadmap.tasks(
        "month1",
        task_toml("ok1", title="<b>bold</b> & co"),
        task_toml("ok2"),
        task_toml("flaky"),
        task_toml("bad"),
    )
    roadmap.sandbox.configure(
        latency=0.5,
        rules=[
            {"match": "do flaky", "status": 503, "times": 1},
            {"match": "do bad", "status": 400, "body": "<script>alert(1)</script>"},
        ],
    )
    # A run of about two seconds, far shorter than the health interval: the monitor's
    # status line never comes, and the charts still show the run.
    roadmap.run("-n", "2", "--roadmap-health-interval", "60")
    folder = roadmap.pytester.path / "roadmap-report"
    run = json.loads((folder / "report.json").read_text())["run"]
    assert run["duration_s"] < 60
    page = folder / "report.html"
    done = run_chromium(page, tmp_path / "profile", "--dump-dom")
    dom = done.stdout
    assert 'id="timeline"' in dom
    workers = {e["worker"] for e in roadmap.chats()}
    assert sorted(set(re.findall(r'class="lane" data-worker="([^"]+)"', dom))) == sorted(workers)
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in dom
    assert "<script>alert(1)</script>" not in dom
    assert "no samples recorded" not in dom
    assert console_lines(done.stderr) == []

    # Both charts draw a line across the run: the limit from its start to its end, the
    # request rate over the same span.
    measured = tmp_path / "measured.html"
    measured.write_text(page.read_text(encoding="utf-8") + MEASURE_LINES, encoding="utf-8")
    done = run_chromium(measured, tmp_path / "profile2", "--dump-dom")
    found = re.search(r'<pre id="drawn">(.*?)</pre>', done.stdout)
    assert found is not None, done.stdout[-2000:]
    drawn = json.loads(found.group(1))
    assert console_lines(done.stderr) == []
    chart = drawn["timeline"] * (1000 - 96 - 16) / 1000  # the axis, without the labels
    for name, colour in (("limit", "rgb(51, 103, 214)"), ("rate", "rgb(142, 68, 173)")):
        assert drawn[name] is not None, name
        assert drawn[name]["stroke"] == colour
        assert drawn[name]["width"] > 0.9 * chart, (name, drawn)
        assert drawn[name]["length"] > 0


def _tracker_marks(roadmap: Roadmap) -> dict[str, bool]:
    doc = json.loads((roadmap.pytester.path / "ROADMAP_PROGRESS.json").read_text())
    return {key: task["completed"] for key, task in doc["tasks"].items()}


def test_outputs_link_out_of_the_report_folder_costs_only_the_outputs(roadmap: Roadmap) -> None:
    elsewhere = roadmap.pytester.path / "elsewhere"
    elsewhere.mkdir()
    folder = roadmap.pytester.path / "roadmap-report"
    folder.mkdir()
    (folder / "outputs").symlink_to(elsewhere)
    roadmap.tasks("month1", task_toml("a"), task_toml("b"))
    result = roadmap.run()
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            f"report: report.json, report.md, report.html in {folder}",
            f"roadmap: task outputs of 2 tasks not written: {folder / 'outputs'} leads to "
            f"{elsewhere}, outside the report folder",
            "tracker: updated *ROADMAP_PROGRESS.json",
        ]
    )
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert list(elsewhere.iterdir()) == []
    tasks = json.loads((folder / "report.json").read_text())["tasks"]
    assert [(t["id"], t["outcome"], t["output"]) for t in tasks] == [
        ("a", "passed", None),
        ("b", "passed", None),
    ]
    assert _tracker_marks(roadmap) == {"month1_week1_Task a": True, "month1_week1_Task b": True}


def _small_tmpfs(mount_point: Path, size: str) -> None:
    """Mount a tmpfs of `size` at `mount_point`, or skip: only root on Linux may."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root on Linux")
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


@pytest.mark.parametrize("limit", ["tmpfs", "file-size"])
def test_a_full_disk_costs_only_what_does_not_fit(
    roadmap: Roadmap, limit: str, request: pytest.FixtureRequest
) -> None:
    """An answer too big for the disk: its outputs are left out and said so in one line;
    the other task's outputs, the three reports and the tracker are written."""
    folder = roadmap.pytester.path / "report"
    preexec: Callable[[], None] | None = None
    if limit == "tmpfs":  # a real ENOSPC: a 256 KiB file system for the report folder
        _small_tmpfs(folder, "256k")
        request.addfinalizer(lambda: subprocess.run(["umount", str(folder)], check=False))
        reason = "No space left on device"
    else:  # EFBIG, where no mount is allowed: the run may write no file over 256 KiB
        resource = pytest.importorskip("resource")

        def limit_file_size() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))

        preexec = limit_file_size

        reason = "File too large"
    roadmap.tasks("month1", task_toml("big"), task_toml("small"))
    huge = json.dumps({"code": "x = 1\n" * 100_000, "message": "all of it"})
    roadmap.sandbox.configure(rules=[{"match": "do big", "body": huge}])
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", *roadmap.args("--roadmap-report", str(folder))],
        cwd=roadmap.pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=preexec,  # only sets a resource limit: safe between fork and exec
    )
    out = proc.communicate(timeout=180)[0].decode()
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert re.search(
        rf"^roadmap: 2 task outputs not written to {re.escape(str(folder))}/outputs: "
        rf"big\.(json|md): {reason} \(and 1 more\)$",
        out,
        re.MULTILINE,
    ), out
    assert f"report: report.json, report.md, report.html in {folder} (+2 task outputs)" in out
    assert sorted(p.name for p in (folder / "outputs").iterdir()) == ["small.json", "small.md"]
    tasks = json.loads((folder / "report.json").read_text())["tasks"]
    assert {t["id"]: t["output"] for t in tasks} == {"big": None, "small": "outputs/small.json"}
    assert (folder / "report.md").stat().st_size > 0 and (folder / "report.html").exists()
    assert _tracker_marks(roadmap) == {
        "month1_week1_Task big": True,
        "month1_week1_Task small": True,
    }
    assert [e["task"] for e in roadmap.chats()] == ["big", "small"]
    assert not [p for p in folder.rglob("*.tmp")]
