"""The sandbox API server, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from pytest_roadmap.errors import SettingError
from pytest_roadmap.sandbox import (
    CHAT_PATH,
    HEALTH_PATH,
    Rule,
    SandboxConfig,
    SandboxServer,
    achieved_rate,
    configure_remote,
    fetch_log,
    go_duration,
    main,
    max_in_flight,
    max_in_window,
    reset_remote,
)
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
TOKEN = "s3cr3t-token-do-not-leak-1234"


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer() as server:
        yield server


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False
        yield session


def chat(
    http: requests.Session, server: SandboxServer, message: str, **kwargs: Any
) -> requests.Response:
    body = {"message": message, "model": "beast-1", "useLLM": True}
    kwargs.setdefault("timeout", 10)
    return http.post(server.url + CHAT_PATH, json=body, **kwargs)


def in_background(target: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    """Run a blocking request in a thread, keeping whatever it raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


# --------------------------------------------------------------------------- API


def test_health_is_ok(sandbox: SandboxServer, http: requests.Session) -> None:
    response = http.get(sandbox.url + HEALTH_PATH, timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "inFlight": 0}


def test_chat_answers_code_derived_from_the_prompt(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    first = chat(http, sandbox, "Write a JSON parser, please")
    second = chat(http, sandbox, "Write a JSON parser, please")
    assert first.status_code == 200
    answer = first.json()
    assert isinstance(answer["code"], str)
    assert "def solve_write_a_json_parser()" in answer["code"]
    assert "beast-1" in answer["message"]
    assert second.json() == answer
    compile(answer["code"], "<answer>", "exec")  # the snippet is real Python


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'{"model": "m"}', b'{"message": 5}', b""],
    ids=["not-json", "not-object", "no-message", "message-not-string", "empty"],
)
def test_chat_rejects_a_bad_body(
    sandbox: SandboxServer, http: requests.Session, body: bytes
) -> None:
    response = http.post(sandbox.url + CHAT_PATH, data=body, timeout=10)
    assert response.status_code == 400
    assert "message" in response.json()["error"]
    assert sandbox.log()[-1]["status"] == 400


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/nothing", 404),
        ("GET", "/elsewhere", 404),
        ("GET", CHAT_PATH, 405),
        ("POST", HEALTH_PATH, 405),
    ],
)
def test_unknown_paths_and_methods_answer_json(
    sandbox: SandboxServer, http: requests.Session, method: str, path: str, status: int
) -> None:
    response = http.request(method, sandbox.url + path, timeout=10)
    assert response.status_code == status
    assert "error" in response.json()


def test_latency_delays_chat_answers(sandbox: SandboxServer, http: requests.Session) -> None:
    sandbox.configure(latency=0.2)
    started = time.monotonic()
    assert chat(http, sandbox, "hello").status_code == 200
    assert time.monotonic() - started >= 0.2
    [entry] = sandbox.log()
    assert entry["answered"] - entry["arrived"] >= 0.2


def test_capacity_turns_away_requests_beyond_it(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    sandbox.configure(capacity=1, rules=[Rule(match="slow", hang=True)])
    thread, errors = in_background(lambda: chat(requests.Session(), sandbox, "slow one"))
    wait_for(lambda: any(e["message"] == "slow one" for e in sandbox.log()), every=0.01)

    response = chat(http, sandbox, "fast one")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert http.get(sandbox.url + HEALTH_PATH, timeout=10).json()["inFlight"] == 1
    assert [(e["message"], e["in_flight"]) for e in sandbox.log() if e["path"] == CHAT_PATH] == [
        ("slow one", 1),
        ("fast one", 2),
    ]

    sandbox.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert errors and isinstance(errors[0], requests.ConnectionError)


def test_capacity_slot_is_free_once_the_answer_arrives(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    sandbox.configure(capacity=1)
    statuses = {chat(http, sandbox, f"task {i}").status_code for i in range(30)}
    assert statuses == {200}
    assert all(e["answered"] is not None for e in sandbox.log())


def test_rate_limit_answers_429_with_retry_after(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    sandbox.configure(rate_limit=2)
    statuses = [http.get(sandbox.url + HEALTH_PATH, timeout=10) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert statuses[2].headers["Retry-After"] == "1"
    # Control requests are neither limited nor logged.
    assert http.get(sandbox.url + "/_sandbox/log", timeout=10).status_code == 200
    assert [e["status"] for e in sandbox.log()] == [200, 200, 429]


def test_rate_limit_spacing_refuses_as_nginx_limit_req_does(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    """No burst: a request sooner than 1/rate after the last admitted one is refused (the
    sliding window would admit two at once at 2/s), with nginx's 503 and no Retry-After."""
    sandbox.configure(
        rate_limit=2, rate_limit_spacing=True, rate_limit_status=503, rate_limit_retry_after=False
    )
    refusals: list[requests.Response] = []
    deadline = time.monotonic() + 30  # safety net: three admissions take about 1 s
    while sum(e["status"] == 200 for e in sandbox.log()) < 3:
        assert time.monotonic() < deadline
        response = http.get(sandbox.url + HEALTH_PATH, timeout=10)
        if response.status_code != 200:
            refusals.append(response)
    assert refusals and {r.status_code for r in refusals} == {503}
    assert all("Retry-After" not in r.headers for r in refusals)
    admitted = [e["arrived"] for e in sandbox.log() if e["status"] == 200]
    assert all(later - first >= 0.5 - 0.01 for first, later in itertools.pairwise(admitted))


def test_failure_rate_is_seeded_and_replays_after_reset(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    sandbox.configure(failure_rate=0.5, seed=7)
    draws = random.Random(7)
    expected = [500 if draws.random() < 0.5 else 200 for _ in range(20)]
    assert 200 in expected and 500 in expected

    first = [chat(http, sandbox, f"task {i}").status_code for i in range(20)]
    sandbox.reset()
    again = [chat(http, sandbox, f"task {i}").status_code for i in range(20)]
    assert first == expected
    assert again == expected


def test_down_answers_503_everywhere_and_comes_back(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    sandbox.configure(down=True)
    health = http.get(sandbox.url + HEALTH_PATH, timeout=10)
    assert (health.status_code, health.json()) == (503, {"status": "down"})
    assert chat(http, sandbox, "hi").status_code == 503
    assert http.get(sandbox.url + "/api/other", timeout=10).status_code == 503
    # Control never goes down, so a test can bring the server back.
    configured = http.post(sandbox.url + "/_sandbox/config", json={"down": False}, timeout=10)
    assert configured.status_code == 200
    assert configured.json()["down"] is False
    assert chat(http, sandbox, "hi").status_code == 200


# --------------------------------------------------------------------------- rules


def test_rule_applies_the_given_number_of_times(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    sandbox.configure(rules=[Rule(match="flaky", status=500, times=2)])
    statuses = [chat(http, sandbox, m).status_code for m in ["flaky", "other", "flaky", "flaky"]]
    assert statuses == [500, 200, 500, 200]
    sandbox.reset()  # rule counters start again
    assert chat(http, sandbox, "flaky").status_code == 500


def test_rule_with_empty_match_applies_to_all(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    sandbox.configure(rules=[Rule(status=502)])
    assert chat(http, sandbox, "anything").status_code == 502


def test_rule_sends_retry_after(sandbox: SandboxServer, http: requests.Session) -> None:
    sandbox.configure(rules=[Rule(match="busy", status=429, retry_after=3)])
    response = chat(http, sandbox, "busy now")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"


def test_rule_sends_a_raw_body(sandbox: SandboxServer, http: requests.Session) -> None:
    sandbox.configure(rules=[Rule(match="raw", body="not json")])
    response = chat(http, sandbox, "raw please")
    assert response.status_code == 200
    assert response.text == "not json"
    with pytest.raises(ValueError):
        response.json()


def test_rule_delays_the_answer(sandbox: SandboxServer, http: requests.Session) -> None:
    sandbox.configure(rules=[Rule(match="slow", delay=0.2)])
    started = time.monotonic()
    response = chat(http, sandbox, "slow please")
    assert response.status_code == 200
    assert "code" in response.json()
    assert time.monotonic() - started >= 0.2


def test_rule_hangs_until_the_server_stops(sandbox: SandboxServer, http: requests.Session) -> None:
    sandbox.configure(rules=[Rule(match="hang", hang=True)])
    with pytest.raises(requests.exceptions.ReadTimeout):
        chat(http, sandbox, "hang here", timeout=0.3)
    [entry] = sandbox.log()
    assert entry["answered"] is None and entry["status"] is None

    started = time.monotonic()
    sandbox.stop()
    assert time.monotonic() - started < 2.0


def test_rule_closes_the_connection_mid_answer(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    sandbox.configure(rules=[Rule(match="cut", close=True, times=1)])
    with pytest.raises(requests.exceptions.RequestException):
        chat(http, sandbox, "cut me off")
    assert chat(http, sandbox, "cut again").status_code == 200
    assert [(e["status"], e["answered"] is None) for e in sandbox.log()] == [
        (200, True),
        (200, False),
    ]


def test_rule_redirects_and_the_log_records_each_hop(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    other = sandbox.url.replace("127.0.0.1", "localhost") + CHAT_PATH
    sandbox.configure(
        rules=[
            Rule(match="hop", status=307, redirect=CHAT_PATH, times=2),
            Rule(match="hop", status=308, redirect=other, times=1),
        ]
    )
    response = chat(http, sandbox, "hop along")
    assert response.status_code == 200 and len(response.history) == 3
    assert response.history[0].headers["Location"] == CHAT_PATH
    log = sandbox.log()
    assert [(e["status"], e["host"].split(":")[0]) for e in log] == [
        (307, "127.0.0.1"),
        (307, "127.0.0.1"),
        (308, "127.0.0.1"),
        (200, "localhost"),
    ]
    assert all(e["message"] == "hop along" for e in log)


def test_rule_pads_and_gzips_an_answer(sandbox: SandboxServer, http: requests.Session) -> None:
    sandbox.configure(rules=[Rule(match="bomb", size=3_000_000, gzip=True)])
    response = chat(http, sandbox, "bomb", stream=True)
    assert response.headers["Content-Encoding"] == "gzip"
    assert int(response.headers["Content-Length"]) < 100_000  # small on the wire
    answer = json.loads(b"".join(response.iter_content(1 << 16)))
    assert answer["code"] == "#" * 3_000_000


def test_rule_trickles_the_answer(sandbox: SandboxServer, http: requests.Session) -> None:
    sandbox.configure(rules=[Rule(match="drip", body="0123456789", trickle=0.05)])
    started = time.monotonic()
    response = chat(http, sandbox, "drip")
    assert response.text == "0123456789"
    assert time.monotonic() - started >= 0.5


def test_rule_trickles_the_head_too(sandbox: SandboxServer) -> None:
    sandbox.configure(rules=[Rule(match="drip", body="{}", trickle=0.01, trickle_head=True)])
    body = json.dumps({"message": "drip"}).encode()
    with socket.create_connection((sandbox.host, sandbox.port), timeout=10) as conn:
        conn.sendall(
            b"POST /api/codebase/chat HTTP/1.1\r\nHost: x\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        first = conn.recv(100)
    assert first == b"H"  # one byte at a time, from the status line on


def test_rule_echoes_the_authorization_header(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    sandbox.configure(rules=[Rule(match="echo", echo_auth=True)])
    answer = chat(http, sandbox, "echo", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert TOKEN in answer["code"] and TOKEN in answer["message"]
    assert TOKEN not in json.dumps(sandbox.log())  # the log still holds only a digest


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"status": 307}, "redirect needs a status"),
        ({"redirect": "/x"}, "redirect needs a status"),
        ({"status": 302, "redirect": "/x\n"}, "redirect must be"),
        ({"size": -1}, "size"),
        ({"size": 1 << 40}, "size"),
        ({"trickle": 120}, "trickle"),
        ({"trickle_head": True}, "trickle_head"),
        ({"gzip": "yes"}, "gzip"),
        ({"echo_auth": 1}, "echo_auth"),
        ({"gzip": True, "hang": True}, "cannot trickle or gzip"),
    ],
)
def test_hostile_rule_fields_are_checked(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(SettingError, match=words):
        Rule(**fields)


def test_stop_is_prompt_with_a_keep_alive_connection_and_a_long_latency(
    http: requests.Session,
) -> None:
    server = SandboxServer(SandboxConfig(latency=30)).start()
    assert http.get(server.url + HEALTH_PATH, timeout=10).status_code == 200  # idle keep-alive
    thread, errors = in_background(lambda: chat(requests.Session(), server, "slow"))
    wait_for(lambda: len(server.log()) == 2, every=0.01)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2.0
    thread.join(10)
    assert errors


# --------------------------------------------------------------------------- pacing


def chat_entries(server: SandboxServer) -> list[dict[str, Any]]:
    return [e for e in server.log() if e["path"] == CHAT_PATH]


def test_capacity_schedule_overrides_capacity_and_is_logged(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    sandbox.configure(capacity=5, capacity_schedule=[[0, 0], [3600, 5]])
    assert chat(http, sandbox, "first").status_code == 503
    assert http.get(sandbox.url + HEALTH_PATH, timeout=10).status_code == 200
    # Before the first step, `capacity` holds.
    sandbox.configure(capacity=None, capacity_schedule=[[3600, 0]])
    assert chat(http, sandbox, "second").status_code == 200
    sandbox.configure(capacity=1, capacity_schedule=None)
    assert chat(http, sandbox, "third").status_code == 200
    assert [(e["path"], e["status"], e["capacity"]) for e in sandbox.log()] == [
        (CHAT_PATH, 503, 0),
        (HEALTH_PATH, 200, None),
        (CHAT_PATH, 200, None),
        (CHAT_PATH, 200, 1),
    ]


def test_capacity_schedule_steps_in_time_and_restarts_on_reset(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    step = 1.5
    before = time.time()
    sandbox.configure(capacity_schedule=[[0, 0], [step, 1]])
    assert chat(http, sandbox, "early").status_code == 503

    def admitted() -> bool:
        return chat(http, sandbox, "polling").status_code == 200

    wait_for(admitted, timeout=step + 10, every=0.01)
    entries = chat_entries(sandbox)
    assert [(e["status"], e["capacity"]) for e in entries] == [(503, 0)] * (len(entries) - 1) + [
        (200, 1)
    ]
    # The step came no earlier than its time after the config was applied.
    assert entries[-1]["arrived"] - before >= step - 0.01

    sandbox.reset()  # counts from the reset again: capacity 0 for another `step` seconds
    response = chat(http, sandbox, "after reset")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert [(e["status"], e["capacity"]) for e in chat_entries(sandbox)] == [(503, 0)]


def test_capacity_without_retry_after(sandbox: SandboxServer, http: requests.Session) -> None:
    sandbox.configure(capacity=0, capacity_retry_after=False)
    response = chat(http, sandbox, "no room")
    assert response.status_code == 503
    assert "Retry-After" not in response.headers
    assert response.json() == {"error": "over capacity"}


def test_rate_limit_without_retry_after_sends_no_headers(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    sandbox.configure(rate_limit=1, rate_limit_retry_after=False)
    first = http.get(sandbox.url + HEALTH_PATH, timeout=10)
    second = http.get(sandbox.url + HEALTH_PATH, timeout=10)
    assert (first.status_code, second.status_code) == (200, 429)
    for response in (first, second):
        assert not [n for n in response.headers if "ratelimit" in n.lower() or n == "Retry-After"]
    assert [e["status"] for e in sandbox.log()] == [200, 429]


def duration_seconds(text: str) -> float:
    """A Go duration as OpenAI sends it (1s, 250ms, 6m0s, 1h0m0s) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, text
    return sum(float(number) * units[unit] for number, unit in parts)


def read_rate_headers(family: str, headers: Any) -> tuple[int, int, float]:
    """(limit, remaining, reset seconds) from one answer's headers of `family`."""
    if family == "ratelimit":
        return (
            int(headers["RateLimit-Limit"]),
            int(headers["RateLimit-Remaining"]),
            float(headers["RateLimit-Reset"]),
        )
    if family == "ratelimit-policy":
        policy = re.fullmatch(r'"default";q=(\d+);w=(\d+)', headers["RateLimit-Policy"])
        current = re.fullmatch(r'"default";r=(\d+);t=(\d+)', headers["RateLimit"])
        assert policy and current, (headers["RateLimit-Policy"], headers["RateLimit"])
        assert policy[2] == "1"  # the window: one second
        return int(policy[1]), int(current[1]), float(current[2])
    return (
        int(headers["x-ratelimit-limit-requests"]),
        int(headers["x-ratelimit-remaining-requests"]),
        duration_seconds(headers["x-ratelimit-reset-requests"]),
    )


@pytest.mark.parametrize("family", ["ratelimit", "ratelimit-policy", "x-ratelimit"])
def test_rate_limit_headers_on_every_api_answer(
    sandbox: SandboxServer, http: requests.Session, family: str
) -> None:
    sandbox.configure(rate_limit=3.7, rate_limit_headers=family, capacity=0)
    answers = [
        http.get(sandbox.url + HEALTH_PATH, timeout=10),
        chat(http, sandbox, "over capacity"),
        http.get(sandbox.url + HEALTH_PATH, timeout=10),
        chat(http, sandbox, "over the rate"),
    ]
    assert [e["status"] for e in sandbox.log()] == [200, 503, 200, 429]
    assert [a.status_code for a in answers] == [200, 503, 200, 429]
    seen = [read_rate_headers(family, a.headers) for a in answers]
    assert [(limit, remaining) for limit, remaining, _ in seen] == [(3, 2), (3, 1), (3, 0), (3, 0)]
    for _, _, reset in seen:
        assert 0 < reset <= 1.0
    if family != "x-ratelimit":  # whole seconds, at least 1
        assert {reset for _, _, reset in seen} == {1.0}
    # The refusal's reset names the same moment as its Retry-After.
    assert answers[3].headers["Retry-After"] == "1"


def test_rate_limit_headers_only_while_the_rate_limit_is_on(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    sandbox.configure(rate_limit_headers="ratelimit")
    response = http.get(sandbox.url + HEALTH_PATH, timeout=10)
    assert response.status_code == 200
    assert not [name for name in response.headers if "ratelimit" in name.lower()]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "1ms"),
        (0.25, "250ms"),
        (0.9991, "1s"),
        (1.0, "1s"),
        (1.5, "1.5s"),
        (17.25, "17.25s"),
        (360.0, "6m0s"),
        (3600.0, "1h0m0s"),
        (3725.5, "1h2m5.5s"),
    ],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text
    assert duration_seconds(text) == pytest.approx(max(seconds, 0.001), abs=0.001)


def test_quota_ends_with_429_and_retry_after_everywhere(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    sandbox.configure(quota=2, rules=[Rule(match="fail", status=500)])
    statuses = [chat(http, sandbox, m).status_code for m in ["fail", "one", "two"]]
    assert statuses == [500, 200, 200]  # only answers 2xx count
    refused = [chat(http, sandbox, "three"), http.get(sandbox.url + HEALTH_PATH, timeout=10)]
    for response in refused:
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "3600"
        assert response.json() == {"error": "quota exhausted"}
    assert [e["status"] for e in sandbox.log()] == [500, 200, 200, 429, 429]

    sandbox.configure(quota_retry_after=7)
    assert chat(http, sandbox, "four").headers["Retry-After"] == "7"
    sandbox.reset()  # the count starts again
    assert chat(http, sandbox, "five").status_code == 200
    assert [e["status"] for e in sandbox.log()] == [200]


def test_quota_holds_for_requests_in_flight_together(sandbox: SandboxServer) -> None:
    sandbox.configure(quota=2, latency=0.3)
    results: list[int] = []
    lock = threading.Lock()

    def one(index: int) -> None:
        status = chat(requests.Session(), sandbox, f"task {index}").status_code
        with lock:
            results.append(status)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert sorted(results) == [200, 200, 429, 429, 429, 429]
    assert sorted(e["status"] for e in sandbox.log()) == [200, 200, 429, 429, 429, 429]


def test_quota_is_not_used_by_an_answer_that_never_went_out(sandbox: SandboxServer) -> None:
    sandbox.configure(quota=1, latency=0.3)
    body = json.dumps({"message": "gone", "model": "m"}).encode()
    head = (
        f"POST {CHAT_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((sandbox.host, sandbox.port), timeout=10) as client:
        client.sendall(head + body)
        wait_for(lambda: len(sandbox.log()) == 1, every=0.01)
        # Reset, not a polite close: the server's write then fails for certain.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    wait_for(lambda: sandbox.log()[0]["status"] is not None, every=0.01)
    assert sandbox.log()[0]["answered"] is None

    sandbox.configure(latency=0.0)
    with requests.Session() as http:
        assert [chat(http, sandbox, m).status_code for m in ["a", "b"]] == [200, 429]


def test_quota_with_rate_limit_headers_agrees_with_retry_after(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    sandbox.configure(quota=0, rate_limit=50, rate_limit_headers="x-ratelimit")
    response = http.get(sandbox.url + HEALTH_PATH, timeout=10)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3600"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.headers["x-ratelimit-reset-requests"] == "1h0m0s"


def test_remote_restore_turns_every_knob_off(sandbox_process: Any) -> None:
    remote = sandbox_process.fresh()
    configure_remote(
        remote.url,
        latency=0.5,
        capacity=1,
        rate_limit=3,
        failure_rate=0.5,
        seed=4,
        down=True,
        rules=[Rule(status=500)],
        capacity_schedule=[[0, 2]],
        capacity_retry_after=False,
        rate_limit_retry_after=False,
        rate_limit_headers="ratelimit",
        quota=5,
        quota_retry_after=9,
    )
    remote.restore()
    with requests.get(remote.url + "/_sandbox/config", timeout=10) as response:
        assert response.json() == SandboxConfig().to_dict()


# --------------------------------------------------------------------------- log


def test_log_records_each_request_without_the_token(http: requests.Session, tmp_path: Path) -> None:
    log_file = tmp_path / "sandbox.jsonl"
    headers = {
        "Authorization": f"Bearer {TOKEN}",
        "X-Roadmap-Worker": "gw1",
        "X-Roadmap-Task": "tasks/parser.md::parser",
        "X-Roadmap-Attempt": "2",
        "X-Roadmap-Run": "run-42",
    }
    long_message = "Implement " + "x" * 200
    with SandboxServer(log_path=log_file) as server:
        assert chat(http, server, long_message, headers=headers).status_code == 200
        assert http.get(server.url + HEALTH_PATH, timeout=10).status_code == 200
        entries = server.log()
        remote_text = http.get(server.url + "/_sandbox/log", timeout=10).text

    chat_entry, health_entry = entries
    assert chat_entry["seq"] == 1 and health_entry["seq"] == 2
    assert chat_entry["method"] == "POST" and chat_entry["path"] == CHAT_PATH
    assert chat_entry["status"] == 200 and chat_entry["in_flight"] == 1
    assert chat_entry["arrived"] <= chat_entry["answered"] <= time.time()
    assert chat_entry["message"] == long_message[:80]
    assert chat_entry["model"] == "beast-1"
    assert chat_entry["auth"] == hashlib.sha256(f"Bearer {TOKEN}".encode()).hexdigest()
    assert (chat_entry["worker"], chat_entry["task"], chat_entry["attempt"], chat_entry["run"]) == (
        "gw1",
        "tasks/parser.md::parser",
        "2",
        "run-42",
    )
    assert health_entry["in_flight"] == 0
    for key in ("message", "model", "auth", "worker", "task", "attempt", "run"):
        assert health_entry[key] is None

    file_text = log_file.read_text()
    assert sorted(json.loads(line)["seq"] for line in file_text.splitlines()) == [1, 2]
    for text in (file_text, remote_text, json.dumps(entries)):
        assert TOKEN not in text


def test_log_returns_a_copy(sandbox: SandboxServer, http: requests.Session) -> None:
    http.get(sandbox.url + HEALTH_PATH, timeout=10)
    sandbox.log()[0]["status"] = 999
    assert sandbox.log()[0]["status"] == 200


# --------------------------------------------------------------------------- control


def test_control_config_changes_settings_and_rules(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    changes = {"latency": 0, "rules": [{"match": "x", "status": 500, "times": 1}]}
    response = http.post(sandbox.url + "/_sandbox/config", json=changes, timeout=10)
    assert response.status_code == 200
    assert response.json()["rules"][0]["status"] == 500
    assert sandbox.config.rules == (Rule(match="x", status=500, times=1),)
    assert http.get(sandbox.url + "/_sandbox/config", timeout=10).json() == response.json()
    assert chat(http, sandbox, "x").status_code == 500


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"latency": -1}', "latency"),
        (b'{"failure_rate": 2}', "failure_rate"),
        (b'{"capacity": "many"}', "capacity"),
        (b'{"bogus": 1}', "bogus"),
        (b'{"rules": [{"nope": 1}]}', "nope"),
        (b'{"rules": [{"hang": true, "close": true}]}', "both"),
        (b'{"capacity_schedule": "0:1"}', "capacity_schedule"),
        (b'{"capacity_schedule": [[0]]}', "capacity_schedule"),
        (b'{"capacity_schedule": [[0, -1]]}', "capacity_schedule"),
        (b'{"capacity_schedule": [[0, 1.5]]}', "capacity_schedule"),
        (b'{"capacity_schedule": [[-1, 1]]}', "capacity_schedule"),
        (b'{"capacity_schedule": [[2, 1], [1, 2]]}', "step [1, 2] after [2, 1]"),
        (b'{"capacity_schedule": [[0, true]]}', "capacity_schedule"),
        (b'{"capacity_retry_after": "no"}', "capacity_retry_after"),
        (b'{"rate_limit_retry_after": 0}', "rate_limit_retry_after"),
        (b'{"rate_limit_headers": "github"}', "'x-ratelimit'"),
        (b'{"rate_limit_headers": null}', "rate_limit_headers"),
        (b'{"quota": -1}', "quota"),
        (b'{"rpm": 0}', "rpm"),
        (b'{"rpm_window": 0}', "rpm_window"),
        (b'{"rpm_queue": "yes"}', "rpm_queue"),
        (b'{"gateway_headers": 1}', "gateway_headers"),
        (b'{"quota": 2.5}', "quota"),
        (b'{"quota_retry_after": 1.5}', "quota_retry_after"),
        (b'{"quota_retry_after": null}', "quota_retry_after"),
        (b"[]", "JSON object"),
        (b"nonsense", "JSON object"),
    ],
)
def test_control_config_rejects_bad_settings(
    sandbox: SandboxServer, http: requests.Session, body: bytes, words: str
) -> None:
    response = http.post(sandbox.url + "/_sandbox/config", data=body, timeout=10)
    assert response.status_code == 400
    assert words in response.json()["error"]
    assert sandbox.config == SandboxConfig()


def test_control_is_not_logged_limited_or_down(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    sandbox.configure(rate_limit=1, down=True)
    for _ in range(3):
        assert http.get(sandbox.url + "/_sandbox/log", timeout=10).json() == []
    assert http.post(sandbox.url + "/_sandbox/reset", timeout=10).json() == {"status": "reset"}
    assert http.get(sandbox.url + "/_sandbox/nothing", timeout=10).status_code == 404
    assert sandbox.log() == []


def test_reset_clears_the_log(sandbox: SandboxServer, http: requests.Session) -> None:
    http.get(sandbox.url + HEALTH_PATH, timeout=10)
    assert len(sandbox.log()) == 1
    assert http.post(sandbox.url + "/_sandbox/reset", timeout=10).status_code == 200
    assert sandbox.log() == []
    http.get(sandbox.url + HEALTH_PATH, timeout=10)
    assert sandbox.log()[0]["seq"] == 1


def test_remote_helpers(sandbox: SandboxServer, http: requests.Session) -> None:
    config = configure_remote(sandbox.url, rules=[Rule(match="r", status=503)], latency=0.01)
    assert config["latency"] == 0.01 and config["rules"][0]["status"] == 503
    assert chat(http, sandbox, "r").status_code == 503
    assert [e["status"] for e in fetch_log(sandbox.url)] == [503]
    reset_remote(sandbox.url)
    assert fetch_log(sandbox.url) == []
    with pytest.raises(SettingError, match="latency"):
        configure_remote(sandbox.url, latency=-1)


def test_configure_rejects_bad_values(sandbox: SandboxServer) -> None:
    with pytest.raises(SettingError, match="unknown sandbox setting 'speed'"):
        sandbox.configure(speed=3)
    with pytest.raises(SettingError, match="rate_limit"):
        sandbox.configure(rate_limit=0)
    with pytest.raises(SettingError, match="status"):
        Rule(status=99)
    with pytest.raises(SettingError, match="rate_limit_status must be 429 or 503, got 500"):
        sandbox.configure(rate_limit=1, rate_limit_status=500)


def test_url_needs_start() -> None:
    with pytest.raises(RuntimeError, match="start"):
        _ = SandboxServer().url


# --------------------------------------------------------------------------- analysis


def entry(arrived: float, answered: float | None = None, path: str = CHAT_PATH) -> dict[str, Any]:
    return {"arrived": arrived, "answered": answered, "path": path}


def test_max_in_window_uses_half_open_windows() -> None:
    entries = [entry(t) for t in (0.0, 0.2, 0.4, 1.0, 1.1, 1.2, 1.3)]
    assert max_in_window(entries) == 5  # [0.4, 1.4)
    assert max_in_window([entry(0.0), entry(0.5), entry(1.0)]) == 2
    assert max_in_window([entry(0.0), entry(0.5), entry(1.0)], window=1.001) == 3
    assert max_in_window([]) == 0


def test_max_in_window_filters_by_path() -> None:
    entries = [entry(0.0), entry(0.1, path=HEALTH_PATH), entry(0.2)]
    assert max_in_window(entries) == 3
    assert max_in_window(entries, path=CHAT_PATH) == 2


def test_max_in_flight_from_intervals() -> None:
    # The first answer and the third arrival share an instant: not concurrent.
    entries = [entry(0.0, 1.0), entry(0.5, 2.0), entry(1.0, 3.0), entry(0.6, 0.7, HEALTH_PATH)]
    assert max_in_flight(entries) == 2
    assert max_in_flight(entries, path=None) == 3
    assert max_in_flight([entry(0.0), entry(5.0, 6.0)]) == 2  # unanswered never ends
    assert max_in_flight([]) == 0


def test_achieved_rate() -> None:
    assert achieved_rate([entry(t) for t in (0.0, 0.5, 1.0, 1.5, 2.0)]) == 2.0
    assert achieved_rate([entry(0.0), entry(1.0, path=HEALTH_PATH)], path=CHAT_PATH) == 0.0
    assert achieved_rate([entry(3.0), entry(3.0)]) == math.inf


def test_analysis_of_a_real_run(sandbox: SandboxServer, http: requests.Session) -> None:
    for i in range(5):
        chat(http, sandbox, f"task {i}")
    entries = sandbox.log()
    assert max_in_flight(entries) == 1  # one session, one request at a time
    assert max_in_window(entries, window=60) == 5
    assert achieved_rate(entries) > 0


# --------------------------------------------------------------------------- CLI


def start_cli(*args: str) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "pytest_roadmap.sandbox", "--port", "0", *args]
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    if not ready:
        proc.kill()
        pytest.fail("roadmap-sandbox printed nothing within 15 s")
    return proc, proc.stdout.readline()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_console_script_serves_until_signalled(
    http: requests.Session, tmp_path: Path, signum: signal.Signals
) -> None:
    log_file = tmp_path / "log.jsonl"
    proc, banner = start_cli("--latency-ms", "5", "--log", str(log_file))
    try:
        assert banner.startswith("roadmap-sandbox listening on http://127.0.0.1:")
        url = banner.split()[-1]
        assert http.get(url + HEALTH_PATH, timeout=10).json()["status"] == "ok"
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert "Traceback" not in stderr
    assert json.loads(log_file.read_text())["path"] == HEALTH_PATH


def test_console_script_rejects_a_bad_flag() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "pytest_roadmap.sandbox", "--latency-ms", "-5"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=15)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "roadmap-sandbox: error: argument --latency-ms: must be milliseconds >= 0, got '-5'"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--port", "abc"],
        ["--port", "70000"],
        ["--capacity", "-1"],
        ["--rate-limit", "0"],
        ["--failure-rate", "1.5"],
        ["--seed", "x"],
        ["--capacity-schedule", "2:1,1:2"],
        ["--capacity-schedule", "0:-1"],
        ["--capacity-schedule", "0"],
        ["--rate-limit-headers", "github"],
        ["--quota", "-1"],
        ["--quota-retry-after", "1.5"],
        ["--bogus"],
    ],
)
def test_main_rejects_bad_values(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("roadmap-sandbox: error:")


def test_console_script_sets_the_pacing_knobs(http: requests.Session) -> None:
    proc, banner = start_cli(
        "--capacity-schedule",
        "0:4,2.5:1,9:4",
        "--no-capacity-retry-after",
        "--rate-limit",
        "5",
        "--no-rate-limit-retry-after",
        "--rate-limit-headers",
        "ratelimit-policy",
        "--rate-limit-spacing",
        "--rate-limit-status",
        "503",
        "--quota",
        "10",
        "--quota-retry-after",
        "60",
    )
    try:
        url = banner.split()[-1]
        config = http.get(url + "/_sandbox/config", timeout=10).json()
        health = http.get(url + HEALTH_PATH, timeout=10)
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
    assert config["capacity_schedule"] == [[0.0, 4], [2.5, 1], [9.0, 4]]
    assert config["capacity_retry_after"] is False
    assert config["rate_limit_retry_after"] is False
    assert (config["rate_limit_spacing"], config["rate_limit_status"]) == (True, 503)
    assert (config["rate_limit_headers"], config["quota"], config["quota_retry_after"]) == (
        "ratelimit-policy",
        10,
        60,
    )
    assert health.headers["RateLimit-Policy"] == '"default";q=5;w=1'


def test_main_reports_a_taken_port(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--port", str(port)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"roadmap-sandbox: cannot serve on 127.0.0.1:{port}: Address already in use"
    )


def test_rpm_counts_chat_requests_per_fixed_window_as_a_gateway_says_it(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    # An hour's window: the test never straddles its turn.
    sandbox.configure(rpm=2, rpm_window=3600.0, gateway_headers=True)
    health = http.get(sandbox.url + HEALTH_PATH, timeout=10)
    answers = [chat(http, sandbox, f"task {i}") for i in range(3)]
    assert health.status_code == 200  # a gateway does not count GET /models
    assert [a.status_code for a in answers] == [200, 200, 429]
    said = [
        (a.headers["x-ratelimit-limit-requests"], a.headers["x-ratelimit-remaining-requests"])
        for a in answers[:2]
    ]
    assert said == [("2", "1"), ("2", "0")]
    refused = answers[2].headers
    assert refused["llm_provider-retry-after"] == "3600" and "Retry-After" not in refused
    for answer in answers:
        assert not [name for name in answer.headers if "reset" in name.lower()]


def test_rpm_without_gateway_headers_says_when_the_window_turns(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    sandbox.configure(rpm=1, rpm_window=3600.0)
    assert chat(http, sandbox, "first").status_code == 200
    refused = chat(http, sandbox, "second")
    assert refused.status_code == 429
    turn = 3600 - time.time() % 3600
    assert abs(int(refused.headers["Retry-After"]) - turn) <= 2
    assert "llm_provider-retry-after" not in refused.headers


def test_rpm_queue_holds_a_request_until_the_next_window(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    sandbox.configure(rpm=1, rpm_window=0.5, rpm_queue=True)
    first, second = (chat(http, sandbox, f"task {i}") for i in range(2))
    assert (first.status_code, second.status_code) == (200, 200)
    entries = chat_entries(sandbox)
    # The second waited for the window after the first's: a gateway that queues.
    assert int(entries[1]["answered"] // 0.5) > int(entries[0]["arrived"] // 0.5)
    assert entries[1]["answered"] - entries[1]["arrived"] <= 0.5 + 0.2


def test_the_suites_reset_turns_every_knob_off() -> None:
    """Each test gets the session's sandbox back with every knob off (RemoteSandbox.OFF): a
    knob missing there leaks one test's misbehaving server into the next."""
    from tests.support.project import RemoteSandbox

    knobs = {f.name for f in dataclasses.fields(SandboxConfig)}
    assert set(RemoteSandbox.OFF) == knobs
    assert SandboxConfig(**RemoteSandbox.OFF) == SandboxConfig()
