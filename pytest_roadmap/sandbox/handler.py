"""The sandbox over HTTP: the listening server and the handler of one connection."""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import socketserver
import sys
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import urlsplit

from pytest_roadmap.errors import SettingError
from pytest_roadmap.protocol import TRACE_HEADERS
from pytest_roadmap.sandbox.answers import Decision, answer_length, answer_pieces
from pytest_roadmap.sandbox.paths import (
    API_PREFIX,
    CONFIG_PATH,
    CONTROL_PREFIX,
    LOG_PATH,
    OPENAI_BASE,
    RESET_PATH,
)
from pytest_roadmap.sandbox.state import SandboxState

MAX_BODY = 1 << 20


class SandboxHTTPServer(ThreadingHTTPServer):
    """The listening server: many threads, a deep backlog, and a list of open connections."""

    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: SandboxState) -> None:
        self.state = state
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, SandboxHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that can stall for seconds.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut every open connection, so idle keep-alive threads end with the server."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by its own thread
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that goes away mid-answer is normal here (timeouts, close rules, stop).
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class SandboxHandler(BaseHTTPRequestHandler):
    """One connection: routes /api/ to the state, /_sandbox/ to control."""

    protocol_version = "HTTP/1.1"
    server_version = "roadmap-sandbox"
    # Headers and body go out in two writes; without this, Nagle + delayed ACK add ~40 ms.
    disable_nagle_algorithm = True

    @property
    def state(self) -> SandboxState:
        return cast(SandboxHTTPServer, self.server).state

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the request log is the record, and stderr noise costs throughput."""

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def do_PUT(self) -> None:
        self._route()

    def do_PATCH(self) -> None:
        self._route()

    def do_DELETE(self) -> None:
        self._route()

    def _route(self) -> None:
        arrived = time.time()
        state = self.state
        state.begin()
        try:
            body = self._read_body()
            if body is None:
                return
            path = urlsplit(self.path).path
            if path.startswith(CONTROL_PREFIX):
                self._control(path, body)
            elif path.startswith((API_PREFIX, OPENAI_BASE + "/")):
                self._api(path, arrived, body)
            else:
                self._send(404, {"error": f"no such path: {path}"})
        finally:
            state.end()

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering a body we will not read."""
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                self.close_connection = True
                self._send(411, {"error": "send a Content-Length"})
                return None
            return b""
        try:
            length = int(length_text)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            # The rest of the stream cannot be trusted, so answer and hang up.
            self.close_connection = True
            self._send(400 if length < 0 else 413, {"error": "bad or oversized Content-Length"})
            return None
        return self.rfile.read(length)

    # -- /api/

    def _api(self, path: str, arrived: float, raw: bytes) -> None:
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        state = self.state
        wanted = ("Authorization", "Host", *TRACE_HEADERS.values())
        headers = {name: self.headers.get(name) for name in wanted}
        decision = state.decide(self.command, path, arrived, headers, body)
        try:
            if decision.wait > 0 and state.stopping.wait(decision.wait):
                self.close_connection = True  # stopping: give up rather than answer late
            elif decision.hang:
                state.stopping.wait()
                self.close_connection = True
            elif decision.close:
                state.settle(decision, decision.status, answered=False)
                self._send_cut(decision.status)
            elif decision.padding is not None or decision.gzip or decision.trickle:
                self._send_hostile(
                    decision,
                    ready=lambda: state.settle(decision, decision.status, answered=True),
                )
            else:
                payload = decision.raw if decision.raw is not None else decision.payload
                self._send(
                    decision.status,
                    payload,
                    decision.headers,
                    ready=lambda: state.settle(decision, decision.status, answered=True),
                )
        except OSError:
            self.close_connection = True  # the client went away mid-answer
            state.unanswer(decision)
        finally:
            state.settle(decision, None, answered=False)  # no-op unless never answered
            state.record(decision)

    def _send_hostile(self, decision: Decision, ready: Callable[[], None]) -> None:
        """Send a padded, gzip-encoded and/or trickled answer, made in pieces."""
        pieces = answer_pieces(decision)
        length: int
        if decision.gzip:
            packer = zlib.compressobj(wbits=31)  # 31: the gzip container
            packed = [packer.compress(piece) for piece in pieces]
            packed.append(packer.flush())
            pieces = iter(packed)
            length = sum(len(piece) for piece in packed)
        else:
            length = answer_length(decision)
        phrase = HTTPStatus(decision.status).phrase
        head = [f"HTTP/1.1 {decision.status} {phrase}", "Content-Type: application/json"]
        head.append(f"Content-Length: {length}")
        if decision.gzip:
            head.append("Content-Encoding: gzip")
        head += [f"{name}: {value}" for name, value in decision.headers.items()]
        head_bytes = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        ready()
        if decision.trickle_head:
            pieces = itertools.chain([head_bytes], pieces)
        else:
            self.wfile.write(head_bytes)
            self.wfile.flush()
        for piece in pieces:
            if not decision.trickle:
                self.wfile.write(piece)
                continue
            for index in range(len(piece)):
                if self.state.stopping.wait(decision.trickle):
                    self.close_connection = True
                    return
                self.wfile.write(piece[index : index + 1])
                self.wfile.flush()

    def _send_cut(self, status: int) -> None:
        """Promise a long body, send a few bytes of it, and hang up."""
        phrase = HTTPStatus(status).phrase
        head = (
            f"HTTP/1.1 {status} {phrase}\r\n"
            "Content-Type: application/json\r\n"
            "Content-Length: 4096\r\n"
            "\r\n"
        )
        self.wfile.write(head.encode("ascii") + b'{"code": "def ')
        self.wfile.flush()
        self.close_connection = True

    # -- /_sandbox/

    def _control(self, path: str, raw: bytes) -> None:
        state = self.state
        if path == CONFIG_PATH:
            if self.command == "GET":
                self._send(200, state.config.to_dict())
                return
            if self.command != "POST":
                self._send(405, {"error": "use GET or POST"}, {"Allow": "GET, POST"})
                return
            try:
                changes = json.loads(raw) if raw else {}
            except ValueError:
                changes = None
            if not isinstance(changes, dict):
                self._send(400, {"error": "body must be a JSON object of settings to change"})
                return
            try:
                config = state.configure(changes)
            except SettingError as exc:
                self._send(400, {"error": str(exc)})
                return
            self._send(200, config.to_dict())
        elif path == LOG_PATH:
            if self.command != "GET":
                self._send(405, {"error": "use GET"}, {"Allow": "GET"})
                return
            self._send(200, state.log())
        elif path == RESET_PATH:
            if self.command != "POST":
                self._send(405, {"error": "use POST"}, {"Allow": "POST"})
                return
            state.reset()
            self._send(200, {"status": "reset"})
        else:
            self._send(404, {"error": f"no such control path: {path}"})

    def _send(
        self,
        status: int,
        payload: Any,
        headers: Mapping[str, str] | None = None,
        ready: Callable[[], None] | None = None,
    ) -> None:
        """Answer with JSON, or with `payload` as is when it is a string.

        `ready` runs after the answer is built and before any byte of it is sent.
        """
        if isinstance(payload, str):
            data = payload.encode("utf-8")
            content_type = "text/plain; charset=utf-8"
        else:
            data = json.dumps(payload).encode("utf-8")
            content_type = "application/json"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        if ready is not None:
            ready()
        self.end_headers()
        self.wfile.write(data)
