"""Token usage and its cost, as the reports, the JUnit properties and the summary show them.

A task's usage is what its answers' `usage` said (the OpenAI protocol; the BEAST MODE API
reports none). Prices are per million tokens, prompt and completion apart; with only one
of them given the other counts as 0, and with neither there is no cost at all.
"""

from __future__ import annotations

from typing import Any

from pytest_roadmap.protocol import Usage

# JUnit properties of a task whose answer reported usage (`cost` only with a price).
USAGE_PROPERTIES = ("tokens_prompt", "tokens_completion", "tokens_total", "cost")
PER = 1_000_000


def priced(price_in: float | None, price_out: float | None) -> bool:
    return price_in is not None or price_out is not None


def cost(usage: Usage | None, price_in: float | None, price_out: float | None) -> float | None:
    """What `usage` cost at these prices; None without usage or without a price."""
    if usage is None or not priced(price_in, price_out):
        return None
    return (usage.prompt * (price_in or 0.0) + usage.completion * (price_out or 0.0)) / PER


def shown_cost(value: float | None) -> str:
    """A cost for people: "$0.0123", "-" when there is none."""
    if value is None:
        return "-"
    return f"${value:.4f}" if value < 100 else f"${value:,.2f}"


def shown_usage(usage: Usage | None) -> str:
    """ "1,200 tokens (1,000 prompt + 200 completion)", "-" when there is none."""
    if usage is None:
        return "-"
    return f"{usage.total:,} tokens ({usage.prompt:,} prompt + {usage.completion:,} completion)"


def usage_of(answer: Any) -> dict[str, int] | None:
    """The usage a client answer carries, in the wire's shape (None if it has none)."""
    usage = Usage.from_dict(answer.get("usage")) if isinstance(answer, dict) else None
    return usage.to_dict() if usage is not None else None


def usage_properties(
    usage: Any, price_in: float | None, price_out: float | None
) -> list[tuple[str, Any]]:
    """The JUnit properties of an attempt's usage (none without usage)."""
    found = Usage.from_dict(usage)
    if found is None:
        return []
    properties: list[tuple[str, Any]] = [
        ("tokens_prompt", found.prompt),
        ("tokens_completion", found.completion),
        ("tokens_total", found.total),
    ]
    value = cost(found, price_in, price_out)
    if value is not None:
        properties.append(("cost", round(value, 6)))
    return properties
