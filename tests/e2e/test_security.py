"""The token never leaks, redirects to other hosts lose it, TLS is verified."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme

from tests.support.project import Roadmap, task_toml

TOKEN = "tok-3xq9-DISTINCTIVE-77ab"


@pytest.mark.slow
def test_token_appears_nowhere_on_any_failure_path(
    roadmap: Roadmap, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BEAST_MODE_TOKEN", TOKEN)
    roadmap.tasks(
        "month1",
        task_toml("echo400"),
        task_toml("echo500"),
        task_toml("notjson"),
        task_toml("nocode"),
        task_toml("slow"),
        task_toml("cut"),
        task_toml("fine"),
    )
    roadmap.sandbox.configure(
        rules=[
            {"match": "do echo400", "status": 400, "body": f"bad token {TOKEN}"},
            {"match": "do echo500", "status": 500, "body": f"Bearer {TOKEN} rejected"},
            {"match": "do notjson", "status": 200, "body": f"<p>{TOKEN}</p>"},
            {"match": "do nocode", "status": 200, "body": json.dumps({"x": TOKEN})},
            {"match": "do slow", "delay": 3.0},
            {"match": "do cut", "close": True},
        ]
    )
    result = roadmap.run(
        "-n",
        "2",
        "-rA",
        "-vv",
        "--junitxml",
        "junit.xml",
        "--roadmap-timeout",
        "0.5",
        "--reruns",
        "1",
        "--roadmap-report",
        "out",
    )
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] == 1 and outcomes["failed"] == 6
    text = result.stdout.str() + result.stderr.str()
    assert TOKEN not in text
    assert "***" in text
    for path in roadmap.pytester.path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


class _Redirect(BaseHTTPRequestHandler):
    target = ""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(307)
        self.send_header("Location", self.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def redirector(roadmap: Roadmap) -> Iterator[str]:
    # Another host name for the same sandbox: requests compares host names, not addresses.
    _Redirect.target = roadmap.sandbox.url.replace("127.0.0.1", "localhost")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_redirect_to_another_host_drops_the_token(
    roadmap: Roadmap, redirector: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BEAST_MODE_TOKEN", TOKEN)
    roadmap.tasks("month1", task_toml("moved"))
    # Followed only because the host is allowed (tests/test_hostile_answers.py: otherwise not).
    result = roadmap.run(f"--roadmap-api={redirector}", "--roadmap-redirect-hosts=localhost")
    result.assert_outcomes(passed=1)
    (chat,) = roadmap.chats()
    assert chat["auth"] is None  # the sandbox, on the other host, got no Authorization


@pytest.fixture(scope="module")
def tls_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    folder = tmp_path_factory.mktemp("tls")
    ca_file = folder / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    class Api(_Redirect):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = b'{"code": "print(1)", "message": "done"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", ca_file
    server.shutdown()
    server.server_close()


def test_tls_is_verified(roadmap: Roadmap, tls_api: tuple[str, Path]) -> None:
    url, _ = tls_api
    roadmap.tasks("month1", task_toml("secure"))
    result = roadmap.run(f"--roadmap-api={url}", "--roadmap-health-wait", "0")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["FAILED secure: API unhealthy for 0 s: TLS verification failed*"])


def test_ca_bundle_option_trusts_a_private_ca(roadmap: Roadmap, tls_api: tuple[str, Path]) -> None:
    url, ca_file = tls_api
    roadmap.tasks("month1", task_toml("secure"))
    result = roadmap.run(f"--roadmap-api={url}", f"--roadmap-ca-bundle={ca_file}")
    result.assert_outcomes(passed=1)
