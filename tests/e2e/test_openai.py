"""The OpenAI protocol end to end against the sandbox: requests, answers, usage, cost, the
tokens-per-minute limit judged from the sandbox's log, bad input and the API key's secrecy."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from pytest_roadmap.sandbox import OPENAI_CHAT, OPENAI_MODELS, Rule, max_tokens_in_window
from tests.support.project import Roadmap, task_toml
from tests.support.waiting import wait_for

KEY = "sk-test-0123456789abcdef"


def openai_args(roadmap: Roadmap, *args: str) -> list[str]:
    return ["--roadmap-protocol", "openai", "--roadmap-api", roadmap.sandbox.url + "/v1", *args]


def chats(roadmap: Roadmap) -> list[dict[str, object]]:
    return [e for e in roadmap.sandbox.log() if e["path"] == OPENAI_CHAT]


def report(roadmap: Roadmap) -> dict[str, object]:
    path = roadmap.pytester.path / "roadmap-report" / "report.json"
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_openai_run_sends_chat_completions_and_records_usage_and_cost(roadmap: Roadmap) -> None:
    roadmap.tasks(
        "month1",
        task_toml("alpha", system="You write Python.", max_tokens=12, temperature=0.2),
        task_toml("beta"),
    )
    result = roadmap.run(
        *openai_args(roadmap, "--roadmap-price-in", "3", "--roadmap-price-out", "15"),
        "--junitxml=junit.xml",
    )
    result.assert_outcomes(passed=2)
    log = roadmap.sandbox.log()
    assert any(e["path"] == OPENAI_MODELS and e["status"] == 200 for e in log)  # health
    seen = {e["task"]: e for e in chats(roadmap)}
    assert set(seen) == {"alpha", "beta"} and all(e["status"] == 200 for e in seen.values())
    # max_tokens reached the server: it cut alpha's completion there.
    alpha_usage = seen["alpha"]["usage"]
    assert isinstance(alpha_usage, dict) and alpha_usage["completion"] == 12
    data = report(roadmap)
    tasks = {t["id"]: t for t in data["tasks"]}  # type: ignore[attr-defined]
    for task_id, entry in seen.items():
        assert tasks[task_id]["usage"] == entry["usage"]  # what the server counted
        usage = entry["usage"]
        assert isinstance(usage, dict)
        expected = (usage["prompt"] * 3 + usage["completion"] * 15) / 1e6
        assert tasks[task_id]["cost"] == pytest.approx(expected, abs=1e-6)
    run = data["run"]
    assert isinstance(run, dict) and run["protocol"] == "openai"
    total = sum(e["usage"]["total"] for e in seen.values())  # type: ignore[index]
    assert run["usage"]["total"] == total
    # The fenced code of beta's answer became its code.
    saved = json.loads((roadmap.pytester.path / "roadmap-report/outputs/beta.json").read_text())
    assert saved["code"].startswith("def solve_do_beta_now()")
    result.stdout.fnmatch_lines([f"tokens: {total:,} tokens (*), cost $*"])
    markdown = (roadmap.pytester.path / "roadmap-report/report.md").read_text()
    assert "## Token usage" in markdown and "| Cost |" in markdown
    html = (roadmap.pytester.path / "roadmap-report/report.html").read_text()
    assert "<th>Tokens</th>" in html and "<th>Cost</th>" in html
    junit = ET.parse(roadmap.pytester.path / "junit.xml")
    props = {
        (case.get("name"), p.get("name")): p.get("value")
        for case in junit.iter("testcase")
        for p in case.iter("property")
    }
    assert props[("beta", "tokens_total")] == str(seen["beta"]["usage"]["total"])  # type: ignore[index]
    assert ("beta", "cost") in props


def test_no_price_no_cost_and_beast_runs_have_no_usage(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("alpha"))
    roadmap.run(*openai_args(roadmap)).assert_outcomes(passed=1)
    data = report(roadmap)
    assert data["run"]["cost"] is None and data["tasks"][0]["cost"] is None  # type: ignore[index]
    assert data["tasks"][0]["usage"] is not None  # type: ignore[index]
    assert "| Cost |" not in (roadmap.pytester.path / "roadmap-report/report.md").read_text()
    roadmap.run().assert_outcomes(passed=1)  # the BEAST MODE protocol, as before
    data = report(roadmap)
    assert data["run"]["usage"] is None and data["tasks"][0]["usage"] is None  # type: ignore[index]
    assert data["run"]["protocol"] == "beast"  # type: ignore[index]


def test_openai_error_shape_gives_its_message(roadmap: Roadmap) -> None:
    body = json.dumps({"error": {"message": "The model `x` does not exist", "type": "invalid"}})
    roadmap.sandbox.configure(rules=[Rule(match="do alpha", status=404, body=body)])
    roadmap.tasks("month1", task_toml("alpha"))
    result = roadmap.run(*openai_args(roadmap))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*answered 404 Not Found: The model `x` does not exist*"])


def test_embedded_sandbox_speaks_openai(pytester: pytest.Pytester, plugin_flags: list[str]) -> None:
    (pytester.path / "roadmap_tasks").mkdir()
    (pytester.path / "roadmap_tasks" / "t.toml").write_text(task_toml("alpha", max_tokens=8))
    pytester.makeini("[pytest]\nroadmap_protocol = openai\n")
    result = pytester.runpytest(*plugin_flags, "--roadmap", "-n", "0")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["roadmap: api=http://127.0.0.1:*/v1 (sandbox) protocol=openai*"])
    data = json.loads((pytester.path / "roadmap-report/report.json").read_text())
    assert data["tasks"][0]["usage"]["completion"] == 8


def test_openai_api_key_is_the_token_and_is_never_shown(
    roadmap: Roadmap, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    roadmap.sandbox.configure(
        rules=[
            Rule(match="do alpha", echo_auth=True),
            Rule(match="do beta", status=401, body=json.dumps({"error": {"message": KEY}})),
        ]
    )
    roadmap.tasks("month1", task_toml("alpha"), task_toml("beta"))
    result = roadmap.run(*openai_args(roadmap), "--junitxml=junit.xml")
    result.assert_outcomes(passed=1, failed=1)
    expected = hashlib.sha256(f"Bearer {KEY}".encode()).hexdigest()
    assert {e["auth"] for e in chats(roadmap)} == {expected}
    assert KEY not in result.stdout.str() + result.stderr.str()
    for path in Path(roadmap.pytester.path).rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    # With the beast protocol, OPENAI_API_KEY is not the run's token.
    roadmap.sandbox.reset()
    roadmap.tasks("month1", task_toml("gamma"))
    roadmap.run().assert_outcomes(passed=1)
    assert [e["auth"] for e in roadmap.sandbox.log() if e["task"] == "gamma"] == [None]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (
            ("--roadmap-protocol", "grpc"),
            "invalid protocol 'grpc' from option --roadmap-protocol: must be beast or openai",
        ),
        (
            ("--roadmap-price-in", "-1"),
            "invalid input price '-1' from option --roadmap-price-in: must be a price per "
            "million prompt tokens from 0 to 1000000",
        ),
        (
            ("--roadmap-token-rate", "0"),
            "invalid token rate '0' from option --roadmap-token-rate: must be a number of "
            "tokens per minute from 1 to 100000000",
        ),
    ],
)
def test_bad_settings_are_one_line(roadmap: Roadmap, args: tuple[str, ...], words: str) -> None:
    roadmap.tasks("month1", task_toml("alpha"))
    result = roadmap.run(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"ERROR: pytest-roadmap: {words}" in result.stderr.str()
    assert "Traceback" not in result.stderr.str()
    assert roadmap.sandbox.log() == []


@pytest.mark.parametrize(
    ("fields", "protocol", "words"),
    [
        ({"max_tokens": 10}, "beast", "'max_tokens' is sent only with --roadmap-protocol openai"),
        ({"system": "x"}, "beast", "'system' is sent only with --roadmap-protocol openai"),
        ({"max_tokens": 0}, "openai", "'max_tokens' must be an integer from 1 to 1000000, got 0"),
        ({"temperature": 3}, "openai", "'temperature' must be a number from 0 to 2, got 3"),
        ({"temperature": "hot"}, "openai", "'temperature' must be a number from 0 to 2, got"),
        ({"system": ""}, "openai", "'system' must be a non-empty string"),
    ],
)
def test_bad_task_fields_are_collection_errors(
    roadmap: Roadmap, fields: dict[str, object], protocol: str, words: str
) -> None:
    roadmap.tasks("month1", task_toml("alpha", **fields))
    api = roadmap.sandbox.url + ("/v1" if protocol == "openai" else "")
    result = roadmap.run("--roadmap-protocol", protocol, "--roadmap-api", api)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*roadmap_tasks/month1.toml*alpha*{words}*"])
    assert "Traceback" not in result.stdout.str()
    assert chats(roadmap) == []


def test_token_limit_sends_a_minutes_tokens_at_once_then_holds_the_rest(
    roadmap: Roadmap,
) -> None:
    """400 tokens/min; twelve tasks of 50 tokens (prompt counted as the sandbox counts it,
    completion cut at max_tokens, so the estimate is exact). A server counting tokens per
    sliding minute takes the first eight at once and the ninth a minute later: the run
    sends eight right away, then none for as long as the test watches (the ninth is due
    61.2 s after the first, the minute and its margin)."""
    prompt = "p" * 140  # 35 tokens + 7 of framing = 42 prompt tokens; 8 of completion
    roadmap.tasks(
        "month1", *[task_toml(f"t{n:02d}", prompt=prompt, max_tokens=8) for n in range(12)]
    )
    with roadmap.running(*openai_args(roadmap, "--roadmap-token-rate", "400"), "-n", "3"):
        wait_for(lambda: len(chats(roadmap)) >= 8, timeout=60.0, every=0.1)
        first = min(float(e["arrived"]) for e in chats(roadmap))  # type: ignore[arg-type]
        time.sleep(3.0)
        entries = chats(roadmap)
    assert len(entries) == 8, [e["task"] for e in entries]
    assert sum(e["usage"]["total"] for e in entries) == 400  # type: ignore[index,misc]
    # Sent at once, not spaced out (spaced, the eighth would go 52 s after the first).
    assert max(float(e["arrived"]) for e in entries) - first < 5.0  # type: ignore[arg-type]


@pytest.mark.slow
def test_token_limit_gives_back_what_answers_did_not_use(roadmap: Roadmap) -> None:
    """Without max_tokens a request reserves its 42 prompt tokens and the largest completion
    seen so far: 256 before the first answer, 165 after (the sandbox's answer to these
    prompts), so eight requests reserve at least 298 + 7 * 207 = 1,747 tokens. They use
    8 * 207 = 1,656: at 1,700 tokens/min the run goes in its first minute only if the first
    request's 91 unused tokens are given back at its answer."""
    prompt = "p" * 140
    roadmap.tasks("month1", *[task_toml(f"t{n:02d}", prompt=prompt) for n in range(8)])
    started = time.monotonic()
    result = roadmap.run(*openai_args(roadmap, "--roadmap-token-rate", "1700"), "-n", "3")
    result.assert_outcomes(passed=8)
    entries = chats(roadmap)
    assert [e["usage"]["total"] for e in entries] == [207] * 8  # type: ignore[index]
    assert max_tokens_in_window(entries, 60.0) <= 1700
    # Held back until the first reservation left the minute, it would take over 60 s.
    assert time.monotonic() - started < 45.0


def test_sandbox_token_limit_says_where_the_budget_stands(roadmap: Roadmap) -> None:
    import requests

    roadmap.sandbox.configure(token_limit=60)
    body = {"model": "m", "messages": [{"role": "user", "content": "p" * 140}], "max_tokens": 8}
    url = roadmap.sandbox.url + OPENAI_CHAT
    first = requests.post(url, json=body, timeout=10)
    assert first.status_code == 200 and first.json()["usage"]["total_tokens"] == 50
    assert first.headers["x-ratelimit-limit-tokens"] == "60"
    assert first.headers["x-ratelimit-remaining-tokens"] == "10"
    second = requests.post(url, json=body, timeout=10)  # admitted: 50 < 60 before it
    assert second.headers["x-ratelimit-remaining-tokens"] == "0"
    third = requests.post(url, json=body, timeout=10)
    assert third.status_code == 429 and int(third.headers["Retry-After"]) >= 59
    assert third.json()["error"]["type"] == "rate_limit_exceeded"
    assert [e["usage"] is not None for e in chats(roadmap)] == [True, True, False]


def test_an_api_url_without_v1_fails_at_once_saying_which_url_was_meant(roadmap: Roadmap) -> None:
    # The most common slip with the OpenAI protocol: the base URL without /v1, so the health
    # probe meets a 404. No wait mends that: the tasks fail at once, naming the URL meant.
    roadmap.tasks("month1", task_toml("alpha"), task_toml("beta"))
    started = time.monotonic()
    result = roadmap.run("--roadmap-protocol", "openai", "--roadmap-api", roadmap.sandbox.url)
    assert time.monotonic() - started < 30  # the health wait is 60 s: it was not waited out
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            f"*API not usable as configured: GET {roadmap.sandbox.url}/models -> 404: the openai "
            f"protocol's paths are below /v1: did you mean --roadmap-api {roadmap.sandbox.url}/v1"
            " (env BEAST_MODE_API)?"
        ]
    )
    assert not chats(roadmap)
    assert "rerun" not in result.stdout.str().splitlines()[-1]


class _Refusing(BaseHTTPRequestHandler):
    """An API that refuses every request's credentials, and remembers what it was asked."""

    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(f"GET {self.path}")
        body = json.dumps({"error": {"message": "Incorrect API key provided"}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_refused_credentials_fail_at_once_naming_the_token_setting(
    roadmap: Roadmap, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    _Refusing.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        api = f"http://127.0.0.1:{server.server_address[1]}/v1"
        roadmap.tasks("month1", *(task_toml(f"t{i}") for i in range(4)))
        started = time.monotonic()
        result = roadmap.run("--roadmap-protocol", "openai", "--roadmap-api", api, "-n", "2")
        assert time.monotonic() - started < 30
    finally:
        server.shutdown()
        server.server_close()
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines(
        [
            f"*API not usable as configured: GET {api}/models -> 401: the API refused the "
            "credentials (check BEAST_MODE_TOKEN or OPENAI_API_KEY)*"
        ]
    )
    assert KEY not in result.stdout.str() + result.stderr.str()
    # One probe judged it for every worker (the second worker may have probed before the
    # first answer was shared); no task request was sent.
    assert 1 <= len(_Refusing.seen) <= 2 and all(s == "GET /v1/models" for s in _Refusing.seen)
