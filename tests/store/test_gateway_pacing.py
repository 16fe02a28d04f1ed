"""What a gateway (a LiteLLM proxy with per-deployment rpm/tpm) says, and what the run learns.

The rules on their own, then over a real store of each backend: a wait under a provider
prefix, a budget with no reset, 429s of a window already known spent, and a task's 2xx
renewing the shared health answer.
"""

from __future__ import annotations

import pytest

from pytest_roadmap.health import HEALTH_KEY, OK, SUSPECT, HealthProbe
from pytest_roadmap.pacing import (
    MINUTE_FLOOR,
    RATE_HOLD,
    TURN_MARGIN,
    Limits,
    Pace,
    Pacer,
    Ticket,
    minute_turn,
    on_headers,
    on_throttled,
    parse_limits,
    parse_token_limits,
)
from pytest_roadmap.retry import retry_after_of
from pytest_roadmap.store import Store
from tests.store.test_health import Clock, Prober, health

# A moment 15 s into a calendar minute.
NOW = 1_700_000_040.0 + 15.0


# -- the wait a 429 asks for ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"llm_provider-retry-after": "60"}, 60.0),
        ({"LLM_Provider-Retry-After": "7"}, 7.0),
        ({"Retry-After": "2", "llm_provider-retry-after": "60"}, 2.0),  # the plain one wins
        ({"llm_provider-retry-after": "soon", "x-upstream-retry-after": "5"}, 5.0),
        ({"llm_provider-retry-after-ms": "1500"}, None),  # another unit: not read
        ({"retry-after-ms": "1500"}, None),
        ({}, None),
    ],
)
def test_a_wait_under_a_provider_prefix_is_read_where_retry_after_is_absent(
    headers: dict[str, str], expected: float | None
) -> None:
    assert retry_after_of(headers) == expected


# -- a budget with no reset ----------------------------------------------------------------


def test_a_budget_with_no_reset_lasts_until_the_calendar_minute_turns() -> None:
    said = {"x-ratelimit-limit-requests": "20", "x-ratelimit-remaining-requests": "9"}
    limits = parse_limits(said, NOW)
    assert limits == Limits(
        9,
        45.0 + TURN_MARGIN,
        "x-ratelimit-remaining-requests",
        "20 requests a minute (x-ratelimit-limit-requests, no reset)",
        floor=MINUTE_FLOOR,
    )
    assert minute_turn(NOW) == pytest.approx(45.0 + TURN_MARGIN)
    # Without a clock, or without the limit beside it, it is no budget (as before).
    assert parse_limits(said) is None
    assert parse_limits({"x-ratelimit-remaining-requests": "9"}, NOW) is None
    # A proxy that counts without enforcing says -2 once past its limit: none left.
    over = {"x-ratelimit-limit-requests": "6", "x-ratelimit-remaining-requests": "-2"}
    assert (parse_limits(over, NOW) or Limits(9, 0, "")).remaining == 0
    tokens = {"x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "0"}
    spent = parse_token_limits(tokens, NOW)
    assert spent is not None and (spent.remaining, spent.reset) == (0, 45.0 + TURN_MARGIN)


def test_a_budget_with_no_reset_is_spread_to_the_turn_and_paused_at_zero() -> None:
    pace = Pace(limit=4)
    said = {"x-ratelimit-limit-requests": "20", "x-ratelimit-remaining-requests": "9"}
    limits = parse_limits(said, NOW)
    assert limits is not None
    events = on_headers(pace, limits, NOW, 10.0)
    assert [e.reason for e in events] == [
        "the API announces 20 requests a minute (x-ratelimit-limit-requests, no reset)"
    ]
    # Nine left over the 45.5 s to the turn would be a send every 5 s, each waiting in the
    # limiter inside its attempt's timer: never thinner than a send every 2 s, and the
    # budget is used whole before the turn.
    assert 9 / (45.0 + TURN_MARGIN) < MINUTE_FLOOR
    assert pace.rate(10.0, NOW + 1) == pytest.approx(MINUTE_FLOOR)
    many = parse_limits({**said, "x-ratelimit-remaining-requests": "40"}, NOW)
    assert many is not None
    on_headers(pace, many, NOW, 10.0)
    assert pace.rate(10.0, NOW + 1) == pytest.approx(40 / (45.0 + TURN_MARGIN))
    turn = NOW + 45.0 + TURN_MARGIN
    assert pace.rate(10.0, turn + 0.1) == 10.0  # the next minute: the next answer says
    none_left = {"x-ratelimit-limit-requests": "20", "x-ratelimit-remaining-requests": "0"}
    at = NOW + 30.0
    limits = parse_limits(none_left, at)
    assert limits is not None
    on_headers(pace, limits, at, 10.0)
    assert pace.until == pytest.approx(turn) and pace.refused_until == pytest.approx(turn)


# -- 429s of a window already known spent ----------------------------------------------------


def test_a_429_of_a_window_already_spent_does_not_cut_the_rate_again() -> None:
    pace = Pace(limit=4, refused_until=NOW + 45.0)  # an answer said 0 left until the turn
    # Requests sent before the turn that come back 429 say what the run knew.
    assert on_throttled(pace, NOW + 1.0, NOW + 2.0, 3.0, 10.0) is None
    assert on_throttled(pace, NOW + 44.0, NOW + 44.5, 0.0, 10.0) is None
    assert pace.peak == 0.0
    # One sent after the turn and refused is news: the rate is cut.
    event = on_throttled(pace, NOW + 46.0, NOW + 46.1, 2.0, 10.0)
    assert event is not None and pace.peak == pytest.approx(2.0)


def test_a_429_with_a_wait_holds_its_window_for_that_long() -> None:
    pace = Pace(limit=4)
    event = on_throttled(pace, NOW, NOW + 0.1, 1.0, 10.0, hold=60.0)
    assert event is not None and pace.refused_until == pytest.approx(NOW + 60.1)
    # Past RATE_HOLD but inside the minute the server asked for: the same refusal.
    assert on_throttled(pace, NOW + RATE_HOLD + 1.0, NOW + 5.0, 0.0, 10.0) is None
    assert pace.peak == pytest.approx(1.0)
    # Without a wait, the window is RATE_HOLD long, as before.
    plain = Pace(limit=4)
    on_throttled(plain, NOW, NOW + 0.1, 4.0, 10.0)
    assert plain.refused_until == pytest.approx(NOW + 0.1 + RATE_HOLD)


# -- the Pacer over a store ------------------------------------------------------------------


def _pacer(store: Store) -> Pacer:
    store.gate_set_limit("gate", 4)
    return Pacer(store, gate_key="gate", maximum=4, ceiling=10.0, max_wait=300.0)


def test_a_gateway_429_pauses_for_its_prefixed_wait_and_cuts_once(store: Store) -> None:
    first, second = _pacer(store), _pacer(store)
    sent = store.clock()
    wait = retry_after_of({"llm_provider-retry-after": "60"})
    first.answered(Ticket(sent, 0, 4), 429, {}, retry_after=wait)
    pace = first.read()
    assert pace.until >= sent + 60.0 and pace.until_reason == "Retry-After 60 s on a 429"
    peak = pace.peak
    # A request of the same minute sent later than RATE_HOLD after the cut, refused.
    second.answered(Ticket(pace.cut_at + RATE_HOLD + 2.0, 0, 4), 429, {}, retry_after=wait)
    assert second.read().peak == peak
    rates = [e for e in first.events_since(0)[1] if e.kind == "rate"]
    assert len(rates) == 1


def test_a_gateway_budget_at_zero_pauses_until_the_turn(store: Store) -> None:
    pacer = _pacer(store)
    said = {"x-ratelimit-limit-requests": "20", "x-ratelimit-remaining-requests": "0"}
    before = store.clock()
    pacer.answered(Ticket(before, 0, 4), 200, said)
    pace = pacer.read()
    assert before + minute_turn(before) - 0.1 <= pace.until <= store.clock() + 61.0
    assert pace.until_reason == "x-ratelimit-remaining-requests 0"
    # A request sent before the answer came back, refused: no cut.
    pacer.answered(Ticket(before, 0, 4), 429, {})
    assert pacer.read().peak == 0.0


# -- health, renewed by a task's 2xx ---------------------------------------------------------


def test_a_task_answer_renews_the_shared_ok_so_no_probe_is_needed(store: Store) -> None:
    prober, clock = Prober((True, "ok")), Clock()
    probe = health(store, prober, clock)
    assert probe.wait_healthy() is None and prober.probes == 1
    store.put(HEALTH_KEY, OK, ttl=0.001)  # the probe's answer has expired
    probe.confirm()
    assert store.get(HEALTH_KEY) == OK
    assert probe.wait_healthy() is None and prober.probes == 1


def test_a_task_answer_never_overrides_a_doubt(store: Store) -> None:
    prober, clock = Prober((True, "ok")), Clock()
    probe = health(store, prober, clock)
    other: HealthProbe = health(store, prober, clock)
    other.invalidate()  # another worker's task met a 503
    probe.confirm()
    assert store.get(HEALTH_KEY) == f"down: {SUSPECT}"
