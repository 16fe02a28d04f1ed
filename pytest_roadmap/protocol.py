"""The wire protocols a run can speak: the BEAST MODE API's and OpenAI's chat completions.

Each protocol says where a task's request goes, what its body is, how an answer becomes
`{code, message}` plus the tokens it used, what an error body says and which path tells
whether the API is up. The trace headers every request carries, whichever the protocol, and
the HTTP statuses that redirect are here too. The client, the settings and the sandbox all
read them from here, so none repeats another's paths, headers or shapes.

Token counts are estimated as the common rule of thumb for English text and code, a token
per four characters, plus a few tokens per chat message for its framing. The sandbox counts
with the same rule, so on the sandbox a request's estimated prompt is exactly what it is
charged; a real server's tokenizer differs, and the `usage` of its answer corrects the
estimate (see tokens.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

BEAST, OPENAI = "beast", "openai"
NAMES = (BEAST, OPENAI)

CHARS_PER_TOKEN = 4
MESSAGE_TOKENS = 4  # each chat message's role and framing
REPLY_TOKENS = 3  # the framing of the answer the prompt asks for

# The HTTP answers that redirect: the client follows them, the sandbox's rules give them.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

# The headers that let a server (the sandbox's request log, a real API's access log) trace
# each request to its run, worker, task and attempt, whichever the protocol.
RUN_HEADER = "X-Roadmap-Run"
WORKER_HEADER = "X-Roadmap-Worker"
TASK_HEADER = "X-Roadmap-Task"
ATTEMPT_HEADER = "X-Roadmap-Attempt"
CHECK_HEADER = "X-Roadmap-Check"  # a check's own request (a rubric's grading), not the task's
# Each by the key the sandbox logs it under.
TRACE_HEADERS = {
    "worker": WORKER_HEADER,
    "task": TASK_HEADER,
    "attempt": ATTEMPT_HEADER,
    "run": RUN_HEADER,
    "check": CHECK_HEADER,
}

# Task-file limits on what only the OpenAI protocol sends.
MAX_TOKENS_RANGE = (1, 1_000_000)
TEMPERATURE_RANGE = (0.0, 2.0)

# A string, compiled by `re` on first use: the entry point imports this module in every run.
_FENCE = r"(?ms)^[ \t]*(`{3,}|~{3,})[^\n`]*\n(.*?)^[ \t]*\1[ \t]*$"


class AnswerError(ValueError):
    """An answer that does not have the protocol's shape; the words say what is missing."""


@dataclass(frozen=True)
class Usage:
    """Tokens one answer used, as the API counted them."""

    prompt: int
    completion: int

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    def to_dict(self) -> dict[str, int]:
        return {"prompt": self.prompt, "completion": self.completion, "total": self.total}

    @classmethod
    def from_dict(cls, data: object) -> Usage | None:
        """From `to_dict`'s shape (or None): how usage crosses the xdist wire."""
        if not isinstance(data, Mapping):
            return None
        prompt, completion = data.get("prompt"), data.get("completion")
        if not (isinstance(prompt, int) and isinstance(completion, int)):
            return None
        if not (_count(prompt) and _count(completion)):
            return None
        return cls(prompt, completion)

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt + other.prompt, self.completion + other.completion)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def count_tokens(text: str) -> int:
    """Tokens in `text` by the rule of thumb: one per four characters, rounded up."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """Tokens of a chat prompt: every message's text and framing, and the reply's."""
    total = REPLY_TOKENS
    for message in messages:
        content = message.get("content")
        total += MESSAGE_TOKENS + count_tokens(content if isinstance(content, str) else "")
    return total


def code_blocks(text: str) -> str:
    """The fenced code blocks of a Markdown answer, joined by a blank line ("" if none)."""
    blocks = [match.group(2) for match in re.finditer(_FENCE, text)]
    return "\n".join(block if block.endswith("\n") else block + "\n" for block in blocks)


@dataclass(frozen=True)
class Protocol:
    """One API's protocol. `chat_path` and `health_path` are below the API's base URL;
    `sandbox_base` is where the sandbox serves it (below its own address)."""

    name: str
    chat_path: str
    health_path: str
    sandbox_base: str
    # Task-file fields this protocol can send (the others are rejected at collection).
    fields: tuple[str, ...] = ()

    def messages(self, prompt: str, system: str | None = None) -> list[dict[str, str]]:
        """The chat messages of a prompt (the OpenAI shape; BEAST MODE sends the prompt)."""
        if self.name == BEAST:
            return [{"role": "user", "content": prompt}]
        first = [{"role": "system", "content": system}] if system else []
        return [*first, {"role": "user", "content": prompt}]

    def body(
        self,
        prompt: str,
        model: str,
        *,
        system: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> dict[str, Any]:
        """The JSON body of one task's request."""
        if self.name == BEAST:
            return {"message": prompt, "model": model, "useLLM": True}
        body: dict[str, Any] = {"model": model, "messages": self.messages(prompt, system)}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        return body

    def estimate(self, prompt: str, system: str | None = None) -> int:
        """Prompt tokens of a request by the rule of thumb (the completion is not known)."""
        return prompt_tokens(self.messages(prompt, system))

    def answer(self, data: Any) -> tuple[dict[str, Any], Usage | None]:
        """A 2xx answer's JSON as `{code, message, ...}` and the tokens it used; raises
        AnswerError saying what the answer lacks."""
        if self.name == BEAST:
            if not isinstance(data, dict) or not ("code" in data or "message" in data):
                raise AnswerError("its JSON has neither 'code' nor 'message'")
            return data, None
        if not isinstance(data, dict):
            raise AnswerError("its JSON is not an object with 'choices'")
        choices = data.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        message = first.get("message") if isinstance(first, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise AnswerError("its JSON has no choices[0].message.content text")
        return {"code": code_blocks(content), "message": content}, _openai_usage(data)

    def error_message(self, data: Any) -> str | None:
        """What an error answer says in the protocol's error shape, if it has one."""
        if self.name != OPENAI or not isinstance(data, dict):
            return None
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        return error if isinstance(error, str) else None


def _openai_usage(data: Mapping[str, Any]) -> Usage | None:
    usage = data.get("usage")
    if not isinstance(usage, Mapping):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not (isinstance(prompt, int) and isinstance(completion, int)):
        return None
    if not (_count(prompt) and _count(completion)):
        return None
    return Usage(prompt, completion)


PROTOCOLS: dict[str, Protocol] = {
    BEAST: Protocol(BEAST, "/api/codebase/chat", "/api/health", ""),
    OPENAI: Protocol(
        OPENAI,
        "/chat/completions",
        "/models",
        "/v1",
        fields=("system", "max_tokens", "temperature"),
    ),
}


def protocol(name: str) -> Protocol:
    return PROTOCOLS[name]
