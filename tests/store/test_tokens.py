"""The tokens-per-minute budget and the protocols' shapes, on their own and over each store."""

from __future__ import annotations

import math

import pytest

from pytest_roadmap.protocol import BEAST, OPENAI, PROTOCOLS, AnswerError, Usage, code_blocks
from pytest_roadmap.retry import TaskFailure
from pytest_roadmap.store import Store
from pytest_roadmap.tokens import DEFAULT_COMPLETION, KEY, Reservation, TokenBudget
from tests.support.stores import wait_past


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


def test_a_minutes_tokens_go_at_once_and_the_next_waits_for_the_oldest(store: Store) -> None:
    slept: list[float] = []
    budget = TokenBudget(store, 600.0, sleep=slept.append, margin=0.0)
    assert budget.window == 60.0
    first = budget.reserve(300)
    assert first.waited == 0.0 and first.tokens == 300  # an idle budget: at once
    assert budget.reserve(300).waited == 0.0  # the rest of the minute: at once too
    assert budget.reserve(1).waited > 59.0  # the next: once the first has left the minute
    assert slept and 59.0 < slept[-1] <= 60.0


def test_the_window_carries_the_margin(store: Store) -> None:
    budget = TokenBudget(store, 600.0, sleep=lambda s: None)
    assert budget.window == pytest.approx(61.2)
    budget.reserve(600)
    assert 61.0 < budget.reserve(1).waited <= 61.2


def test_usage_settles_the_reservation_both_ways_and_completions_are_learned(
    store: Store,
) -> None:
    budget = TokenBudget(store, 600.0, sleep=lambda s: None, margin=0.0)
    assert budget.estimate(100) == 100 + DEFAULT_COMPLETION
    assert budget.estimate(100, max_tokens=20) == 120
    big = budget.reserve(500)
    assert budget.settle(big, Usage(100, 50)) == -350  # 350 given back
    assert budget.reserve(450).waited == 0.0  # so the next fits at once
    assert budget.estimate(10) == 60  # the largest completion seen
    small = budget.reserve(0)
    assert budget.settle(small, Usage(10, 20)) == 30  # 30 charged: the minute is full
    assert budget.estimate(10) == 60  # a shorter completion does not lower it
    assert budget.reserve(1).waited > 59.0
    assert budget.settle(small, None) == 0  # no usage: the estimate stays


def test_a_request_that_never_went_gives_its_tokens_back(store: Store) -> None:
    budget = TokenBudget(store, 600.0, sleep=lambda s: None, margin=0.0)
    unsent = budget.reserve(600)
    budget.give_back(unsent)
    assert budget.reserve(600).waited == 0.0
    assert store.window_reserve(KEY, 1, 60.0, 600)[1] > store.clock() + 59.0


def test_a_request_over_the_limit_goes_alone_once_the_minute_is_empty(store: Store) -> None:
    budget = TokenBudget(store, 600.0, sleep=lambda s: None, margin=0.0)
    budget.reserve(100)
    assert 59.0 < budget.reserve(1000).waited <= 60.0


def test_bad_settings_are_one_clear_error(store: Store) -> None:
    with pytest.raises(ValueError, match="tokens per minute must be a positive number"):
        TokenBudget(store, 0.0)
    with pytest.raises(ValueError, match="tokens per minute must be a positive number"):
        TokenBudget(store, math.nan)
    with pytest.raises(ValueError, match=r"margin must be in \[0, 1\)"):
        TokenBudget(store, 600.0, margin=1.0)


class _Refusing:
    """A throttle that never lets a request out, as a paused run's does."""

    def acquire(self, *, probe: bool = False, admit: object = None) -> object:
        raise TaskFailure("not sent: every worker waits", transient=True, refused=True)

    def settle(self, ticket: object, status: object, headers: object, **kwargs: object) -> None:
        raise AssertionError("nothing was sent")


def test_a_chat_that_never_went_out_gives_its_tokens_back(store: Store) -> None:
    from pytest_roadmap.client import RoadmapClient

    budget = TokenBudget(store, 600.0, sleep=lambda s: None, margin=0.0)
    client = RoadmapClient(
        "http://127.0.0.1:9",
        model="m",
        throttle=_Refusing(),
        tokens=budget,
        protocol=PROTOCOLS[OPENAI],
    )
    try:
        reserved = budget.reserve(600)  # the whole minute, reserved in the attempt's setup
        with pytest.raises(TaskFailure, match="not sent"):
            client.chat("p", reserved=reserved)
        with pytest.raises(TaskFailure, match="not sent"):
            client.chat("p" * 400, max_tokens=400)  # reserved by the chat itself
    finally:
        client.close()
    assert budget.reserve(600).waited == 0.0


def test_a_send_held_up_past_its_tokens_time_moves_there_when_it_fits(store: Store) -> None:
    budget = TokenBudget(store, 600.0, sleep=lambda s: None, margin=0.0)
    on_time = budget.reserve(100)
    assert budget.admit(on_time)  # not late: nothing to do
    held_up = budget.reserve(200)
    wait_past(store, held_up.at + 0.05)  # held up, as in the request limit's queue
    assert budget.admit(held_up)  # moved to now: the minute after it counts it from now
    budget.reserve(300)  # fills the minute
    assert budget.reserve(1).waited >= 59.9  # once the first entry leaves


def test_a_send_held_up_past_its_tokens_time_is_not_sent_when_a_later_minute_is_full(
    store: Store,
) -> None:
    budget = TokenBudget(store, 600.0, sleep=lambda s: None, margin=0.0)
    first = budget.reserve(600)
    queued = budget.reserve(600)  # placed a minute after `first`
    assert queued.at == pytest.approx(first.at + 60.0, abs=1e-6)
    wait_past(store, first.at + 0.05)
    assert not budget.admit(first)  # moved to now, it would share a minute with `queued`
    from pytest_roadmap.client import RoadmapClient

    given_back: list[Reservation] = []
    give_back = budget.give_back

    def recorded(reservation: Reservation) -> None:
        given_back.append(reservation)
        give_back(reservation)

    budget.give_back = recorded  # type: ignore[method-assign]
    client = RoadmapClient("http://127.0.0.1:9", model="m", tokens=budget)
    try:
        with pytest.raises(TaskFailure, match="not sent: held up past its tokens' time"):
            client.chat("p", reserved=first)
    finally:
        client.close()
    assert given_back == [first]  # never sent: its tokens are free again
