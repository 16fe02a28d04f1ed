"""The API client every request goes through: throttled, token-safe, with clear failures."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import requests

from pytest_roadmap.retry import (
    OVERLOAD_STATUSES,
    TRANSIENT_STATUSES,
    TaskFailure,
    parse_retry_after,
)

CHAT_PATH = "/api/codebase/chat"
BODY_PREVIEW = 200


class Throttle(Protocol):
    """The shared safeguards around every request: `acquire` blocks until one more may go
    out and returns what the request carries to its answer; `settle` hears the answer."""

    def acquire(self) -> Any: ...

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

    def acquire(self) -> Any:
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
    return flat if len(flat) <= BODY_PREVIEW else flat[:BODY_PREVIEW] + "..."


class RoadmapClient:
    """A session bound to one API: `.chat(prompt)` for tasks, `.get`/`.post` for the rest.

    Every request first passes the throttle, so the rate limit covers all of them. The token
    goes only into the Authorization header and is scrubbed from every message this client
    makes; requests drops that header itself on a redirect to another host.
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
    ) -> None:
        self.api = api.rstrip("/")
        self.model = model
        self.timeout = timeout
        self._token = token
        self._throttle = throttle or Unthrottled()
        self._on_request = on_request
        self._session = requests.Session()
        self._session.trust_env = False  # no proxies or netrc credentials picked up silently
        self._session.verify = str(ca_bundle) if ca_bundle else True
        self._session.headers["User-Agent"] = "pytest-roadmap"
        if headers:
            self._session.headers.update(headers)
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self._session.close()

    def redact(self, text: str) -> str:
        """The text with the token (if any) replaced, for anything shown to a person."""
        return text.replace(self._token, "***") if self._token else text

    def url(self, path: str) -> str:
        return self.api + (path if path.startswith("/") else "/" + path)

    def request(
        self,
        method: str,
        path: str,
        *,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send one throttled request; network failures become a TaskFailure."""
        url = self.url(path)
        limit = self.timeout if timeout is None else timeout
        if self._on_request is not None:
            self._on_request()
        # Nothing may stand between the throttle's admission and the send: a send that goes
        # out late lets the next reserved one crowd in behind it.
        ticket = self._throttle.acquire()
        try:
            response = self._session.request(
                method, url, timeout=(min(10.0, limit), limit), headers=headers, **kwargs
            )
        except requests.exceptions.Timeout:
            self._throttle.settle(ticket, None, {}, overload="a timeout")
            raise TaskFailure(
                f"no answer within {limit:g} s from {method} {self.redact(url)} "
                "(raise --roadmap-timeout or TASK_TIMEOUT if the API is just slow)",
                transient=True,
                overload=True,
            ) from None
        except requests.exceptions.SSLError as exc:
            raise TaskFailure(
                f"TLS verification failed for {method} {self.redact(url)}: "
                f"{self.redact(_root_cause(exc))} (point --roadmap-ca-bundle at your CA)",
                transient=False,
            ) from None
        except requests.exceptions.ConnectionError as exc:
            words = self._connection_words(exc)
            if words.startswith(("connection refused", "connection closed")):
                self._throttle.settle(ticket, None, {}, overload=words.split(":")[0])
            raise TaskFailure(
                f"{words} for {method} {self.redact(url)}",
                transient=True,
                overload=True,
            ) from None
        except (
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
        ):
            raise TaskFailure(
                f"connection closed before the whole answer arrived for {method} "
                f"{self.redact(url)}",
                transient=True,
                overload=True,
            ) from None
        except requests.exceptions.RequestException as exc:
            raise TaskFailure(
                f"{method} {self.redact(url)} failed: {self.redact(_root_cause(exc))}",
                transient=True,
                overload=True,
            ) from None
        retry_after = None
        if response.status_code in OVERLOAD_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
        self._throttle.settle(
            ticket, response.status_code, response.headers, retry_after=retry_after
        )
        return response

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def chat(
        self, prompt: str, *, headers: Mapping[str, str] | None = None, **extra: Any
    ) -> dict[str, Any]:
        """Ask the API for one task's work; the JSON answer, or a TaskFailure saying why not."""
        body = {"message": prompt, "model": self.model, "useLLM": True, **extra}
        response = self.post(CHAT_PATH, json=body, headers=headers)
        return self.answer_of(response)

    def answer_of(self, response: requests.Response) -> dict[str, Any]:
        """The JSON answer of a chat response, or the TaskFailure it amounts to."""
        where = f"{response.request.method} {self.redact(response.url)}"
        try:
            text = response.text
        except (requests.exceptions.RequestException, OSError):  # body cut off mid-read
            raise TaskFailure(
                f"connection closed before the whole answer arrived for {where}",
                transient=True,
                overload=True,
            ) from None
        start = self.redact(_preview(text)) or "(empty body)"
        status = response.status_code
        if not 200 <= status < 300:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            wait = f"; Retry-After {retry_after:g} s" if retry_after is not None else ""
            raise TaskFailure(
                f"{where} answered {status} {response.reason or ''}".rstrip() + f"{wait}: {start}",
                transient=status in TRANSIENT_STATUSES,
                overload=status in OVERLOAD_STATUSES,
                retry_after=retry_after,
                refused=status in OVERLOAD_STATUSES,
            )
        try:
            answer = json.loads(text)
        except ValueError:
            raise TaskFailure(
                f"{where} answered {status} with a body that is not JSON: {start}",
                transient=False,
            ) from None
        if not isinstance(answer, dict) or not ("code" in answer or "message" in answer):
            raise TaskFailure(
                f"{where} answered {status} but its JSON has neither 'code' nor 'message': {start}",
                transient=False,
            )
        return answer

    def probe(self, path: str, timeout: float) -> tuple[bool, str]:
        """One health probe: (healthy, what it saw) where any 2xx is healthy."""
        try:
            response = self.get(path, timeout=timeout)
        except TaskFailure as failure:
            return False, failure.reason
        detail = f"GET {self.redact(response.url)} -> {response.status_code}"
        return 200 <= response.status_code < 300, detail

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
    return " ".join(text.split())[:300]
