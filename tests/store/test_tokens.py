"""The tokens-per-minute budget and the protocols' shapes, on their own and over each store."""

from __future__ import annotations

import pytest

from pytest_roadmap.protocol import BEAST, OPENAI, PROTOCOLS, AnswerError, Usage, code_blocks
from pytest_roadmap.store import Store
from pytest_roadmap.tokens import DEFAULT_COMPLETION, KEY, TokenBudget


def test_openai_answer_becomes_code_message_and_usage() -> None:
    content = (
        "Here:\n```python\ndef f():\n    return 1\n```\nand a test\n~~~\nassert f() == 1\n~~~\n"
    )
    answer, usage = PROTOCOLS[OPENAI].answer(
        {
            "choices": [{"message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42},
        }
    )
    assert answer == {
        "code": "def f():\n    return 1\n\nassert f() == 1\n",
        "message": content,
    }
    assert usage == Usage(12, 30) and usage.total == 42


@pytest.mark.parametrize(
    "data",
    [[], {"choices": []}, {"choices": [{"message": {"content": None}}]}, {"code": "x"}],
)
def test_openai_answer_without_content_is_refused(data: object) -> None:
    with pytest.raises(AnswerError, match=r"choices"):
        PROTOCOLS[OPENAI].answer(data)


def test_openai_usage_that_is_not_counts_is_none() -> None:
    answer = {"choices": [{"message": {"content": "no code"}}], "usage": {"prompt_tokens": "1"}}
    assert PROTOCOLS[OPENAI].answer(answer) == ({"code": "", "message": "no code"}, None)
    assert code_blocks("```\nunclosed") == ""


def test_bodies_and_error_shapes() -> None:
    beast, openai = PROTOCOLS[BEAST], PROTOCOLS[OPENAI]
    assert beast.body("p", "m") == {"message": "p", "model": "m", "useLLM": True}
    assert openai.body("p", "m", system="s", max_tokens=5, temperature=0.2) == {
        "model": "m",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "p"}],
        "max_tokens": 5,
        "temperature": 0.2,
    }
    assert openai.error_message({"error": {"message": "model not found"}}) == "model not found"
    assert beast.error_message({"error": {"message": "x"}}) is None


def test_a_request_waits_for_its_tokens(store: Store) -> None:
    slept: list[float] = []
    budget = TokenBudget(store, 600.0, sleep=slept.append, margin=0.0)  # 10 tokens/s
    assert budget.reserve(50) == 0.0  # an idle budget: at once
    budget.reserve(20)  # after the first request's 50 tokens: 5 s later
    assert slept and 4.9 <= slept[-1] <= 5.0


def test_usage_above_the_estimate_is_charged_and_completions_are_learned(store: Store) -> None:
    budget = TokenBudget(store, 600.0, sleep=lambda s: None, margin=0.0)
    assert budget.estimate(100) == 100 + DEFAULT_COMPLETION
    assert budget.estimate(100, max_tokens=20) == 120
    start = store.clock()
    budget.reserve(100)  # schedule busy for 10 s
    assert budget.settle(100, Usage(100, 50)) == 50  # 50 more: 5 s more
    tat = store.reserve_all([(KEY, 0.0, 1)])  # a zero-length look at the schedule
    assert 14.9 <= tat - start <= 15.1
    assert budget.estimate(10) == 60  # the largest completion seen
    budget.settle(10, Usage(10, 20))  # a shorter one does not lower it
    assert budget.estimate(10) == 60
    assert budget.settle(500, Usage(10, 5)) == 0  # over-estimates are not given back
    assert budget.settle(100, None) == 0
