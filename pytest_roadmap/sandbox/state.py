"""The sandbox's shared state: config, counters and the request log; admits or refuses
each /api/ request in one atomic step.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import math
import random
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from pytest_roadmap.protocol import TRACE_HEADERS
from pytest_roadmap.sandbox.answers import (
    SANDBOX_MODEL,
    Decision,
    as_openai,
    chat_answer,
    method_not_allowed,
    openai_prompt,
    rule_text,
)
from pytest_roadmap.sandbox.config import Rule, SandboxConfig
from pytest_roadmap.sandbox.paths import (
    CHAT_PATHS,
    HEALTH_PATHS,
    OPENAI_BASE,
    OPENAI_CHAT,
    OPENAI_MODELS,
)

MESSAGE_PREVIEW = 80
RATE_WINDOW = 1.0
TOKEN_WINDOW = 60.0


def go_duration(seconds: float) -> str:
    """`seconds` (rounded up to whole milliseconds, at least 1) the way Go prints a
    time.Duration, as OpenAI's x-ratelimit-reset-* headers do: 250ms, 1s, 1.5s, 6m0s, 1h0m0s.
    """
    ms = max(1, math.ceil(round(seconds * 1000, 6)))
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, fraction = divmod(rest, 1000)
    text = f"{whole}.{fraction:03d}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text


class SandboxState:
    """Config, counters and the request log, shared by all handler threads."""

    def __init__(self, config: SandboxConfig, log_path: Path | None) -> None:
        self._lock = threading.Lock()
        self._config = config
        self._rng = random.Random(config.seed)
        self._rule_uses = [0] * len(config.rules)
        self._entries: list[dict[str, Any]] = []
        self._seq = 0
        self._in_flight = 0
        self._accepted: deque[float] = deque()  # monotonic arrivals inside the rate window
        self._last_admitted = -math.inf  # the last of them, kept past the window (spacing)
        self._tokens: deque[tuple[float, int]] = deque()  # (monotonic, tokens) of the minute
        self._windows: dict[int, int] = {}  # rpm: chat requests admitted per fixed window
        self._schedule_start = time.monotonic()  # where capacity_schedule counts from
        self._quota_used = 0  # chat answers 2xx, and admitted ones on their way to it
        self._epoch = 0  # one per reset, so a request from before it frees no quota after
        self._busy = 0
        self._idle = threading.Condition(self._lock)
        self.stopping = threading.Event()
        self._log_path = log_path
        self._file_lock = threading.Lock()
        self._file: IO[str] | None = None

    # -- lifecycle

    def open_log(self) -> None:
        if self._log_path is not None:
            self._file = self._log_path.open("a", encoding="utf-8")

    def close_log(self) -> None:
        with self._file_lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def begin(self) -> None:
        with self._lock:
            self._busy += 1

    def end(self) -> None:
        with self._lock:
            self._busy -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._busy > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._idle.wait(left)

    # -- control

    @property
    def config(self) -> SandboxConfig:
        with self._lock:
            return self._config

    def configure(self, changes: Mapping[str, Any]) -> SandboxConfig:
        with self._lock:
            new = self._config.with_changes(changes)
            if "rules" in changes:
                self._rule_uses = [0] * len(new.rules)
            if "seed" in changes:
                self._rng = random.Random(new.seed)
            if "capacity_schedule" in changes:
                self._schedule_start = time.monotonic()
            self._config = new
            return new

    def reset(self) -> None:
        """Clear the log, rule counters, rate window and quota; reseed and restart the
        capacity schedule, so a run can be replayed."""
        with self._lock:
            self._entries = []
            self._seq = 0
            self._rule_uses = [0] * len(self._config.rules)
            self._rng = random.Random(self._config.seed)
            self._accepted.clear()
            self._last_admitted = -math.inf
            self._tokens.clear()
            self._windows.clear()
            self._schedule_start = time.monotonic()
            self._quota_used = 0
            self._epoch += 1

    def log(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(entry) for entry in self._entries]

    def health(self) -> int:
        with self._lock:
            return self._in_flight

    # -- the API side

    def decide(
        self,
        method: str,
        path: str,
        arrived: float,
        headers: Mapping[str, str | None],
        body: Any,
    ) -> Decision:
        """Admit or reject one /api/ request and log its arrival, in one atomic step."""
        is_chat = path in CHAT_PATHS
        openai = path.startswith(OPENAI_BASE + "/")
        message = openai_prompt(body) if openai else None
        if not openai and isinstance(body, dict):
            message = body.get("message")
        model = body.get("model") if isinstance(body, dict) else None
        auth = headers.get("Authorization")
        entry: dict[str, Any] = {
            "seq": 0,
            "method": method,
            "path": path,
            "arrived": arrived,
            "answered": None,
            "status": None,
            "in_flight": 0,
            "capacity": None,
            "message": message[:MESSAGE_PREVIEW] if isinstance(message, str) else None,
            "model": model if isinstance(model, str) else None,
            # Only a digest: the token must never reach the log or its file.
            "auth": hashlib.sha256(auth.encode()).hexdigest() if auth is not None else None,
            # The host name the client asked for, so a test can tell a redirect's target.
            "host": headers.get("Host"),
            # Tokens of a chat answer (OpenAI protocol): {prompt, completion, total}.
            "usage": None,
        }
        for key, header in TRACE_HEADERS.items():
            entry[key] = headers.get(header)
        with self._lock:
            self._seq += 1
            entry["seq"] = self._seq
            # For chat, the count includes this request even when it is turned away,
            # so a 503 from capacity shows the number that tripped it.
            entry["in_flight"] = self._in_flight + 1 if is_chat else self._in_flight
            if is_chat:
                entry["capacity"] = self._capacity_locked()
            self._entries.append(entry)
            decision = self._token_refusal_locked(entry, path)
            if decision is None and is_chat:
                decision = self._rpm_refusal_locked(entry)
            held = 0.0
            if decision is None or decision.admitted:
                held = decision.wait if decision is not None else 0.0
                decision = self._decide_locked(entry, method, path, message, model, auth)
                decision.wait += held
            if openai:
                as_openai(decision, body)
                self._count_tokens_locked(decision)
            if decision.admitted:
                self._in_flight += 1
                # Counted when admitted, not when answered, so requests in flight together
                # cannot overshoot the quota; settle() gives it back if no answer goes out.
                if 200 <= decision.status < 300 and not (decision.hang or decision.close):
                    self._quota_used += 1
                    decision.quota_epoch = self._epoch
            decision.headers.update(self._rate_headers_locked(decision))
            if is_chat and self._config.gateway_headers and 200 <= decision.status < 300:
                decision.headers.update(self._gateway_headers_locked(held))
            return decision

    def _rpm_refusal_locked(self, entry: dict[str, Any]) -> Decision | None:
        """A gateway's fixed-window limit: None to go on now, a 429, or (queueing) an
        admission marker whose `wait` holds the request until a window with room."""
        config = self._config
        if config.rpm is None or config.down:
            return None
        now = time.time()  # windows are the wall clock's, as a gateway counts them
        window = int(now // config.rpm_window)
        for old in [w for w in self._windows if w < window]:
            del self._windows[old]
        if self._windows.get(window, 0) < config.rpm:
            self._windows[window] = self._windows.get(window, 0) + 1
            return None
        turn = (window + 1) * config.rpm_window - now
        if config.rpm_queue and self._windows.get(window + 1, 0) < config.rpm:
            self._windows[window + 1] = self._windows.get(window + 1, 0) + 1
            return Decision(entry, 200, admitted=True, wait=turn)
        if config.gateway_headers:
            # LiteLLM's router says a fixed 60 whatever is left of the minute, and the proxy
            # passes it on with the provider prefix only.
            wait = {"llm_provider-retry-after": f"{config.rpm_window:g}"}
        else:
            wait = {"Retry-After": str(max(1, math.ceil(turn)))}
        return Decision(entry, 429, {"error": "rpm limit exceeded"}, headers=wait)

    def _gateway_headers_locked(self, held: float) -> dict[str, str]:
        """What a LiteLLM proxy says of the deployment's budget on a 2xx: limit and
        remaining in the window the request was counted in, never a reset."""
        config = self._config
        found: dict[str, str] = {}
        if config.rpm is not None:
            window = int((time.time() + held) // config.rpm_window)
            left = max(0, config.rpm - self._windows.get(window, 0))
            found["x-ratelimit-limit-requests"] = str(config.rpm)
            found["x-ratelimit-remaining-requests"] = str(left)
        if config.token_limit is not None:
            used, _ = self._token_window_locked()
            found["x-ratelimit-limit-tokens"] = str(config.token_limit)
            found["x-ratelimit-remaining-tokens"] = str(max(0, config.token_limit - used))
        return found

    def _token_window_locked(self) -> tuple[int, float]:
        """Tokens answered in the last minute, and seconds until the oldest leaves it."""
        now = time.monotonic()
        while self._tokens and self._tokens[0][0] <= now - TOKEN_WINDOW:
            self._tokens.popleft()
        used = sum(tokens for _, tokens in self._tokens)
        reset = self._tokens[0][0] + TOKEN_WINDOW - now if self._tokens else TOKEN_WINDOW
        return used, reset

    def _token_refusal_locked(self, entry: dict[str, Any], path: str) -> Decision | None:
        limit = self._config.token_limit
        if limit is None or path != OPENAI_CHAT or self._config.down:
            return None
        used, reset = self._token_window_locked()
        if used < limit:
            return None
        retry = {"Retry-After": str(max(1, math.ceil(reset)))}
        if self._config.gateway_headers:
            retry = {"llm_provider-retry-after": "60"}  # the router's fixed wait, prefixed
        return Decision(entry, 429, {"error": "token rate limit exceeded"}, headers=retry)

    def _count_tokens_locked(self, decision: Decision) -> None:
        """Count an admitted answer's tokens; say where the token budget stands."""
        limit = self._config.token_limit
        if limit is None:
            return
        usage = decision.entry.get("usage")
        if decision.admitted and isinstance(usage, dict):
            self._tokens.append((time.monotonic(), int(usage["total"])))
        if self._config.gateway_headers:
            return  # a gateway says its budget without a reset (_gateway_headers_locked)
        used, reset = self._token_window_locked()
        decision.headers.update(
            {
                "x-ratelimit-limit-tokens": str(limit),
                "x-ratelimit-remaining-tokens": str(max(0, limit - used)),
                "x-ratelimit-reset-tokens": go_duration(reset),
            }
        )

    def _capacity_locked(self) -> int | None:
        """The capacity in force: the last schedule step reached, else `capacity`."""
        config = self._config
        capacity = config.capacity
        elapsed = time.monotonic() - self._schedule_start
        for seconds, step in config.capacity_schedule or ():
            if seconds > elapsed:
                break
            capacity = int(step)
        return capacity

    def _quota_spent_locked(self) -> bool:
        quota = self._config.quota
        return quota is not None and self._quota_used >= quota

    def _rate_headers_locked(self, decision: Decision) -> dict[str, str]:
        """Where the rate window stands after this request, in the configured family.

        Remaining: requests still allowed in the window. Reset: seconds until the oldest
        admitted request leaves it (one more is allowed then if none is now), or the whole
        window when it is empty. Under a spent quota: none left until its Retry-After, so
        the two agree, as the draft asks.
        """
        config = self._config
        family = config.rate_limit_headers
        if config.rate_limit is None or not family:
            return {}
        limit = max(1, math.floor(config.rate_limit))
        # Only the quota's own 429 comes with the quota spent (it is checked first).
        if decision.status == 429 and self._quota_spent_locked():
            remaining, reset = 0, float(config.quota_retry_after)
        else:
            now = time.monotonic()
            while self._accepted and self._accepted[0] <= now - RATE_WINDOW:
                self._accepted.popleft()
            remaining = max(0, limit - len(self._accepted))
            reset = self._accepted[0] + RATE_WINDOW - now if self._accepted else RATE_WINDOW
        whole = max(1, math.ceil(reset))
        if family == "ratelimit":
            return {
                "RateLimit-Limit": str(limit),
                "RateLimit-Remaining": str(remaining),
                "RateLimit-Reset": str(whole),
            }
        if family == "ratelimit-policy":
            window = max(1, math.ceil(RATE_WINDOW))
            return {
                "RateLimit": f'"default";r={remaining};t={whole}',
                "RateLimit-Policy": f'"default";q={limit};w={window}',
            }
        return {
            "x-ratelimit-limit-requests": str(limit),
            "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-reset-requests": go_duration(reset),
        }

    def _decide_locked(
        self,
        entry: dict[str, Any],
        method: str,
        path: str,
        message: object,
        model: object,
        auth: str | None,
    ) -> Decision:
        config = self._config
        if config.down:
            return Decision(entry, 503, {"status": "down"})
        if self._quota_spent_locked():
            retry = {"Retry-After": str(config.quota_retry_after)}
            return Decision(entry, 429, {"error": "quota exhausted"}, headers=retry)
        if config.rate_limit is not None:
            now = time.monotonic()
            while self._accepted and self._accepted[0] <= now - RATE_WINDOW:
                self._accepted.popleft()
            if config.rate_limit_spacing:
                refused = now - self._last_admitted < 1.0 / config.rate_limit
            else:
                refused = len(self._accepted) >= max(1, math.floor(config.rate_limit))
            if refused:
                oldest = self._accepted[0] if self._accepted else self._last_admitted
                wait = max(1, math.ceil(oldest + RATE_WINDOW - now))
                retry = {"Retry-After": str(wait)} if config.rate_limit_retry_after else {}
                status = config.rate_limit_status
                return Decision(entry, status, {"error": "rate limit exceeded"}, headers=retry)
            self._accepted.append(now)
            self._last_admitted = now
        if path in HEALTH_PATHS:
            if method != "GET":
                return method_not_allowed(entry, "GET")
            if path == OPENAI_MODELS:
                model_list = [{"id": SANDBOX_MODEL, "object": "model", "owned_by": "roadmap"}]
                return Decision(entry, 200, {"object": "list", "data": model_list})
            return Decision(entry, 200, {"status": "ok", "inFlight": self._in_flight})
        if path not in CHAT_PATHS:
            return Decision(entry, 404, {"error": f"no such API path: {path}"})
        if method != "POST":
            return method_not_allowed(entry, "POST")
        if not isinstance(message, str):
            wanted = (
                "a 'messages' list ending in a user message"
                if path == OPENAI_CHAT
                else ("a string 'message'")
            )
            return Decision(entry, 400, {"error": f"body must be a JSON object with {wanted}"})
        capacity = entry["capacity"]
        if capacity is not None and self._in_flight + 1 > capacity:
            retry = {"Retry-After": "1"} if config.capacity_retry_after else {}
            return Decision(entry, 503, {"error": "over capacity"}, headers=retry)
        # Admitted: it takes `latency` whatever the answer, like a server that did the work.
        decision = Decision(entry, 200, admitted=True, wait=config.latency)
        rule = self._take_rule(config, message)
        if rule is not None:
            decision.status = rule.status
            decision.wait += rule.delay
            decision.hang = rule.hang
            decision.close = rule.close
            if rule.retry_after is not None and rule.retry_after_date:
                when = time.time() + rule.retry_after
                decision.headers["Retry-After"] = email.utils.formatdate(when, usegmt=True)
            elif rule.retry_after is not None:
                decision.headers["Retry-After"] = str(rule.retry_after)
            if rule.redirect is not None:
                decision.headers["Location"] = rule.redirect
            decision.gzip = rule.gzip
            decision.trickle = rule.trickle
            decision.trickle_head = rule.trickle_head
            if rule.body is not None:
                decision.raw = rule.body
            elif rule.code is not None or rule.message is not None:
                decision.payload = {"code": rule.code or "", "message": rule.message or ""}
            elif rule.size is not None:
                decision.padding = rule.size
            elif rule.echo_auth:
                decision.payload = {
                    "code": f"# Authorization: {auth}\n",
                    "message": f"you sent Authorization: {auth}",
                }
            elif rule.status != 200:
                decision.payload = {"error": f"sandbox rule answered {rule.status}"}
        elif config.failure_rate > 0 and self._rng.random() < config.failure_rate:
            decision.status = 500
            decision.payload = {"error": "sandbox failure (failure_rate)"}
        if (
            decision.status == 200
            and decision.raw is None
            and decision.payload is None
            and decision.padding is None
        ):
            decision.payload = chat_answer(message, model if isinstance(model, str) else "default")
        return decision

    def _take_rule(self, config: SandboxConfig, message: str) -> Rule | None:
        message = rule_text(message)
        for index, rule in enumerate(config.rules):
            if rule.match not in message:
                continue
            if rule.times is not None and self._rule_uses[index] >= rule.times:
                continue
            self._rule_uses[index] += 1
            return rule
        return None

    def settle(self, decision: Decision, status: int | None, answered: bool) -> None:
        """Close a request's log entry and free its in-flight slot (once).

        Called just before the answer's bytes go out, so a client that has its answer
        always finds the entry final and the slot free when it sends the next request.
        """
        with self._lock:
            if decision.settled:
                return
            decision.settled = True
            if decision.admitted:
                self._in_flight -= 1
            if not answered:
                self._give_back_quota_locked(decision)
            decision.entry["status"] = status
            decision.entry["answered"] = time.time() if answered else None

    def unanswer(self, decision: Decision) -> None:
        """The answer could not be written after all."""
        with self._lock:
            decision.entry["answered"] = None
            self._give_back_quota_locked(decision)

    def _give_back_quota_locked(self, decision: Decision) -> None:
        """A request counted against the quota that got no answer: it did not use it."""
        if decision.quota_epoch == self._epoch:
            self._quota_used -= 1
        decision.quota_epoch = None

    def record(self, decision: Decision) -> None:
        """Append the finished entry to the log file, if there is one."""
        with self._lock:
            line = json.dumps(decision.entry)
        with self._file_lock:
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()
