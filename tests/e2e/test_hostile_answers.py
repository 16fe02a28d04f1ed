"""An API that answers with hostile things: redirects, bombs, escapes, echoed secrets,
a trickle. Each run is judged by what the sandbox saw and what reached the terminal and
the files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_roadmap import cli
from pytest_roadmap.client import RoadmapClient
from pytest_roadmap.sandbox import CHAT_PATH, max_in_window
from tests.support.project import Roadmap, task_toml

TOKEN = "tok-hostile-5f1e-DISTINCTIVE"
CONTROL = ("\x1b", "\x07", "\r", "\x9b")


def files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


# --------------------------------------------------------------------------- redirects


@pytest.mark.slow
def test_every_redirect_hop_passes_the_rate_limit(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("moved"))
    roadmap.sandbox.configure(
        rules=[{"match": "do moved", "status": 307, "redirect": CHAT_PATH, "times": 3}]
    )
    result = roadmap.run("--roadmap-rate-limit", "2")
    result.assert_outcomes(passed=1)
    chats = roadmap.chats()
    assert [e["status"] for e in chats] == [307, 307, 307, 200]
    # Health probe and four hops, at 2/s: never more than 2 in any second at the server.
    assert max_in_window(roadmap.sandbox.log()) <= 2


def test_a_long_redirect_chain_stops_after_five_hops(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("loop"))
    roadmap.sandbox.configure(
        rules=[{"match": "do loop", "status": 307, "redirect": CHAT_PATH, "times": 25}]
    )
    result = roadmap.run("--roadmap-rate-limit", "4")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["FAILED loop: POST http://127.0.0.1:*: more than 5 redirects*"])
    assert len(roadmap.chats()) == 6  # one attempt: a redirect loop is not retried
    # Every hop is throttled: at 4/s, no more than 4 in any 0.9 s (0.1 s for arrival jitter
    # on a loaded machine; unthrottled, the six hops would arrive within milliseconds).
    assert max_in_window(roadmap.sandbox.log(), window=0.9) <= 4


def test_a_303_turns_the_request_into_a_bodiless_get(roadmap: Roadmap) -> None:
    roadmap.sandbox.configure(
        rules=[{"match": "see other", "status": 303, "redirect": CHAT_PATH, "times": 1}]
    )
    client = RoadmapClient(roadmap.sandbox.url, model="m")
    try:
        response = client.post(CHAT_PATH, json={"message": "see other"})
    finally:
        client.close()
    assert response.status_code == 405 and [r.status_code for r in response.history] == [303]
    first, second = roadmap.chats()
    assert (first["method"], second["method"], second["message"]) == ("POST", "GET", None)


def other_host(roadmap: Roadmap) -> str:
    # Another host name for the same sandbox: the client compares names, not addresses.
    return roadmap.sandbox.url.replace("127.0.0.1", "localhost") + CHAT_PATH


def test_a_redirect_to_another_host_is_not_followed(
    roadmap: Roadmap, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BEAST_MODE_TOKEN", TOKEN)
    roadmap.tasks("month1", task_toml("away"))
    roadmap.sandbox.configure(
        rules=[{"match": "do away", "status": 307, "redirect": other_host(roadmap), "times": 1}]
    )
    result = roadmap.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["FAILED away: POST * redirected to another host (http://localhost:*): not followed*"]
    )
    hosts = {e["host"].split(":")[0] for e in roadmap.sandbox.log()}
    assert hosts == {"127.0.0.1"}  # neither the prompt nor the token went elsewhere


def test_redirect_hosts_allows_another_host_but_never_sends_it_the_token(
    roadmap: Roadmap, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BEAST_MODE_TOKEN", TOKEN)
    roadmap.tasks("month1", task_toml("away"))
    roadmap.sandbox.configure(
        rules=[{"match": "do away", "status": 308, "redirect": other_host(roadmap), "times": 1}]
    )
    result = roadmap.run("--roadmap-redirect-hosts", "example.org, localhost")
    result.assert_outcomes(passed=1)
    first, second = roadmap.chats()
    assert first["host"].startswith("127.0.0.1:") and first["auth"] is not None
    assert second["host"].startswith("localhost:") and second["auth"] is None
    assert second["message"] == "do away now"


def test_redirect_hosts_setting_is_checked(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("away"))
    result = roadmap.run("--roadmap-redirect-hosts", "http://x.org/")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: pytest-roadmap: invalid redirect hosts 'http://x.org/' from option *: must be*"]
    )


# --------------------------------------------------------------------------- size


def test_an_answer_is_capped_after_decompression(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("bomb"), task_toml("fine"))
    # 30 MB of code that travels as about 30 KB of gzip.
    roadmap.sandbox.configure(rules=[{"match": "do bomb", "size": 30_000_000, "gzip": True}])
    result = roadmap.run("--roadmap-max-body", "1MB", "--roadmap-report", "out")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["FAILED bomb: POST * answered 200 with a body above 1 MB (--roadmap-max-body)*"]
    )
    assert len(roadmap.chats("bomb")) == 1  # not retried: it would be as large again
    outputs = roadmap.pytester.path / "out" / "outputs"
    assert sorted(p.name for p in outputs.iterdir()) == ["fine.json", "fine.md"]


def test_the_default_cap_is_10_mb(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("big"), task_toml("bigger"))
    roadmap.sandbox.configure(
        rules=[
            {"match": "do bigger", "size": 11_000_000, "gzip": True},
            {"match": "do big", "size": 9_000_000, "gzip": True},
        ]
    )
    result = roadmap.run()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["FAILED bigger: * with a body above 10 MB*"])


@pytest.mark.parametrize("value", ["0", "abc", "5 XB", "-1MB", "3GB"])
def test_max_body_setting_is_checked(roadmap: Roadmap, value: str) -> None:
    roadmap.tasks("month1", task_toml("one"))
    result = roadmap.run(f"--roadmap-max-body={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"ERROR: pytest-roadmap: invalid maximum answer size '{value}' from option *: must be*"]
    )


# --------------------------------------------------------------------------- time


@pytest.mark.slow
def test_a_trickled_answer_ends_at_the_task_timeout(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("drip"), task_toml("driphead"))
    body = json.dumps({"code": "x" * 200})
    roadmap.sandbox.configure(
        rules=[
            {"match": "do driphead", "body": body, "trickle": 0.1, "trickle_head": True},
            {"match": "do drip", "body": body, "trickle": 0.1},
        ]
    )
    result = roadmap.run("--roadmap-timeout", "1.5", "--reruns", "0")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "FAILED drip: no answer within 1.5 s from POST http://*",
            "FAILED driphead: no answer within 1.5 s from POST http://*",
        ]
    )
    text = result.stdout.str()
    assert "Timeout" not in text and "Stack of" not in text  # pytest-timeout never fired
    for entry in roadmap.chats():  # the sandbox saw the client go away
        assert entry["answered"] is None or entry["answered"] - entry["arrived"] < 4


# --------------------------------------------------------------------------- escapes


def test_control_characters_from_the_api_and_titles_are_shown_escaped(
    roadmap: Roadmap, capsys: pytest.CaptureFixture[str]
) -> None:
    roadmap.raw(
        "month1.toml",
        r"""
        [[tasks]]
        id = "evil"
        title = "Clear \u001b[2J the screen\r\nFAILED nothing"
        prompt = "do evil now"
        month = 1
        week = 1

        [[tasks]]
        id = "loud"
        title = "Loud"
        prompt = "do loud now"
        month = 1
        week = 1
        """,
    )
    answer = {"code": "print(1)\n\x1b]0;owned\x07\x9b31m\n", "message": "ok \x1b[2J"}
    roadmap.sandbox.configure(
        rules=[
            {"match": "do evil", "status": 500, "body": "boom \x1b[2J\x1b]0;title\x07 end"},
            {"match": "do loud", "body": json.dumps(answer)},
        ]
    )
    result = roadmap.run(
        "-rA", "-v", "--reruns", "0", "--junitxml", "junit.xml", "--roadmap-report", "out"
    )
    result.assert_outcomes(passed=1, failed=1)
    text = result.stdout.str() + result.stderr.str()
    for char in CONTROL:
        assert char not in text, repr(char)
    assert "boom \\x1b[2J\\x1b]0;title\\x07 end" in text
    assert "Clear \\x1b[2J the screen\\r\\nFAILED nothing" in text  # the failure's header
    for path in files_under(roadmap.pytester.path / "out"):
        data = path.read_text(encoding="utf-8")
        for char in CONTROL:
            assert char not in data, (path.name, char)
    saved = json.loads((roadmap.pytester.path / "out" / "outputs" / "loud.json").read_text())
    assert saved == answer  # the JSON keeps the answer exactly, in JSON's own escapes
    page = (roadmap.pytester.path / "out" / "outputs" / "loud.md").read_text(encoding="utf-8")
    assert "print(1)\n\\x1b]0;owned\\x07\\x9b31m\n" in page

    tracker = roadmap.pytester.path / "ROADMAP_PROGRESS.json"
    capsys.readouterr()
    code = cli.main(
        [
            "status",
            "--tasks",
            str(roadmap.pytester.path / "roadmap_tasks"),
            "--tracker",
            str(tracker),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    for char in CONTROL:
        assert char not in out, repr(char)
    assert "Clear \\x1b[2J the screen\\r\\nFAILED nothing" in out


# --------------------------------------------------------------------------- secrets


def test_an_echoed_token_is_masked_in_the_saved_outputs(
    roadmap: Roadmap, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BEAST_MODE_TOKEN", TOKEN)
    roadmap.tasks("month1", task_toml("echo"))
    roadmap.sandbox.configure(rules=[{"match": "do echo", "echo_auth": True}])
    result = roadmap.run("--roadmap-report", "out", "--junitxml", "junit.xml")
    result.assert_outcomes(passed=1)
    saved = json.loads((roadmap.pytester.path / "out" / "outputs" / "echo.json").read_text())
    assert saved["message"] == "you sent Authorization: Bearer ***"
    for path in files_under(roadmap.pytester.path):
        assert TOKEN.encode() not in path.read_bytes(), path


def test_a_password_in_the_api_url_is_masked_everywhere(roadmap: Roadmap) -> None:
    password = "pw-7c1d-DISTINCTIVE"
    api = roadmap.sandbox.url.replace("http://", f"http://robot:{password}@")
    roadmap.tasks("month1", task_toml("down"), task_toml("up"))
    roadmap.sandbox.configure(rules=[{"match": "do down", "status": 400}])
    result = roadmap.run(
        f"--roadmap-api={api}",
        "-rA",
        "--junitxml",
        "junit.xml",
        "--roadmap-report",
        "out",
    )
    result.assert_outcomes(passed=1, failed=1)
    text = result.stdout.str() + result.stderr.str()
    assert password not in text
    result.stdout.fnmatch_lines(
        [
            "roadmap: api=http://robot:***@127.0.0.1:* model=*",
            "FAILED down: POST http://127.0.0.1:*/api/codebase/chat answered 400*",
        ]
    )
    for path in files_under(roadmap.pytester.path):
        assert password.encode() not in path.read_bytes(), path
    assert "robot:***@" in (roadmap.pytester.path / "out" / "report.json").read_text()
    # The credentials still reach the API: the run used them.
    assert all(e["auth"] is not None for e in roadmap.sandbox.log())
