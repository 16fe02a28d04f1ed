"""What the sandbox answers: one request's `Decision`, the deterministic chat answer, the
OpenAI shapes of answers and errors, and hostile bodies made in pieces.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from pytest_roadmap.checks.rubric import ANSWER_END, ANSWER_START, GRADER_INTRO, REQUIREMENT
from pytest_roadmap.protocol import count_tokens, prompt_tokens
from pytest_roadmap.sandbox.book import book_answer

SANDBOX_MODEL = "sandbox"
PIECE = 1 << 16
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")


def chat_answer(message: str, model: str) -> dict[str, str]:
    """A deterministic answer: a grading request's verdict (rubric checks), the answer
    book's answer for one of this repository's roadmap prompts, or else a small Python
    function named after the prompt's first words."""
    if message.startswith(GRADER_INTRO):
        return {"code": "", "message": grade(message)}
    found = book_answer(message)
    if found is not None:
        return {"code": found[0], "message": found[1]}
    words = _WORD.findall(message)[:4]
    name = "_".join(word.lower() for word in words) or "task"
    summary = " ".join(words) or "empty prompt"
    code = f'def solve_{name}() -> str:\n    """{summary}."""\n    return {summary!r}\n'
    return {"code": code, "message": f"Sketch for '{summary}' from {model}."}


def grade(prompt: str) -> str:
    """The sandbox's grader: PASS when the answer holds every `quoted` term of the
    requirement (whatever the case), FAIL naming the first it lacks."""
    requirement = next(
        (line[len(REQUIREMENT) :] for line in prompt.splitlines() if line.startswith(REQUIREMENT)),
        "",
    )
    start, end = prompt.find(ANSWER_START), prompt.rfind(ANSWER_END)
    answer = prompt[start + len(ANSWER_START) : end] if 0 <= start < end else ""
    for term in re.findall(r"`([^`]+)`", requirement):
        if term.casefold() not in answer.casefold():
            return f"FAIL: the answer never mentions {term}."
    return "PASS: the answer meets the requirement."


def rule_text(prompt: str) -> str:
    """What a rule's `match` is looked for in: the prompt; for a grading request only its
    first line and its requirement, so that the rules of the task it grades (whose prompt
    and answer it quotes) do not answer it."""
    if not prompt.startswith(GRADER_INTRO):
        return prompt
    lines = [line for line in prompt.splitlines() if line.startswith(REQUIREMENT)]
    return "\n".join([GRADER_INTRO, *lines[:1]])


@dataclass
class Decision:
    """What the API side decided for one request, before any waiting."""

    entry: dict[str, Any]
    status: int
    payload: Any = None
    raw: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    wait: float = 0.0
    hang: bool = False
    close: bool = False
    padding: int | None = None  # `size`: the answer's code is this many filler bytes
    gzip: bool = False
    trickle: float = 0.0
    trickle_head: bool = False
    admitted: bool = False  # counted in flight until settled
    settled: bool = False
    quota_epoch: int | None = None  # counted against the quota of this epoch, if at all


_PADDED = (b'{"code": "', b'", "message": "a padded answer"}')


def answer_pieces(decision: Decision) -> Iterator[bytes]:
    """The body of a hostile answer, in pieces of at most PIECE bytes (filler included)."""
    if decision.padding is None:
        payload = decision.raw if decision.raw is not None else json.dumps(decision.payload)
        data = payload.encode("utf-8")
        for start in range(0, len(data), PIECE):
            yield data[start : start + PIECE]
        return
    yield _PADDED[0]
    left = decision.padding
    filler = b"#" * PIECE
    while left > 0:
        yield filler[: min(left, PIECE)]
        left -= PIECE
    yield _PADDED[1]


def answer_length(decision: Decision) -> int:
    if decision.padding is None:
        return sum(len(piece) for piece in answer_pieces(decision))
    return len(_PADDED[0]) + decision.padding + len(_PADDED[1])


def openai_prompt(body: Any) -> str | None:
    """The prompt of a chat completion request: its last message, when that is the user's."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return None
    last = messages[-1]
    content = last.get("content")
    return content if last.get("role") == "user" and isinstance(content, str) else None


def as_openai(decision: Decision, body: Any) -> None:
    """The decision in the OpenAI protocol's shapes: a chat completion with its usage for
    an answer, `{"error": {"message": ...}}` for an error; a raw body stays as it is."""
    payload = decision.payload
    if not isinstance(payload, dict) or decision.raw is not None:
        return
    if 200 <= decision.status < 300 and "code" in payload:
        decision.payload = _completion(decision, payload, body)
    elif "error" in payload or decision.status >= 400:
        words = payload.get("error") or payload.get("status") or HTTPStatus(decision.status).phrase
        kind = "rate_limit_exceeded" if decision.status == 429 else "sandbox_error"
        decision.payload = {"error": {"message": str(words), "type": kind, "code": None}}


_COMPLETION_IDS = itertools.count(1)


def _completion(decision: Decision, answer: Mapping[str, Any], body: Any) -> dict[str, Any]:
    """A chat completion for an answer `{code, message}`: the message, then the code in a
    fenced block; cut at the request's `max_tokens`, counted as protocol.py counts."""
    code = str(answer.get("code", ""))
    if code and not code.endswith("\n"):
        code += "\n"  # else the closing fence would share the code's last line
    content = f"{answer.get('message', '')}\n\n```python\n{code}```\n"
    max_tokens = body.get("max_tokens") if isinstance(body, dict) else None
    finish = "stop"
    if (
        isinstance(max_tokens, int)
        and not isinstance(max_tokens, bool)
        and 1 <= max_tokens < count_tokens(content)
    ):
        content = content[: max_tokens * 4]
        finish = "length"
    messages = body.get("messages") if isinstance(body, dict) else None
    listed = messages if isinstance(messages, list) else []
    prompt = prompt_tokens([m for m in listed if isinstance(m, dict)])
    completion = count_tokens(content)
    decision.entry["usage"] = {
        "prompt": prompt,
        "completion": completion,
        "total": prompt + completion,
    }
    model = body.get("model") if isinstance(body, dict) else None
    return {
        "id": f"chatcmpl-sandbox-{next(_COMPLETION_IDS)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model if isinstance(model, str) else SANDBOX_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def method_not_allowed(entry: dict[str, Any], allow: str) -> Decision:
    return Decision(
        entry, 405, {"error": f"method not allowed; use {allow}"}, headers={"Allow": allow}
    )
