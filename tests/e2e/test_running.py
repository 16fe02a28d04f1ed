"""Tasks run against the sandbox: what passes, every failure kind, the token, xdist."""

from __future__ import annotations

import hashlib
import socket

import pytest

from tests.support.project import Roadmap, task_toml

TOKEN = "tok-SECRET-4f9a1c"


def test_tasks_pass_and_the_server_saw_each_prompt(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("monitoring", prompt="track failures"), task_toml("cache"))
    result = roadmap.run("--roadmap-model", "custom:test-model")
    result.assert_outcomes(passed=2)
    chats = roadmap.chats()
    assert sorted(e["task"] for e in chats) == ["cache", "monitoring"]
    assert {e["model"] for e in chats} == {"custom:test-model"}
    assert [e["message"] for e in roadmap.chats("monitoring")] == ["track failures"]
    assert all(e["status"] == 200 for e in chats)
    result.stdout.fnmatch_lines(
        [
            "roadmap: api=http://127.0.0.1:* model=custom:test-model "
            "workers=0 (in-process, one task at a time) rate=500/s "
            "timeout=30s",
            "*roadmap summary*",
            "roadmap: 2 tasks: 2 completed, 0 failed, 0 skipped; success rate 100%",
            "Month 1: 2/2 tasks of this run complete",
        ]
    )


def test_pytest_timeouts_own_timeout_is_said_to_time_no_task(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("slow"))
    result = roadmap.run()
    assert "pytest-timeout's timeout" not in result.stdout.str()
    # A project whose ini file gives its ordinary tests a pytest-timeout timeout (this
    # repository's own has 300 s): pytest-timeout says so in the header, and so does the
    # roadmap, with what times the tasks instead; and it is true: a task slower than that
    # timeout, within its own, passes.
    roadmap.pytester.makeini("[pytest]\ntimeout = 1\n")
    roadmap.sandbox.configure(latency=1.5)
    result = roadmap.run("--roadmap-timeout", "10")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "roadmap: api=* timeout=10s",
            "roadmap: pytest-timeout's timeout: 1.0s (ini file) does not apply to tasks: each "
            "attempt's call has its own, from the task timeout",
        ]
    )
    result.stdout.fnmatch_lines(["timeout: 1.0s"])
    result = roadmap.run("--roadmap-timeout", "10", "--timeout", "0.5")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["roadmap: pytest-timeout's timeout: 0.5s (option --timeout) *"])


def test_parallel_run_spreads_tasks_over_workers(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", *(task_toml(f"t{i}") for i in range(8)))
    roadmap.sandbox.configure(latency=0.2)
    result = roadmap.run("-n", "2")
    result.assert_outcomes(passed=8)
    chats = roadmap.chats()
    assert len(chats) == 8
    assert {e["worker"] for e in chats} == {"gw0", "gw1"}


def gw1_waits_for_answers(roadmap: Roadmap, hook: str, answers: int, then: str) -> None:
    """A conftest whose `hook` on worker gw1 first waits (30 s at most) until the sandbox
    has answered `answers` chat requests, then runs `then`."""
    roadmap.pytester.makeconftest(
        f"""
        import os, time, requests

        def {hook}:
            if os.environ.get("PYTEST_XDIST_WORKER") != "gw1":
                return
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                log = requests.get("{roadmap.sandbox.url}/_sandbox/log", timeout=5).json()
                if sum(e["path"] == "/api/codebase/chat" and e["status"] == 200
                       for e in log) >= {answers}:
                    break
                time.sleep(0.05)  # poll interval
            {then}
        """
    )


def test_tasks_start_before_the_last_worker_is_ready(roadmap: Roadmap) -> None:
    # gw1 finishes starting only once the server has answered three tasks. xdist's own
    # scheduling waits for every worker to collect, so there it would wait out its 30 s
    # and the first answers would come after it was ready.
    roadmap.tasks("month1", *(task_toml(f"t{i}") for i in range(6)))
    ready_file = "open('gw1-ready', 'w').write(repr(time.time()))"
    gw1_waits_for_answers(roadmap, "pytest_configure(config)", 3, ready_file)
    result = roadmap.run("-n", "2")
    result.assert_outcomes(passed=6)
    ready = float((roadmap.pytester.path / "gw1-ready").read_text())
    early = [e for e in roadmap.chats() if e["answered"] is not None and e["answered"] < ready]
    assert len(early) >= 3
    assert {e["worker"] for e in early} == {"gw0"}
    assert sorted(e["task"] for e in roadmap.chats()) == sorted(f"t{i}" for i in range(6))


@pytest.mark.slow
def test_a_worker_that_collects_differently_gets_no_task(roadmap: Roadmap) -> None:
    # gw1 drops a task from its collection, after gw0 has started working.
    roadmap.tasks("month1", *(task_toml(f"t{i}") for i in range(6)))
    roadmap.sandbox.configure(latency=0.3)  # tasks are still pending when gw1 is ready
    gw1_waits_for_answers(roadmap, "pytest_collection_modifyitems(items)", 1, "del items[-1]")
    result = roadmap.run("-n", "2")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*Different tests were collected between gw0 and gw1*"])
    assert {e["worker"] for e in roadmap.chats()} == {"gw0"}
    assert sorted(e["task"] for e in roadmap.chats()) == [f"t{i}" for i in range(6)]


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        ({"status": 400}, "*answered 400 Bad Request: *"),
        ({"status": 404, "body": "nope"}, "*answered 404 Not Found: nope*"),
        ({"status": 200, "body": "<html>not json</html>"}, "*with a body that is not JSON*"),
        ({"status": 200, "body": '{"other": 1}'}, "*neither 'code' nor 'message'*"),
    ],
    ids=["400", "404", "not-json", "no-code"],
)
def test_permanent_failures_fail_at_once_with_their_reason(
    roadmap: Roadmap, rule: dict[str, object], words: str
) -> None:
    roadmap.tasks("month1", task_toml("broken"), task_toml("fine"))
    roadmap.sandbox.configure(rules=[{"match": "do broken", **rule}])
    result = roadmap.run()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [f"FAILED broken: POST http://127.0.0.1:*/api/codebase/chat{words}"]
    )
    # not transient: the server saw exactly one attempt
    assert len(roadmap.chats("broken")) == 1


def test_server_error_is_retried_then_reported(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("flaky"))
    roadmap.sandbox.configure(rules=[{"match": "do flaky", "status": 500}])
    result = roadmap.run()
    assert result.parseoutcomes() == {"failed": 1, "rerun": 2}
    assert [e["attempt"] for e in roadmap.chats("flaky")] == ["1", "2", "3"]
    result.stdout.fnmatch_lines(["FAILED flaky: *answered 500 Internal Server Error*"])


def test_timeout_has_its_own_words(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("slow"))
    roadmap.sandbox.configure(rules=[{"match": "do slow", "delay": 3.0}])
    result = roadmap.run("--roadmap-timeout", "0.5", "--reruns", "0")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["FAILED slow: no answer within 0.5 s from POST *"])


def test_connection_closed_mid_answer(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("cut"))
    roadmap.sandbox.configure(rules=[{"match": "do cut", "close": True}])
    result = roadmap.run("--reruns", "0")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["FAILED cut: connection closed before the whole answer arrived*"])


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_never_simulates_success(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("a"))
    api = f"http://127.0.0.1:{_closed_port()}"
    result = roadmap.run(f"--roadmap-api={api}", "--roadmap-health-wait", "0")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["FAILED a: API unhealthy for 0 s: connection refused: is the API running*"]
    )


def test_unresolvable_host(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("a"))
    result = roadmap.run("--roadmap-api=http://no-such-host.invalid", "--roadmap-health-wait", "0")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["FAILED a: API unhealthy for 0 s: cannot resolve the API's host*"])


def test_token_is_sent_and_never_shown(roadmap: Roadmap, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEAST_MODE_TOKEN", TOKEN)
    roadmap.tasks("month1", task_toml("ok"), task_toml("bad"))
    roadmap.sandbox.configure(rules=[{"match": "do bad", "status": 401, "body": TOKEN}])
    result = roadmap.run("-rA", "-v")
    result.assert_outcomes(passed=1, failed=1)
    expected = hashlib.sha256(f"Bearer {TOKEN}".encode()).hexdigest()
    assert {e["auth"] for e in roadmap.sandbox.log()} == {expected}
    output = result.stdout.str() + result.stderr.str()
    assert "***" in output  # the echoed token was scrubbed from the reason
    assert TOKEN not in output
    for path in roadmap.pytester.path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_python_task_uses_the_client_fixture(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("filetask"))
    (roadmap.pytester.path / "roadmap_tasks" / "test_custom.py").write_text(
        "def test_custom(roadmap_client):\n"
        "    answer = roadmap_client.chat('custom python prompt')\n"
        "    assert 'code' in answer\n"
        "    assert roadmap_client.get('/api/health').status_code == 200\n"
    )
    result = roadmap.run()
    result.assert_outcomes(passed=2)
    assert any(e["message"] == "custom python prompt" for e in roadmap.chats())


def test_plain_run_without_n_uses_max_concurrency(
    roadmap: Roadmap, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_CONCURRENCY", "2")
    roadmap.tasks("month1", *(task_toml(f"t{i}") for i in range(4)))
    result = roadmap.run("-p", "xdist")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["roadmap: * workers=2 *"])
    assert {e["worker"] for e in roadmap.chats()} <= {"gw0", "gw1"}


def test_n0_and_no_xdist_run_one_at_a_time(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", *(task_toml(f"t{i}") for i in range(3)))
    result = roadmap.run("-p", "no:xdist")
    result.assert_outcomes(passed=3)
    assert {e["worker"] for e in roadmap.chats()} == {"main"}


@pytest.mark.parametrize(("workers", "frozen"), [("1", True), ("0", False)])
def test_workers_freeze_their_heap(roadmap: Roadmap, workers: str, frozen: bool) -> None:
    # A worker exits with its heap frozen (its exit-time garbage collections took 1.9 s at
    # -n 8); a session without workers, whose process may outlive it, leaves it alone.
    roadmap.tasks("month1", task_toml("t0"))
    (roadmap.pytester.path / "roadmap_tasks" / "test_gc.py").write_text(
        f"import gc\ndef test_gc():\n    assert (gc.get_freeze_count() > 0) is {frozen}\n"
    )
    roadmap.run_subprocess("-n", workers).assert_outcomes(passed=2)


def test_each_process_imports_only_what_it_uses(roadmap: Roadmap) -> None:
    # requests (a third of the plugin's import time) comes in with the client, in the
    # processes that run tasks; the report code only where the report is written; and a
    # session without --roadmap, where the plugin is merely installed, loads neither.
    roadmap.tasks("month1", task_toml("t0"))
    roadmap.pytester.makeconftest(
        """
        import os, sys

        def pytest_unconfigure(config):
            role = os.environ.get("PYTEST_XDIST_WORKER", "main")
            watched = ("requests", "pytest_roadmap.client", "pytest_roadmap.report")
            with open(f"modules-{role}", "w") as handle:
                handle.write(" ".join(m for m in watched if m in sys.modules))
        """
    )
    roadmap.pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    path = roadmap.pytester.path

    roadmap.run_subprocess("-n", "1", "roadmap_tasks").assert_outcomes(passed=1)
    assert (path / "modules-main").read_text() == "pytest_roadmap.report"
    assert (path / "modules-gw0").read_text() == "requests pytest_roadmap.client"

    roadmap.pytester.runpytest_subprocess(*roadmap.plugins, "test_plain.py").assert_outcomes(
        passed=1
    )
    assert (path / "modules-main").read_text() == ""


# The modules that registering the options needs: the entry point, the options, their
# literals (generated from the settings), and the errors the entry point catches.
OPTION_MODULES = {
    "pytest_roadmap",
    "pytest_roadmap.plugin",
    "pytest_roadmap.options",
    "pytest_roadmap.option_table",
    "pytest_roadmap.errors",
}


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one process", "-n 2"])
def test_a_run_without_roadmap_imports_only_the_options(
    pytester: pytest.Pytester, workers: list[str]
) -> None:
    # An installed plugin is loaded by every pytest run of the project; without --roadmap
    # it may cost the run its option definitions and nothing else. Compared with the same
    # run with the plugin disabled, so modules other plugins import do not count.
    pytester.makeconftest(
        """
        import os, sys

        def pytest_unconfigure(config):
            role = os.environ.get("PYTEST_XDIST_WORKER", "main")
            with open(f"modules-{role}-{config.getoption('roadmap', None)}", "w") as handle:
                handle.write(" ".join(sorted(sys.modules)))
        """
    )
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    quiet = ["-p", "no:cacheprovider", "-p", "no:benchmark", "-p", "no:hypothesispytest"]
    plain = [*quiet, *workers, "test_plain.py"]
    pytester.runpytest_subprocess(*plain).assert_outcomes(passed=1)
    pytester.runpytest_subprocess("-p", "no:roadmap", *plain).assert_outcomes(passed=1)
    roles = ["main", "gw0", "gw1"] if workers else ["main"]
    for role in roles:
        used = set((pytester.path / f"modules-{role}-False").read_text().split())
        bare = set((pytester.path / f"modules-{role}-None").read_text().split())
        added = used - bare
        assert {m for m in added if m.startswith("pytest_roadmap")} == OPTION_MODULES, role
        heavy = {"requests", "urllib3", "sqlite3", "_sqlite3", "redis", "tomli", "filelock"}
        assert not added & heavy, role
