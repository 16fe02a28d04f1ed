"""The learned pace: its rules on their own, and the Pacer over a real store of each backend."""

from __future__ import annotations

import dataclasses
import math
import threading

import pytest

from pytest_roadmap import pacing
from pytest_roadmap.pacing import (
    BETA,
    CUBIC_K,
    PROBE_WAIT,
    Limits,
    Pace,
    Pacer,
    QuotaExhausted,
    Ticket,
    cubic,
    on_headers,
    on_overload,
    on_ramp_accept,
    on_success,
    on_throttled,
    parse_limits,
)
from pytest_roadmap.ratelimit import MARGIN, RateLimiter
from pytest_roadmap.store import Spacing, Store

# -- concurrency -------------------------------------------------------------------------


def test_a_refusal_halves_the_limit_once_per_burst() -> None:
    pace = Pace(limit=6)
    event = on_overload(pace, 0, 10.0, "503 from the API")
    assert event is not None and (event.old, event.new) == (6, 3)
    assert (pace.limit, pace.epoch, pace.refused_at) == (3, 1, 6)
    # Refusals of requests sent before the cut are the same burst: nothing changes.
    assert on_overload(pace, 0, 10.1, "503 from the API") is None
    assert pace.limit == 3
    # One sent after it is news: 3 -> 2 (rounded up), then 1, and never below.
    assert on_overload(pace, 1, 10.2, "503") is not None and pace.limit == 2
    assert on_overload(pace, 2, 10.3, "503") is not None and pace.limit == 1
    assert on_overload(pace, 3, 10.4, "503") is None and pace.limit == 1


def test_the_limit_grows_by_one_per_round_while_in_use() -> None:
    pace = Pace(limit=2, epoch=4, changed_at=0.0)
    assert on_success(pace, 4, True, 1.0, maximum=4) is None  # one answer of a round of 2
    event = on_success(pace, 4, True, 1.1, maximum=4)
    assert event is not None and (pace.limit, pace.epoch) == (3, 5)
    # Not while no task waits for a slot, not for answers of an older epoch, not above -n.
    assert on_success(pace, 5, False, 1.2, maximum=4) is None
    assert on_success(pace, 4, True, 1.2, maximum=4) is None
    for _ in range(3):
        on_success(pace, 5, True, 1.3, maximum=4)
    assert pace.limit == 4
    for _ in range(8):
        assert on_success(pace, 6, True, 1.4, maximum=4) is None
    assert pace.limit == 4


def test_a_probe_past_the_refused_level_waits_and_backs_off() -> None:
    pace = Pace(limit=3)
    on_overload(pace, 0, 0.0, "503")  # refused at 3: now 2
    assert (pace.limit, pace.refused_at, pace.probe_wait) == (2, 3, PROBE_WAIT)
    # A round of answers, but the probe back to 3 waits PROBE_WAIT after the cut.
    assert on_success(pace, 1, True, 0.5, 6) is None
    assert on_success(pace, 1, True, 0.6, 6) is None
    assert pace.limit == 2
    event = on_success(pace, 1, True, PROBE_WAIT + 0.1, 6)
    assert event is not None and pace.limit == 3 and "probing 3" in event.reason
    # The probe fails: back to 2, and the next probe waits twice as long.
    on_overload(pace, 2, 3.0, "503")
    assert (pace.limit, pace.probe_wait) == (2, 2 * PROBE_WAIT)
    for _ in range(4):
        on_success(pace, 3, True, 3.0 + PROBE_WAIT + 0.5, 6)
    assert pace.limit == 2
    on_success(pace, 3, True, 3.0 + 2 * PROBE_WAIT + 0.1, 6)
    assert pace.limit == 3


# -- rate --------------------------------------------------------------------------------


def test_a_429_cuts_the_rate_to_what_the_server_accepted_then_cubic_growth() -> None:
    pace = Pace(limit=3)
    assert pace.rate(10.0, 0.0) == 10.0
    event = on_throttled(pace, sent_at=0.3, now=0.4, accepted=4.0, ceiling=10.0)
    assert event is not None and event.old == 10.0
    assert pace.rate(10.0, 0.4) == pytest.approx(BETA * 4.0)
    # Refusals of the same burst (sent within a second of the cut) change nothing.
    assert on_throttled(pace, sent_at=1.0, now=1.1, accepted=3.0, ceiling=10.0) is None
    # Flat near what the server accepted for several seconds, then growing, never above
    # the configured rate.
    assert 0.98 * 4.0 <= pace.rate(10.0, 0.4 + CUBIC_K) <= 4.0
    assert pace.rate(10.0, 0.4 + 8.0) < 4.0 * 1.02
    assert pace.rate(10.0, 0.4 + 20.0) > 8.0
    assert pace.rate(10.0, 0.4 + 60.0) == 10.0


def test_a_failed_probe_keeps_the_learned_rate_a_lower_limit_lowers_it() -> None:
    pace = Pace(limit=3)
    on_throttled(pace, 0.0, 0.0, 4.0, 10.0)
    # Refused above what held (the curve went past 4 after a while): 4 holds, not 3.
    on_throttled(pace, 9.9, 10.0, 3.0, 10.0)
    assert pace.peak == 4.0
    # Refused at or below it: the server's limit went down, and the rate follows.
    on_throttled(pace, 11.5, 11.6, 2.0, 10.0)
    assert pace.peak == 2.0


def test_a_cut_judged_on_one_answer_ramps_until_refused_then_keeps_the_refused_rate() -> None:
    # nginx's limit_req at 4/s with no burst: the health probe accepted, the next send refused.
    pace = Pace(limit=3)
    event = on_throttled(pace, 0.1, 0.1, 1.0, 10.0, thin=True)
    assert event is not None and "doubling until refused" in event.reason
    assert pace.ramp and pace.rate(10.0, 0.5) == pytest.approx(BETA)  # the hold: no growth
    hold_end = 0.1 + pacing.RATE_HOLD
    assert pace.rate(10.0, hold_end + 1.0) == pytest.approx(2 * BETA)
    assert pace.rate(10.0, hold_end + 2.0) == pytest.approx(4 * BETA)
    assert pace.rate(10.0, hold_end + 10.0) == 10.0  # never above the configured rate
    # Refused 0.3 s after the last send accepted, 2 accepted in the second while the run
    # ramped up through it: the refused send's rate says more (never above the ramp's).
    on_throttled(pace, 3.0, 3.0, 2.0, 10.0, gap=0.3, thin=True)
    assert not pace.ramp and pace.peak == pytest.approx(pacing.RAMP_KEEP / 0.3)
    # A ramp runs once: a server allowing one a second is not ramped past again and again.
    on_throttled(pace, 20.0, 20.0, 1.0, 10.0, thin=True)
    assert not pace.ramp and pace.rate(10.0, 22.0) < 1.1 * pace.peak


def test_a_ramps_end_is_judged_by_the_closest_two_sends_it_accepted() -> None:
    # nginx at 7 r/s, 250 ms answers: the ramp's sends, accepted no closer than 1/7 s.
    pace = Pace(limit=3)
    on_throttled(pace, 0.1, 0.1, 1.0, 10.0, thin=True)
    refused_at = 0.1 + pacing.RATE_HOLD + 3.0  # the ramp is at 8 * BETA then
    for sent in (refused_at - 0.62, refused_at - 0.44, refused_at - 0.28):
        assert on_ramp_accept(pace, sent, sent + 0.25, 10.0) is None  # kept while it ramps
    # Refused 0.12 s after a send still out; the cut sees the three answered.
    on_throttled(pace, refused_at, refused_at, 2.0, 10.0, gap=0.3, thin=True)
    assert not pace.ramp and pace.peak == pytest.approx(1 / 0.16)
    assert pace.ended_rate == pytest.approx(8 * BETA)
    # The send still out is answered: accepted 0.15 s after the one before it.
    event = on_ramp_accept(pace, refused_at - 0.13, refused_at + 0.12, 10.0)
    assert event is not None and "accepted 0.15 s apart" in event.reason
    assert pace.peak == pytest.approx(1 / 0.15)
    # Sends after the refused one say nothing; a closer pair never lifts it past the rate
    # in force at the refusal.
    assert on_ramp_accept(pace, refused_at + 0.05, refused_at + 0.3, 10.0) is None
    on_ramp_accept(pace, refused_at - 0.05, refused_at + 0.3, 10.0)
    assert pace.peak == pytest.approx(pace.ended_rate)
    # A later cut is judged afresh: the ramp's sends have nothing more to say.
    on_throttled(pace, refused_at + 20.0, refused_at + 20.0, 5.0, 10.0)
    assert pace.ended_by == 0.0 and pace.ramp_sends == []
    peak = pace.peak
    assert on_ramp_accept(pace, refused_at + 19.9, refused_at + 20.1, 10.0) is None
    assert pace.peak == peak


def test_refused_just_under_a_ramps_judgement_steps_down_once_then_follows_the_count() -> None:
    # The ramp's end judged 4.4/s behind a server allowing 4/s (two accepted sends looked
    # closer than they arrived). Refused on CUBIC's plateau with "1 accepted in the second
    # before", the run fell to 0.95/s and took 3.5x its bound.
    pace = Pace(limit=1)
    on_throttled(pace, 0.1, 0.1, 1.0, 10.0, thin=True)
    ended = 0.1 + pacing.RATE_HOLD + 3.0
    on_throttled(pace, ended, ended, 2.0, 10.0, gap=0.9 / 4.4, thin=True)
    assert pace.peak == pytest.approx(4.4) and pace.ended_by == ended
    plateau = ended + 3.0
    assert BETA * 4.4 <= pace.rate(10.0, plateau) < 4.4
    on_throttled(pace, plateau, plateau, 1.0, 10.0)
    assert pace.peak == pytest.approx(BETA * 4.4) and pace.ended_by == 0.0
    # Refused again under it: the server's limit went down, and the rate follows the count.
    again = plateau + 3.0
    on_throttled(pace, again, again, 2.0, 10.0)
    assert pace.peak == 2.0


def test_a_cut_judged_on_a_whole_second_does_not_ramp() -> None:
    pace = Pace(limit=3)
    on_throttled(pace, 0.4, 0.4, 4.0, 10.0, gap=0.1)
    assert not pace.ramp and pace.peak == 4.0  # the gap is read only to end a ramp


def _refused_after(store: Store, accepted: tuple[float, ...], status: int, at: float) -> Pace:
    """A fresh pace at concurrency 1; sends `accepted` seconds before the one sent `at` were
    answered 200, and that one `status`. Each call on a store takes its own `at` (the
    accepted counts are kept by send time)."""
    pacer = _pacer(store)
    store.put(pacing.PACE_KEY, Pace(limit=1).to_json())
    for before in accepted:
        pacer.answered(Ticket(at - before, 0, 1), 200, {})
    pacer.answered(Ticket(at, 0, 1), status, {})
    return pacer.read()


def test_the_pacer_ramps_when_the_server_had_answered_one_request(store: Store) -> None:
    now = store.clock()
    pace = _refused_after(store, (0.1,), 429, now)  # the health probe, then a task
    assert pace.ramp and pace.ramped and pace.peak == 1.0
    # A server counting requests per second takes the first few at full speed: no ramp.
    pace = _refused_after(store, (0.3, 0.2, 0.1), 429, now + 5.0)
    assert not pace.ramp and pace.peak == 3.0


def test_a_send_refused_closer_than_the_accepted_ones_ramps(store: Store) -> None:
    # nginx's limit_req answering 503: the health probes between refusals are accepted, 0.35
    # s apart, and the task sent 0.1 s after each is refused. "3 accepted" is their pace.
    now = store.clock()
    pace = _refused_after(store, (0.8, 0.45, 0.1), 503, now)
    assert pace.ramp and pace.peak == 3.0
    # Sent as far apart as the accepted ones: the count is the server's, no ramp.
    pace = _refused_after(store, (0.75, 0.5, 0.25), 503, now + 5.0)
    assert not pace.ramp and pace.peak == 3.0


def test_the_pacer_judges_a_ramps_end_again_by_the_sends_answered_after_it(store: Store) -> None:
    pacer = _pacer(store)
    now = store.clock()
    # Ramping for 3 s after its hold: at 8 * BETA now.
    cut_at = now - pacing.RATE_HOLD - 3.0
    ramping = Pace(limit=3, peak=1.0, cut_at=cut_at, ramp=True, ramped=True)
    store.put(pacing.PACE_KEY, ramping.to_json())
    # The ramp's last sends, 0.3 s apart, then 0.16 s: only the first two are answered
    # when the send after them is refused.
    for sent in (now - 0.6, now - 0.3):
        pacer.answered(Ticket(sent, 0, 3, ramp=True), 200, {})
    pacer.answered(Ticket(now, 0, 3, ramp=True), 429, {})
    judged = pacer.read().peak
    assert judged < 1 / 0.3 + 0.01
    pacer.answered(Ticket(now - 0.14, 0, 3, ramp=True), 200, {})
    pace = pacer.read()
    assert not pace.ramp and pace.peak == pytest.approx(1 / 0.16)
    # A send of no ramp is never kept or read against it.
    store.put(pacing.PACE_KEY, dataclasses.replace(pace, peak=judged).to_json())
    pacer.answered(Ticket(now - 0.05, 0, 3), 200, {})
    assert pacer.read().peak == judged


def test_a_503_sent_closer_than_the_accepted_ones_is_a_rate_whatever_the_concurrency(
    store: Store,
) -> None:
    # nginx's limit_req answering 503 at three in flight: the health probes 0.35 s apart
    # accepted, the task 0.1 s after the last refused. Read as load, the concurrency came
    # down to 1 (a refusal and a probe each) before the rate was cut.
    pacer = _pacer(store, maximum=3)
    now = store.clock()
    store.put(pacing.PACE_KEY, Pace(limit=3).to_json())
    for before in (0.8, 0.45, 0.1):
        pacer.answered(Ticket(now - before, 0, 3), 200, {})
    pacer.answered(Ticket(now, 0, 3), 503, {})
    pace = pacer.read()
    assert pace.limit == 3 and pace.peak == 3.0 and pace.ramp
    # A 503 at the spacing the server accepted is load: the concurrency is cut, not the rate.
    later = now + 5.0
    store.put(pacing.PACE_KEY, Pace(limit=3).to_json())
    for before in (0.3, 0.2, 0.1):
        pacer.answered(Ticket(later - before, 0, 3), 200, {})
    pacer.answered(Ticket(later, 0, 3), 503, {})
    pace = pacer.read()
    assert pace.limit == 2 and pace.peak == 0.0


def test_cubic_starts_at_beta_and_passes_its_peak_at_k() -> None:
    assert cubic(5.0, 0.0) == pytest.approx(BETA * 5.0)
    assert cubic(5.0, CUBIC_K) == pytest.approx(5.0)
    assert cubic(5.0, CUBIC_K + 1) > 5.0


def test_a_429_with_nothing_measured_halves_the_rate() -> None:
    pace = Pace(limit=1)
    on_throttled(pace, 0.0, 0.0, None, 8.0)
    assert pace.rate(8.0, 0.0) == pytest.approx(BETA * 4.0)


# -- the server's words ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            {"RateLimit-Limit": "5", "RateLimit-Remaining": "3", "RateLimit-Reset": "1"},
            Limits(3, 1.0, "RateLimit-Remaining", "5 requests (RateLimit-Limit)"),
        ),
        (
            {"RateLimit": '"default";r=0;t=2', "RateLimit-Policy": '"default";q=5;w=1'},
            Limits(0, 2.0, "RateLimit", "5 requests per 1 s (RateLimit-Policy)", 5.0),
        ),
        (
            {
                "x-ratelimit-limit-requests": "60",
                "x-ratelimit-remaining-requests": "59",
                "x-ratelimit-reset-requests": "1s",
            },
            Limits(
                59,
                1.0,
                "x-ratelimit-remaining-requests",
                "60 requests (x-ratelimit-limit-requests)",
            ),
        ),
        (
            {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0.5s"},
            Limits(0, 360.5, "x-ratelimit-remaining-requests", ""),
        ),
        (
            {"x-ratelimit-remaining-requests": "1", "x-ratelimit-reset-requests": "250ms"},
            Limits(1, 0.25, "x-ratelimit-remaining-requests", ""),
        ),
        ({"RateLimit-Remaining": "many", "RateLimit-Reset": "1"}, None),
        ({"RateLimit-Remaining": "3", "RateLimit-Reset": "soon"}, None),
        ({"RateLimit": "nonsense"}, None),
        ({}, None),
    ],
)
def test_rate_limit_headers(headers: dict[str, str], expected: Limits | None) -> None:
    assert parse_limits(headers) == expected


def test_headers_with_a_policy_pace_its_steady_rate() -> None:
    pace = Pace(limit=3)
    on_headers(pace, Limits(1, 1.0, "RateLimit", "5 requests per 1 s", 5.0), 100.0, 10.0)
    assert pace.rate(10.0, 100.5) == 5.0


def test_headers_pace_the_remaining_budget_and_pause_at_zero() -> None:
    pace = Pace(limit=3)
    on_headers(pace, Limits(4, 2.0, "RateLimit-Remaining"), 100.0, 10.0)
    assert pace.rate(10.0, 100.5) == pytest.approx(2.0)  # 4 left over 2 s
    assert pace.rate(10.0, 102.5) == 10.0  # past the reset: the configured rate again
    events = on_headers(pace, Limits(0, 0.7, "RateLimit-Remaining"), 103.0, 10.0)
    assert events == [] and pace.until == pytest.approx(103.7)


LIMIT = "5 requests (RateLimit-Limit)"


@pytest.mark.parametrize(
    "headers",
    [
        {"RateLimit-Limit": "5", "RateLimit-Remaining": "3", "RateLimit-Reset": "1"},
        {"RateLimit": '"default";r=3;t=1', "RateLimit-Policy": '"default";q=5;w=1'},
        {
            "x-ratelimit-limit-requests": "5",
            "x-ratelimit-remaining-requests": "3",
            "x-ratelimit-reset-requests": "180ms",
        },
    ],
)
def test_each_family_says_its_limit_as_a_number(headers: dict[str, str]) -> None:
    limits = parse_limits(headers)
    assert limits is not None and limits.quota == 5


def test_no_limit_said_no_number() -> None:
    limits = parse_limits({"RateLimit-Remaining": "3", "RateLimit-Reset": "1"})
    assert limits == Limits(3, 1.0, "RateLimit-Remaining") and limits.quota == 0
    # A gateway's budget with no reset keeps its own rule (a budget per calendar minute).
    gateway = {"x-ratelimit-limit-requests": "20", "x-ratelimit-remaining-requests": "7"}
    limits = parse_limits(gateway, now=120.0)
    assert limits is not None and limits.quota == 0


WHOLE = 5 / (1.0 + pacing.SEND_MARGIN)  # 5 a second, each second stretched by the margin


def test_a_short_window_is_paced_at_its_whole_quota_over_the_longest_reset_seen() -> None:
    # A reset never exceeds its window: the longest one said is the window, as learned.
    pace = Pace(limit=3, announced=LIMIT)  # announced before: no first window to spread
    on_headers(pace, Limits(3, 0.5, "RateLimit-Remaining", LIMIT, quota=5), 100.0, 10.0)
    assert pace.window == 0.5 and pace.rate(10.0, 100.1) == pytest.approx(5 / 0.55)
    on_headers(pace, Limits(2, 1.0, "RateLimit-Remaining", LIMIT, quota=5), 100.2, 10.0)
    assert pace.window == 1.0 and pace.rate(10.0, 100.3) == pytest.approx(WHOLE)
    on_headers(pace, Limits(1, 0.2, "RateLimit-Remaining", LIMIT, quota=5), 100.4, 10.0)
    # A shorter reset later does not shorten the window, nor does the budget left slow the
    # rate (spread over a reset rounded up, it decayed far below the limit).
    assert pace.window == 1.0 and pace.rate(10.0, 100.5) == pytest.approx(WHOLE)
    assert pace.rate(10.0, 100.4 + pacing.POLICY_HOLD + 1) == 10.0  # no longer said


def test_a_long_window_keeps_one_request_in_hand() -> None:
    # Past OWN_WINDOW the run cannot tell its own 0 from the server's: the budget must not
    # reach 0 (a minute's window: 60 left over 60 s paced at 59).
    pace = Pace(limit=3, announced="60 requests (RateLimit-Limit)")
    limits = Limits(30, 60.0, "RateLimit-Remaining", "60 requests (RateLimit-Limit)", quota=60)
    on_headers(pace, limits, 100.0, 10.0)
    assert pace.rate(10.0, 100.5) == pytest.approx(59 / 60)


def test_a_refusal_at_the_whole_quota_keeps_one_in_hand_from_then_on() -> None:
    pace = Pace(limit=3, announced=LIMIT, window=1.0)
    on_headers(pace, Limits(2, 1.0, "RateLimit-Remaining", LIMIT, quota=5), 100.0, 10.0)
    assert pace.rate(10.0, 100.1) == pytest.approx(WHOLE)
    refused = Limits(0, 1.0, "RateLimit-Remaining", LIMIT, quota=5)
    on_headers(pace, refused, 100.2, 10.0, refused=True, own_wait=0.0)
    assert pace.until == 101.2  # a refusal's reset is obeyed whole, whoever filled the window
    on_headers(pace, Limits(2, 1.0, "RateLimit-Remaining", LIMIT, quota=5), 101.5, 10.0)
    assert pace.in_hand and pace.rate(10.0, 101.6) == pytest.approx(4.0)
    # Another quota is learned afresh, at its whole quota again.
    other = "6 requests (RateLimit-Limit)"
    on_headers(pace, Limits(5, 1.0, "RateLimit-Remaining", other, quota=6), 102.0, 10.0)
    assert not pace.in_hand


def test_a_refusals_reset_does_not_lengthen_the_window() -> None:
    pace = Pace(limit=3, announced=LIMIT, window=1.0)
    penalty = Limits(0, 30.0, "RateLimit-Remaining", LIMIT, quota=5)
    on_headers(pace, penalty, 100.0, 10.0, refused=True)
    assert pace.window == 1.0 and pace.until == 130.0  # the pause is obeyed as said
    assert pace.rate(10.0, 131.0) == pytest.approx(4.0)  # and one is kept in hand after it


def test_another_limit_is_learned_afresh() -> None:
    pace = Pace(limit=3, announced=LIMIT, window=60.0)
    said = "10 requests (RateLimit-Limit)"
    events = on_headers(pace, Limits(9, 2.0, "RateLimit-Remaining", said, quota=10), 100.0, 50.0)
    assert pace.window == 2.0 and len(events) == 1
    # The first window's spread (8 left over 2 s), then the whole quota: the line says both.
    assert events[0].new == pytest.approx(4.0)
    assert events[0].reason == (
        f"the API announces {said}; 4.88/s once what is left of its first window is spread"
    )


def test_a_policy_with_a_short_window_is_paced_at_its_whole_quota() -> None:
    said = "5 requests per 1 s (RateLimit-Policy)"
    pace = Pace(limit=3, announced=said)
    on_headers(pace, Limits(3, 1.0, "RateLimit", said, 5.0, quota=5), 100.0, 10.0)
    assert pace.rate(10.0, 100.5) == pytest.approx(WHOLE)
    said = "100 requests per 60 s (RateLimit-Policy)"
    on_headers(pace, Limits(99, 60.0, "RateLimit", said, 100 / 60, quota=100), 101.0, 10.0)
    assert pace.policy_rate == pytest.approx(99 / 60)  # a long one: one in hand


def test_the_first_window_of_a_limit_spreads_what_is_left_of_it() -> None:
    # Sent at the configured rate before the limit was known, some of the window is gone.
    pace = Pace(limit=3)
    events = on_headers(pace, Limits(3, 1.0, "RateLimit-Remaining", LIMIT, quota=5), 100.0, 10.0)
    assert [(e.old, e.new) for e in events] == [(10.0, pytest.approx(2.0))]  # 2 left in hand
    assert pace.rate(10.0, 100.9) == pytest.approx(2.0)
    assert pace.rate(10.0, 101.1) == pytest.approx(WHOLE)  # then the steady rate


def test_the_first_window_is_not_spread_thinner_than_a_send_every_two_seconds() -> None:
    pace = Pace(limit=3)
    on_headers(pace, Limits(2, 60.0, "RateLimit-Remaining", LIMIT, quota=5), 100.0, 10.0)
    assert pace.header_until == 0.0 and pace.rate(10.0, 100.5) == pytest.approx(4 / 60)


def test_at_zero_left_the_run_pauses_until_the_reset_unless_the_zero_is_its_own() -> None:
    pace = Pace(limit=3, announced=LIMIT, window=1.0)
    zero = Limits(0, 1.0, "RateLimit-Remaining", LIMIT, quota=5)
    assert on_headers(pace, zero, 100.0, 10.0) == []
    assert pace.until == 101.0 and pace.refused_until == 101.0
    assert pace.rate(10.0, 101.0) == pytest.approx(WHOLE)
    # The run's own sends fill the window: until the oldest of them leaves it.
    on_headers(pace, zero, 102.0, 10.0, own_wait=0.2)
    assert pace.until == pytest.approx(102.2) and pace.refused_until == pytest.approx(102.2)
    on_headers(pace, zero, 103.0, 10.0, own_wait=0.0)
    assert pace.until == pytest.approx(102.2)  # it has left: no pause


def test_a_refilling_bucket_settles_at_its_refill_without_reaching_zero() -> None:
    # OpenAI's x-ratelimit-reset-requests is the time until the bucket is full again: 60
    # requests, one more each second. Sent as the rule says, answers come back at once.
    size, refill, now, level = 60, 1.0, 0.0, 60.0
    pace, sent, lowest = Pace(limit=3), [], size
    while now < 300.0:
        later = max(now + 1.0 / pace.rate(10.0, now), pace.until)
        level, now = min(size, level + (later - now) * refill) - 1, later
        assert level >= 0  # never refused
        lowest = min(lowest, int(level))
        sent.append(now)
        headers = {
            "x-ratelimit-limit-requests": str(size),
            "x-ratelimit-remaining-requests": str(int(level)),
            "x-ratelimit-reset-requests": f"{(size - level) / refill:.3f}s",
        }
        limits = parse_limits(headers)
        assert limits is not None
        on_headers(pace, limits, now, 10.0)
    assert lowest >= 1 and pace.until == 0.0  # no 0 said, no pause
    assert len([t for t in sent if t > 240.0]) == pytest.approx(60, abs=3)  # the refill


# -- the Pacer over a store --------------------------------------------------------------


def test_the_ramps_words_say_why_the_count_was_no_measure() -> None:
    pace = Pace(limit=1)
    event = on_throttled(
        pace, 1.0, 1.0, 3.0, 10.0, thin=True, why="sent closer than those it accepted"
    )
    assert event is not None
    assert event.reason.endswith("sent closer than those it accepted, doubling until refused)")


def _pacer(store: Store, maximum: int = 4, max_wait: float = 300.0) -> Pacer:
    store.gate_set_limit("gate", maximum)
    return Pacer(store, gate_key="gate", maximum=maximum, ceiling=10.0, max_wait=max_wait)


def test_pacer_cuts_the_shared_limit_once_for_a_burst(store: Store) -> None:
    first, second = _pacer(store), _pacer(store)  # two workers
    ticket = Ticket(store.clock(), first.read().epoch, 4)
    first.answered(ticket, 503, {})
    second.answered(ticket, 503, {})  # the same burst, seen by another worker
    assert store.gate_limit("gate") == 2
    assert first.read().limit == 2
    last, events = first.events_since(0)
    assert last == 1 and [(e.kind, e.old, e.new) for e in events] == [("concurrency", 4, 2)]
    assert store.incr(pacing.REFUSED_KEY, 0) == 2
    assert store.incr(f"{pacing.REFUSED_KEY}:503", 0) == 2


def test_pacer_pauses_every_worker_for_retry_after(store: Store) -> None:
    pacer = _pacer(store)
    ticket = Ticket(store.clock(), 0, 4)
    pacer.answered(ticket, 429, {}, retry_after=30.0)
    with pytest.raises(pacing.Paused, match="Retry-After 30 s"):
        _pacer(store).before_send()


def test_pacer_stops_the_run_when_the_quota_is_gone(store: Store) -> None:
    pacer = _pacer(store, max_wait=60.0)
    pacer.answered(Ticket(store.clock(), 0, 4), 429, {}, retry_after=3600.0)
    with pytest.raises(
        QuotaExhausted, match=r"quota exhausted: Retry-After 3600 s .*max-wait 60 s"
    ):
        _pacer(store).check()
    assert [e.kind for e in pacer.events_since(0)[1]] == ["stop"]


def _said(left: int) -> dict[str, str]:
    return {"RateLimit-Limit": "5", "RateLimit-Remaining": str(left), "RateLimit-Reset": "1"}


@pytest.mark.parametrize("mode", ["aimd", "off"])
def test_a_zero_left_that_the_runs_own_sends_explain_waits_only_for_the_oldest(
    store: Store, mode: str
) -> None:
    store.gate_set_limit("gate", 4)
    pacer = Pacer(store, gate_key="gate", maximum=4, ceiling=10.0, max_wait=300.0, mode=mode)
    now = store.clock()
    # Five sends in the last second, the fifth answered now with 0 left (reset: 1 s).
    times = [now - 0.9, now - 0.7, now - 0.5, now - 0.3, now - 0.1]
    waits = [pacer.answered(Ticket(t, 0, 4), 200, _said(4 - i)) for i, t in enumerate(times)]
    assert waits[:4] == [None] * 4
    own = waits[4]
    # The oldest leaves the window at most a bucket after now - 0.9 + 1: a pause that short,
    # not the server's whole second.
    assert own is not None and 0.0 < own <= 0.1 + pacing.BUCKET + 0.05
    assert pacer.read().until <= store.clock() + 0.2


def test_a_zero_left_the_run_did_not_fill_pauses_until_the_servers_reset(store: Store) -> None:
    pacer = _pacer(store)
    now = store.clock()
    for i, sent in enumerate([now - 0.5, now - 0.3]):
        pacer.answered(Ticket(sent, 0, 4), 200, _said(4 - i))
    # Someone else spends the same budget: 0 left after two of the run's own.
    assert pacer.answered(Ticket(now - 0.1, 0, 4), 200, _said(0)) is None
    assert pacer.read().until >= now + 1.0


def test_pacer_in_off_mode_keeps_limit_and_rate(store: Store) -> None:
    store.gate_set_limit("gate", 4)
    pacer = Pacer(store, gate_key="gate", maximum=4, ceiling=10.0, max_wait=300.0, mode="off")
    ticket = Ticket(store.clock(), 0, 4)
    pacer.answered(ticket, 503, {})
    pacer.answered(ticket, 429, {})
    assert store.gate_limit("gate") == 4
    assert pacer.before_send()[1] == 10.0


def test_a_spent_token_budget_pauses_every_worker_until_its_reset(store: Store) -> None:
    pacer = _pacer(store)
    before = store.clock()
    spent = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "2.5s"}
    pacer.answered(Ticket(before, 0, 4), 200, spent)
    pace = pacer.read()
    assert before + 2.5 <= pace.until <= store.clock() + 2.5
    assert pace.until_reason == "x-ratelimit-remaining-tokens 0"
    # Tokens left: no pause.
    other = _pacer(store)
    left = {"x-ratelimit-remaining-tokens": "10", "x-ratelimit-reset-tokens": "60s"}
    store.put(pacing.PACE_KEY, Pace(limit=4).to_json())
    other.answered(Ticket(store.clock(), 0, 4), 200, left)
    assert other.read().until == 0.0


def test_every_worker_paces_at_the_window_any_of_them_learned(store: Store) -> None:
    first, second = _pacer(store), _pacer(store)  # two workers
    said = {"RateLimit-Limit": "5", "RateLimit-Remaining": "4", "RateLimit-Reset": "1"}
    first.answered(Ticket(store.clock(), 0, 4), 200, said)
    second.answered(Ticket(store.clock(), 0, 4), 200, {**said, "RateLimit-Reset": "2"})
    first.answered(Ticket(store.clock(), 0, 4), 200, {**said, "RateLimit-Remaining": "3"})
    assert first.read().window == second.read().window == 2.0
    now = store.clock()
    # The first window's spread (3 left over 1 s) may still stand; past it, 5 over 2 s.
    assert first.read().rate(10.0, now + 2.5) == pytest.approx(5 / (2 + pacing.SEND_MARGIN))
    assert second.before_send()[1] <= 3.0


def _ramping(store: Store, rate_now: float) -> Pace:
    """A pace ramping from `rate_now` this moment, doubling every RAMP_DOUBLING."""
    now = store.clock()
    pace = Pace(limit=4, peak=rate_now / BETA, cut_at=now - pacing.RATE_HOLD, ramp=True)
    store.put(pacing.PACE_KEY, pace.to_json())
    return pace


def test_a_rising_rate_comes_with_its_steps_a_flat_one_without(store: Store) -> None:
    pacer = _pacer(store)
    pace = _ramping(store, 1.0)
    now = store.clock()
    steps = pacer.rising(pace)
    assert steps and all(now < at <= now + 3.1 for at, _ in steps)
    assert [at for at, _ in steps] == sorted(at for at, _ in steps)
    for at, rate in steps:
        assert rate == pytest.approx(pace.rate(10.0, at))
    assert steps[-1][1] == pytest.approx(8.0, rel=0.1)  # doubled three times in 3 s
    assert pacer.rising(Pace(limit=4)) == ()  # the configured rate: flat
    plateau = Pace(limit=4, peak=5.0, cut_at=now - pacing.CUBIC_K + 1.0)
    assert pacer.rising(plateau) == ()  # CUBIC at its plateau


def test_a_step_spaces_the_send_that_falls_at_or_after_it(store: Store) -> None:
    now = store.clock()
    first = store.reserve_all([Spacing("r", 1.0, 1, ((now + 0.5, 0.25),))])
    assert first == pytest.approx(now, abs=0.05)  # before the step: 1 s to the next
    second = store.reserve_all([Spacing("r", 1.0, 1, ((now + 0.5, 0.25),))])
    third = store.reserve("r", 1.0, 1)
    assert second - first == pytest.approx(1.0)
    assert third - second == pytest.approx(0.25)  # the send fell after the step
    with pytest.raises(ValueError, match="time order"):
        store.reserve_all([Spacing("r", 1.0, 1, ((now + 2, 0.5), (now + 1, 0.25)))])


def test_workers_asking_ahead_follow_a_doubling_rate(store: Store) -> None:
    # Three workers, each reserving its next slot as soon as its last request went out (as
    # a worker does between tasks). At the rate of the asking, each slot was spaced at the
    # rate of about three slots before, and the sends trailed the ramp by a second or more.
    pacer = _pacer(store)
    pace = _ramping(store, 1.0)
    start = store.clock()
    horizon = 3.0
    sent: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        limiter = RateLimiter(store, rate=1.0)
        while store.clock() < start + horizon:
            pace, rate = pacer.before_send()
            limiter.set_rate(rate, pacer.rising(pace))
            limiter.acquire()
            with lock:
                sent.append(store.clock())

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    within = sorted(t for t in sent if t < start + horizon)
    # What the rate allows in the first `horizon` seconds: the integral of 2^t from 0.
    allowed = (2**horizon - 1) / math.log(2) / (1 + MARGIN)
    assert pace.rate(10.0, start + horizon) == pytest.approx(8.0, rel=0.05)
    assert 0.7 * allowed <= len(within) <= allowed + 2, (len(within), allowed)
