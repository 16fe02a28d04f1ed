"""The API client every request goes through: throttled, token-safe, bounded, with clear
failures.

Redirects are followed here, not by requests: requests follows up to 30 inside one call,
past the rate limiter, and to any host. Here each hop is one throttled request, at most
MAX_REDIRECTS of them, on the API's own scheme, host and port (or a host the user allowed;
the token never goes there). Every request has one deadline, the task timeout, for
connecting, the headers and the whole body, and its body is read up to a size cap after
decompression.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from typing import Protocol as Interface
from urllib.parse import unquote, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from pytest_roadmap.display import Secrets, escape_controls, shown_url
from pytest_roadmap.health import Probed
from pytest_roadmap.protocol import (
    BEAST,
    PROTOCOLS,
    REDIRECT_STATUSES,
    AnswerError,
    Protocol,
    Usage,
)
from pytest_roadmap.retry import (
    OVERLOAD_STATUSES,
    TRANSIENT_STATUSES,
    Abandoned,
    TaskFailure,
    retry_after_of,
)
from pytest_roadmap.settings import API, MAX_BODY, OPENAI_KEY, TOKEN_ENV, shown_size

if TYPE_CHECKING:
    from pytest_roadmap.tokens import Reservation, TokenBudget

BODY_PREVIEW = 200
MAX_REDIRECTS = 5
# Bytes asked of the body per read. urllib3 (2.6+) also stops each read's decompression
# there, so a gzip bomb never inflates more than this beyond the cap.
READ_PIECE = 1 << 14
DEFAULT_PORTS = {"http": 80, "https": 443}
# Health answers no wait will change: the path is not there, or the credentials are refused.
NO_SUCH_PATH = frozenset({404, 405, 410})
CREDENTIALS_REFUSED = frozenset({401, 403})
SHOWN_URL = 300  # characters of a URL in a message
SHOWN_REASON = 80  # characters of the status line's reason phrase


class Throttle(Interface):
    """The shared safeguards around every request: `acquire` blocks until one more may go
    out (a health `probe`, or any other request) and returns what the request carries to
    its answer; `settle` hears the answer. `admit`, if given, is called last, once the
    request may go: it may still refuse it (raise), and then nothing is sent."""

    def acquire(self, *, probe: bool = False, admit: Callable[[], None] | None = None) -> Any: ...

    def settle(
        self,
        ticket: Any,
        status: int | None,
        headers: Mapping[str, str],
        *,
        overload: str | None = None,
        retry_after: float | None = None,
    ) -> None: ...


class Unthrottled:
    """A throttle that never waits and learns nothing."""

    def acquire(self, *, probe: bool = False, admit: Callable[[], None] | None = None) -> Any:
        if admit is not None:
            admit()
        return None

    def settle(
        self,
        ticket: Any,
        status: int | None,
        headers: Mapping[str, str],
        *,
        overload: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        return None


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    return escape_controls(flat if len(flat) <= BODY_PREVIEW else flat[:BODY_PREVIEW] + "...")


# --- one deadline for a whole request -------------------------------------------------

_current = threading.local()  # the deadline of the request this thread is sending


class Deadline:
    """The end of one request: connect, headers and body together.

    Socket timeouts bound each wait, not their sum, so a server that sends a byte a second
    would hold a request forever. At the deadline the watchdog shuts down the sockets the
    request uses, which ends a blocked read at once; the client then says it timed out.
    Enter it around each network call of the request (`with deadline:`).
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.fired = False
        self.cancelled = False  # ended by an `Abort`, not by the clock
        self.active = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def passed(self) -> bool:
        return self.fired or self.remaining() <= 0

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if sock not in self._sockets:
                self._sockets.append(sock)
            if self.fired:
                _cut(sock)

    def fire(self) -> None:
        """Cut the request's sockets, if it is still in a network call."""
        with self._lock:
            if not self.active:
                return
            self.fired = True
            for sock in self._sockets:
                _cut(sock)

    def cancel(self) -> None:
        """End the request now, whatever the time: its sockets are cut, and so is any it
        opens later."""
        with self._lock:
            self.fired = self.cancelled = True
            for sock in self._sockets:
                _cut(sock)

    def __enter__(self) -> Deadline:
        _current.deadline = self
        with self._lock:
            self.active = True
        _WATCHDOG.arm(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _current.deadline = None
        with self._lock:
            self.active = False
            self._sockets.clear()


class Abort:
    """Ends, from another thread, what one attempt sends: the request in flight is cut and
    no further one goes out. For an attempt sent ahead of its item (--roadmap-inflight)
    that nobody waits for any more: its item timed out, or the run was interrupted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.fired = False
        self._deadline: Deadline | None = None

    def fire(self) -> None:
        with self._lock:
            self.fired = True
            deadline = self._deadline
        if deadline is not None:
            deadline.cancel()

    def follow(self, deadline: Deadline) -> None:
        """`deadline` is the request this attempt sends now."""
        with self._lock:
            self._deadline = deadline
            fired = self.fired
        if fired:
            deadline.cancel()


@contextlib.contextmanager
def abortable(abort: Abort) -> Iterator[None]:
    """The requests this thread sends inside are ended when `abort` fires."""
    _current.abort = abort
    try:
        yield
    finally:
        _current.abort = None


class _Watchdog:
    """One daemon thread that fires each armed Deadline at its end.

    One thread for all requests: a threading.Timer per request starts a thread each time,
    which cost more than a whole request to a local sandbox (docs/ARCHITECTURE.md).
    """

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()  # ties never compare Deadlines
        self._thread: threading.Thread | None = None

    def arm(self, deadline: Deadline) -> None:
        with self._wake:
            heapq.heappush(self._heap, (deadline.end, next(self._order), deadline))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="roadmap-deadlines", daemon=True
                )
                self._thread.start()
            elif self._heap[0][2] is deadline:  # a new earliest end: wait less
                self._wake.notify()

    def _run(self) -> None:
        with self._wake:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0][0] <= now or not self._heap[0][2].active):
                    _, _, deadline = heapq.heappop(self._heap)
                    if deadline.end <= now:
                        deadline.fire()
                self._wake.wait(self._heap[0][0] - now if self._heap else None)


_WATCHDOG = _Watchdog()


def _cut(sock: socket.socket) -> None:
    # socket.socket's own shutdown, also for a TLS socket: it wakes a blocked read on the
    # file descriptor without touching the TLS object another thread is reading through.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _watch(sock: socket.socket | None) -> None:
    deadline: Deadline | None = getattr(_current, "deadline", None)
    if deadline is not None and sock is not None:
        deadline.watch(sock)


class _WatchedHTTPConnection(HTTPConnection):
    """A connection whose socket the current request's deadline can cut."""

    def connect(self) -> None:
        super().connect()
        _watch(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self.sock)  # a kept-alive connection is not connected again
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _watch(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self.sock)
        super().request(*args, **kwargs)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _DeadlineAdapter(HTTPAdapter):
    """requests' adapter, with connections a deadline can cut."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPPool,
            "https": _WatchedHTTPSPool,
        }


# --- where a request may go -----------------------------------------------------------


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = -1  # a port no origin has: never the API's own
    return scheme, (parts.hostname or "").lower(), port or DEFAULT_PORTS.get(scheme)


def _host_allowed(origin: tuple[str, str, int | None], allowed: tuple[str, ...]) -> bool:
    _, host, port = origin
    shown_host = f"[{host}]" if ":" in host else host
    return shown_host in allowed or f"{shown_host}:{port}" in allowed


class RoadmapClient:
    """A session bound to one API: `.chat(prompt)` for tasks, `.get`/`.post` for the rest.

    Every request, each redirect hop included, first passes the throttle, so the rate limit
    covers all of them. The token goes only into the Authorization header, only to the
    API's own origin, and is masked in every message this client makes, as is a password
    in the API URL (which is sent as HTTP Basic credentials, like requests does).
    """

    def __init__(
        self,
        api: str,
        *,
        model: str,
        token: str | None = None,
        timeout: float = 30.0,
        throttle: Throttle | None = None,
        headers: Mapping[str, str] | None = None,
        ca_bundle: Path | None = None,
        on_request: Callable[[], None] | None = None,
        max_body: int = MAX_BODY.default,
        redirect_hosts: tuple[str, ...] = (),
        protocol: Protocol = PROTOCOLS[BEAST],
        tokens: TokenBudget | None = None,
    ) -> None:
        self.secrets = Secrets(token, api)
        self.protocol = protocol
        self.tokens = tokens  # the run's tokens-per-minute budget, if it has one
        self.api, self._auth = _without_credentials(api.rstrip("/"))
        self.model = model
        self.timeout = timeout
        self.max_body = max_body
        self._origin = _origin(self.api)
        self._redirect_hosts = redirect_hosts
        self._throttle = throttle or Unthrottled()
        self._on_request = on_request
        self._verify: str | bool = str(ca_bundle) if ca_bundle else True
        self._headers = {"User-Agent": "pytest-roadmap", **(headers or {})}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        # One session per thread: requests does not promise that a Session is safe to share
        # between threads, and with --roadmap-inflight a worker sends from several.
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    @property
    def _session(self) -> requests.Session:
        """This thread's session, made at its first request."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # no proxies or netrc credentials picked up silently
            for prefix in ("http://", "https://"):
                session.mount(prefix, _DeadlineAdapter())
            session.verify = self._verify
            session.headers.update(self._headers)
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def redact(self, text: str) -> str:
        """The text with the token and the API's password masked, for anything shown."""
        return self.secrets.mask(text)

    def shown(self, url: str) -> str:
        """A URL as messages show it: password masked, control characters escaped, and
        cut short (a Location header may be 64 KB long)."""
        text = self.redact(shown_url(url))
        return escape_controls(text if len(text) <= SHOWN_URL else text[:SHOWN_URL] + "...")

    def url(self, path: str) -> str:
        return self.api + (path if path.startswith("/") else "/" + path)

    def request(
        self,
        method: str,
        path: str,
        *,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        probe: bool = False,
        admit: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send one throttled request, following redirects one throttled hop at a time.

        The response's body is already read (at most `max_body` bytes); every way this
        can go wrong is a TaskFailure that says what happened. A health `probe` goes out
        while the API looks down; other requests then end unsent. `admit` is the first
        hop's last word before it goes out (see `Throttle`): returning, it is sent.
        """
        url = self.url(path)
        limit = self.timeout if timeout is None else timeout
        deadline: Deadline | None = None
        history: list[requests.Response] = []
        abort: Abort | None = getattr(_current, "abort", None)
        while True:
            if abort is not None and abort.fired:
                raise _abandoned(method, sent=deadline is not None)
            if self._on_request is not None:
                self._on_request()
            # Nothing may stand between the throttle's admission and the send: a send that
            # goes out late lets the next reserved one crowd in behind it.
            first = deadline is None
            ticket = self._throttle.acquire(probe=probe, admit=admit if first else None)
            if deadline is None:  # the first hop starts the clock; later ones wait in it
                deadline = Deadline(limit)
                if abort is not None:
                    abort.follow(deadline)
            elif deadline.passed():
                raise self._ended(method, url, deadline)
            try:
                response = self._send(method, url, deadline, headers, kwargs)
            except TaskFailure as failure:
                # No answer: the learned pace hears of load the network showed, and the
                # run's log of what the request became.
                words = _load_words(failure) if failure.overload else None
                self._throttle.settle(ticket, None, {}, overload=words)
                raise
            except BaseException:
                # Ended from outside (the attempt's timeout, Ctrl-C): no answer either.
                with contextlib.suppress(Exception):
                    self._throttle.settle(ticket, None, {})
                raise
            retry_after = None
            if response.status_code in OVERLOAD_STATUSES:
                retry_after = retry_after_of(response.headers)
            self._throttle.settle(
                ticket, response.status_code, response.headers, retry_after=retry_after
            )
            location = response.headers.get("Location")
            if response.status_code not in REDIRECT_STATUSES or location is None:
                response.history = history
                return response
            history.append(response)
            target = urljoin(response.url, location)
            self._check_redirect(method, url, target, len(history))
            if (response.status_code == 303 and method != "HEAD") or (
                response.status_code in (301, 302) and method == "POST"
            ):
                # As browsers and requests do: these redirects turn into a GET, bodiless.
                method = "GET"
                kwargs = {k: v for k, v in kwargs.items() if k not in ("json", "data", "files")}
            url = target

    def _check_redirect(self, method: str, url: str, target: str, hops: int) -> None:
        where = f"{method} {self.shown(url)}"
        if hops > MAX_REDIRECTS:
            raise TaskFailure(
                f"{where}: more than {MAX_REDIRECTS} redirects (the last to "
                f"{self.shown(target)}); point --roadmap-api at the final address",
                transient=False,
            )
        origin = _origin(target)
        if origin == self._origin:
            return
        downgrade = self._origin[0] == "https" and origin[0] != "https"
        if downgrade or origin[0] not in DEFAULT_PORTS:
            raise TaskFailure(
                f"{where} redirected to {self.shown(target)}: not followed, it would leave "
                f"{self._origin[0]}",
                transient=False,
            )
        if not _host_allowed(origin, self._redirect_hosts):
            raise TaskFailure(
                f"{where} redirected to another host ({self.shown(target)}): not followed; "
                "point --roadmap-api there or allow the host with --roadmap-redirect-hosts",
                transient=False,
            )

    def _send(
        self,
        method: str,
        url: str,
        deadline: Deadline,
        headers: Mapping[str, str] | None,
        kwargs: dict[str, Any],
    ) -> requests.Response:
        """One request and its whole body, within the deadline and the size cap."""
        own = _origin(url) == self._origin
        sent: dict[str, str | None] = dict(headers or {})
        options = dict(kwargs)
        for fixed in ("allow_redirects", "stream"):  # this client's to decide
            options.pop(fixed, None)
        if own:
            options.setdefault("auth", self._auth)
        else:
            # The token and the URL's credentials are for the API alone.
            sent["Authorization"] = None  # None drops the session's header
            options.pop("auth", None)
        try:
            with deadline:
                left = deadline.remaining()
                if left <= 0 or deadline.cancelled:
                    raise self._ended(method, url, deadline)
                response = self._session.request(
                    method,
                    url,
                    timeout=(min(10.0, left), left),
                    headers=sent,
                    allow_redirects=False,
                    stream=True,
                    **options,
                )
                try:
                    body = self._read_body(response, deadline)
                finally:
                    response.close()
                if deadline.fired:
                    # Cut by the deadline: what arrived may look whole (http.client takes
                    # an end of stream inside the headers for their end) but is not.
                    raise self._ended(method, url, deadline)
        except TaskFailure:
            raise
        except (requests.exceptions.RequestException, OSError) as exc:
            if deadline.passed():
                raise self._ended(method, url, deadline) from None
            raise self._network_failure(method, url, exc, deadline.seconds) from None
        # The body read so far becomes the response's content, as if requests had read it.
        response._content = body
        response._content_consumed = True  # type: ignore[attr-defined]
        return response

    def _read_body(self, response: requests.Response, deadline: Deadline) -> bytes:
        data = bytearray()
        for piece in response.iter_content(READ_PIECE):
            data += piece
            if len(data) > self.max_body:
                where = f"{response.request.method} {self.shown(response.url)}"
                raise TaskFailure(
                    f"{where} answered {response.status_code} with a body above "
                    f"{shown_size(self.max_body)} (--roadmap-max-body); the rest was not read",
                    transient=False,
                )
            if deadline.passed():
                raise self._ended(str(response.request.method), response.url, deadline)
        return bytes(data)

    def _ended(self, method: str, url: str, deadline: Deadline) -> TaskFailure:
        """The failure of a request its deadline ended: too slow, or abandoned."""
        if deadline.cancelled:
            return _abandoned(method, sent=True)
        return self._too_slow(method, url, deadline.seconds)

    def _too_slow(self, method: str, url: str, limit: float) -> TaskFailure:
        return TaskFailure(
            f"no answer within {limit:g} s from {method} {self.shown(url)} "
            "(raise --roadmap-timeout or TASK_TIMEOUT if the API is just slow)",
            transient=True,
            overload=True,
        )

    def _network_failure(
        self, method: str, url: str, exc: BaseException, limit: float
    ) -> TaskFailure:
        where = f"{method} {self.shown(url)}"
        if isinstance(exc, requests.exceptions.Timeout):
            return self._too_slow(method, url, limit)
        if isinstance(exc, requests.exceptions.SSLError):
            return TaskFailure(
                f"TLS verification failed for {where}: "
                f"{self.redact(_root_cause(exc))} (point --roadmap-ca-bundle at your CA)",
                transient=False,
            )
        if isinstance(
            exc,
            (
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ),
        ):
            return TaskFailure(
                f"connection closed before the whole answer arrived for {where}",
                transient=True,
                overload=True,
            )
        if isinstance(exc, requests.exceptions.ConnectionError):
            return TaskFailure(
                f"{self._connection_words(exc)} for {where}", transient=True, overload=True
            )
        return TaskFailure(
            f"{where} failed: {self.redact(_root_cause(exc))}", transient=True, overload=True
        )

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def chat(
        self,
        prompt: str,
        *,
        headers: Mapping[str, str] | None = None,
        system: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        reserved: Reservation | None = None,
        timeout: float | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Ask the API for one task's work, in the run's protocol; the answer (`code`,
        `message`, and with the OpenAI protocol `usage`), or a TaskFailure saying why not.
        `timeout`: this request's deadline, if not the client's.

        With a token budget, the request first reserves its estimated tokens, unless the
        caller already did (`reserved`); the answer's usage corrects the reservation, and
        a request that never goes out gives it back.
        """
        protocol = self.protocol
        body = protocol.body(
            prompt, self.model, system=system, max_tokens=max_tokens, temperature=temperature
        )
        body.update(extra)
        if reserved is None and self.tokens is not None:
            tokens = self.tokens.estimate(protocol.estimate(prompt, system), max_tokens)
            reserved = self.tokens.reserve(tokens)
        sent = False
        budget, held = self.tokens, reserved

        def admit() -> None:
            nonlocal sent
            if budget is not None and held is not None and not budget.admit(held):
                raise TaskFailure(
                    "not sent: held up past its tokens' time, it no longer fits in the "
                    "token limit's minute; it waits for room again",
                    transient=True,
                    refused=True,
                )
            sent = True

        try:
            response = self.post(
                protocol.chat_path, json=body, headers=headers, timeout=timeout, admit=admit
            )
        except BaseException:
            if not sent and self.tokens is not None and reserved is not None:
                # Paused, stopped, abandoned or too late before the send: the server counted
                # nothing.
                with contextlib.suppress(Exception):
                    self.tokens.give_back(reserved)
            raise
        answer, usage = self.answer_and_usage(response)
        if self.tokens is not None and reserved is not None:
            self.tokens.settle(reserved, usage)
        if usage is not None:
            answer = {**answer, "usage": usage.to_dict()}
        return answer

    def answer_and_usage(self, response: requests.Response) -> tuple[dict[str, Any], Usage | None]:
        """The answer of a chat response as `{code, message}` in the run's protocol and the
        tokens it used, or the TaskFailure it amounts to."""
        where = f"{response.request.method} {self.shown(response.url)}"
        try:
            text = response.text
        except (requests.exceptions.RequestException, OSError):  # body cut off mid-read
            raise TaskFailure(
                f"connection closed before the whole answer arrived for {where}",
                transient=True,
                overload=True,
            ) from None
        start = self.redact(_preview(text)) or "(empty body)"
        phrase = escape_controls((response.reason or "")[:SHOWN_REASON])
        status = response.status_code
        if not 200 <= status < 300:
            retry_after = retry_after_of(response.headers)
            wait = f"; Retry-After {retry_after:g} s" if retry_after is not None else ""
            said = self._error_words(text)
            raise TaskFailure(
                f"{where} answered {status} {phrase}".rstrip() + f"{wait}: {said or start}",
                transient=status in TRANSIENT_STATUSES,
                overload=status in OVERLOAD_STATUSES,
                retry_after=retry_after,
                refused=status in OVERLOAD_STATUSES,
                status=status,
            )
        try:
            answer = json.loads(text)
        except ValueError:
            raise TaskFailure(
                f"{where} answered {status} with a body that is not JSON: {start}",
                transient=False,
            ) from None
        try:
            return self.protocol.answer(answer)
        except AnswerError as missing:
            raise TaskFailure(
                f"{where} answered {status} but {missing}: {start}", transient=False
            ) from None

    def _error_words(self, text: str) -> str | None:
        """What an error body says in the protocol's error shape, shown on one line."""
        try:
            said = self.protocol.error_message(json.loads(text))
        except (ValueError, RecursionError):
            return None
        return self.redact(_preview(said)) if said else None

    def probe(self, path: str, timeout: float) -> tuple[Probed, str]:
        """One health probe: what it found and what it saw. Any 2xx is healthy, and so is a
        429 (the API answered; the learned pace deals with its rate); a wrong path or refused
        credentials will not mend by waiting; anything else is down for now."""
        try:
            response = self.get(path, timeout=timeout, probe=True)
        except TaskFailure as failure:
            return Probed.DOWN, failure.reason
        detail = f"GET {self.shown(response.url)} -> {response.status_code}"
        status = response.status_code
        if 200 <= status < 300 or status == 429:
            return Probed.OK, detail
        if status in NO_SUCH_PATH:
            return Probed.WRONG, f"{detail}: {self._wrong_path_words()}"
        if status in CREDENTIALS_REFUSED:
            token = TOKEN_ENV if self.protocol.name == BEAST else f"{TOKEN_ENV} or {OPENAI_KEY}"
            return Probed.WRONG, f"{detail}: the API refused the credentials (check {token})"
        return Probed.DOWN, detail

    def _wrong_path_words(self) -> str:
        """What to check when the API has no health path: most often the base URL, without
        the prefix the protocol's servers put their paths under (the sandbox's too: /v1)."""
        base = self.protocol.sandbox_base
        if base and not urlsplit(self.api).path.rstrip("/").endswith(base):
            return (
                f"the {self.protocol.name} protocol's paths are below {base}: did you mean "
                f"{API.option} {self.api + base} (env {API.env})?"
            )
        return (
            f"no {self.protocol.health_path} here: is {API.option} (env {API.env}) the "
            f"API's base URL, and --roadmap-protocol {self.protocol.name} its protocol?"
        )

    def _connection_words(self, exc: requests.exceptions.ConnectionError) -> str:
        cause = _root_cause(exc)
        lowered = cause.lower()
        if (
            isinstance(_innermost(exc), socket.gaierror)
            or "name or service not known" in lowered
            or "failed to resolve" in lowered
            or "nodename nor servname" in lowered
        ):
            return "cannot resolve the API's host name (check BEAST_MODE_API / --roadmap-api)"
        if "refused" in lowered:
            return "connection refused: is the API running at this address?"
        if (
            "remotedisconnected" in lowered
            or "aborted" in lowered
            or "reset" in lowered
            or "incomplete" in lowered
            or "closed" in lowered
        ):
            return "connection closed before the whole answer arrived"
        return f"cannot connect: {self.redact(cause)}"


def _abandoned(method: str, *, sent: bool) -> Abandoned:
    what = "cut off" if sent else "not sent"
    return Abandoned(f"{method} {what}: nobody waits for this attempt any more", sent=sent)


def _load_words(failure: TaskFailure) -> str | None:
    """What a network failure says about load (a timeout, a refused or cut connection), in
    the words of the pace's change lines; None for failures that say nothing of load."""
    if failure.reason.startswith("no answer within"):
        return "a timeout"
    for words in ("connection refused", "connection closed"):
        if failure.reason.startswith(words):
            return words
    return None


def _without_credentials(api: str) -> tuple[str, tuple[str, str] | None]:
    """The API URL without its user part, and the HTTP Basic credentials that held."""
    parts = urlsplit(api)
    if "@" not in parts.netloc:
        return api, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return parts._replace(netloc=host).geturl(), (unquote(user), unquote(password))


def _innermost(exc: BaseException) -> BaseException:
    seen = set()
    while True:
        nxt = exc.__cause__ or exc.__context__
        if nxt is None and exc.args and isinstance(exc.args[0], BaseException):
            nxt = exc.args[0]
        if nxt is None and hasattr(exc, "reason") and isinstance(exc.reason, BaseException):
            nxt = exc.reason
        if nxt is None or id(nxt) in seen:
            return exc
        seen.add(id(exc))
        exc = nxt


def _root_cause(exc: BaseException) -> str:
    inner = _innermost(exc)
    text = f"{type(inner).__name__}: {inner}" if str(inner) else type(inner).__name__
    return escape_controls(" ".join(text.split())[:300])
