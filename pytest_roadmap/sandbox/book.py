"""The sandbox's answer book: real answers for the prompts of this repository's own
roadmap (roadmap_tasks/), so that their checks pass on the sandbox as they would against a
good model. A prompt that holds none of the phrases gets the generated sketch
(answers.chat_answer), which most checks reject: the sandbox gives both kinds of answer,
decided by the prompt alone.
"""

from __future__ import annotations

# (phrase the prompt holds, code, message)
BOOK: tuple[tuple[str, str, str], ...] = (
    (
        "Record every failed",
        '''"""Request tracking that counts failures in the error rate."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RequestRecord:
    endpoint: str
    status: int
    latency_ms: float

    @property
    def failed(self) -> bool:
        return self.status >= 400


@dataclass
class RequestTracker:
    """Every request, failed ones included, with its status, endpoint and latency."""

    records: list[RequestRecord] = field(default_factory=list)

    def record(self, endpoint: str, status: int, latency_ms: float) -> None:
        self.records.append(RequestRecord(endpoint, status, latency_ms))

    def error_rate(self, endpoint: str | None = None) -> float:
        chosen = [r for r in self.records if endpoint is None or r.endpoint == endpoint]
        if not chosen:
            return 0.0
        return sum(r.failed for r in chosen) / len(chosen)
''',
        "RequestTracker records every request, failed ones included, so error_rate reflects "
        "reality.",
    ),
    (
        "Track the cost of every model call",
        '''"""Real-time cost tracking per request, model, user, day and project."""

from __future__ import annotations

from collections import defaultdict
from datetime import date

# US dollars per million tokens: (prompt, completion).
PRICES = {"small": (0.15, 0.60), "large": (2.50, 10.00)}


class CostTracker:
    """Running totals of what model calls cost, as they happen."""

    def __init__(self, prices: dict[str, tuple[float, float]] | None = None) -> None:
        self.prices = prices or PRICES
        self.totals: dict[tuple[str, str], float] = defaultdict(float)

    def record(
        self, model: str, tokens_in: int, tokens_out: int, *, user: str, project: str,
        day: date | None = None,
    ) -> float:
        price_in, price_out = self.prices[model]
        cost = (tokens_in * price_in + tokens_out * price_out) / 1_000_000
        day = day or date.today()
        for key in (("model", model), ("user", user), ("project", project),
                    ("day", day.isoformat()), ("all", "all")):
            self.totals[key] += cost
        return cost

    def total(self, kind: str = "all", name: str = "all") -> float:
        return self.totals.get((kind, name), 0.0)
''',
        "CostTracker.record prices each call and keeps running totals per model, user, "
        "project and day.",
    ),
    (
        "one concrete next step",
        '''"""Errors that say what went wrong, which input caused it and what to do next."""

from __future__ import annotations


def error_response(what: str, field: str, value: object, fix: str) -> dict[str, object]:
    """The body of a failed request: the problem, the input that caused it, one next step."""
    return {
        "error": what,
        "input": {"field": field, "value": value},
        "next_step": fix,
    }


def missing_field(field: str) -> dict[str, object]:
    return error_response(
        f"'{field}' is required", field, None, f"Add '{field}' to the request body and retry."
    )
''',
        "error_response names the problem, the input that caused it and one next step.",
    ),
    (
        "Give the baseline as one JSON document",
        """{
  "endpoints": {
    "/api/codebase/chat": {"p50_ms": 180, "p95_ms": 420, "p99_ms": 900,
                           "throughput_rps": 35, "error_rate": 0.012},
    "/api/health": {"p50_ms": 2, "p95_ms": 5, "p99_ms": 9,
                    "throughput_rps": 900, "error_rate": 0.0}
  },
  "cache_hit_rate": 0.31,
  "model_selection_accuracy": 0.87
}
""",
        "The baseline of the main endpoints, to compare later work with.",
    ),
)


def book_answer(prompt: str) -> tuple[str, str] | None:
    """(code, message) of the book's answer for `prompt`, or None."""
    for phrase, code, message in BOOK:
        if phrase in prompt:
            return code, message
    return None
