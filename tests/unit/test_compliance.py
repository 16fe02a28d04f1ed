"""The compliance section's arithmetic (compliance.py), from log entries made by hand."""

from __future__ import annotations

from pytest_roadmap.compliance import RequestLog, asked_wait, compliance
from pytest_roadmap.windows import busiest_window


def test_busiest_window_is_half_open() -> None:
    assert busiest_window([]) == (0, None)
    assert busiest_window([0.0, 0.5, 0.99, 1.0, 1.5]) == (3, 0.0)
    assert busiest_window([0.0, 1.0, 2.0]) == (1, 0.0)


def test_asked_wait_reads_retry_after_and_the_header_families() -> None:
    assert asked_wait(429, {}, 2.0) == (2.0, "Retry-After 2 s on a 429")
    assert asked_wait(200, {}, None) == (0.0, "")
    assert asked_wait(500, {}, 5.0) == (0.0, "")  # only a refusal's Retry-After pauses the run
    headers = {"RateLimit-Limit": "5", "RateLimit-Remaining": "0", "RateLimit-Reset": "3"}
    wait, words = asked_wait(200, headers, None)
    assert wait == 3.0 and words.endswith("0 for 3 s")
    assert asked_wait(200, {**headers, "RateLimit-Remaining": "2"}, None) == (0.0, "")


def test_compliance_merges_pauses_and_counts_sends_inside_them() -> None:
    entries = [
        [10.0, 429, 10.1, 2.0, "Retry-After 2 s on a 429"],  # paused 10.1 .. 12.1
        [10.05, 503, 10.2, 1.0, "Retry-After 1 s on a 503"],  # within it: merged
        [11.0, 200, 11.2, 0.0, ""],  # sent during the pause
        [12.5, 200, 12.6, 0.0, ""],
        [13.0, None, None, 0.0, ""],
        [13.5, 429, 13.6, 3600.0, "Retry-After 3600 s on a 429"],  # cut at the run's end
    ]
    section = compliance(entries, rate_limit=2.0, until=14.0)
    assert section.requests == 6
    assert section.statuses == {200: 2, 429: 2, 503: 1}
    assert section.refusals == {429: 2, 503: 1}
    assert section.no_answer == 1
    assert [(p.at, round(p.seconds, 3)) for p in section.pauses] == [(10.1, 2.0), (13.6, 0.4)]
    assert section.sent_while_paused == 1
    assert (section.max_per_second, section.busiest_at) == (2, 10.0)
    assert section.allowed_per_second == 2 and section.held
    assert not compliance(entries, rate_limit=1.0).held


def test_request_log_pairs_answers_with_their_sends() -> None:
    log = RequestLog()
    first, second = object(), object()
    log.sent(first, 1.0)
    log.sent(second, 1.5)
    log.answered(second, 429, {}, 2.0, 1.6)
    log.answered(object(), 200, {}, None, 9.0)  # never sent through this log: ignored
    # A request still in flight (another thread's, with --roadmap-inflight) waits for a
    # later take.
    assert log.take() == [[1.5, 429, 1.6, 2.0, "Retry-After 2 s on a 429"]]
    log.answered(first, None, {}, None, 3.0)  # ended without an answer
    assert log.take() == [[1.0, None, 3.0, 0.0, ""]]
    assert log.take() == []
