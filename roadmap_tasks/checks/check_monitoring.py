"""The monitoring task's check: failed requests count in the error rate.

Run by the task's command check in a scratch folder, beside the answer's code saved as
request_tracker.py. Named check_*.py, and in checks/, so that no pytest run of this
repository collects it as its own test.
"""

from request_tracker import RequestTracker


def test_failed_requests_count_in_the_error_rate() -> None:
    tracker = RequestTracker()
    tracker.record("/api/chat", 200, 120.0)
    tracker.record("/api/chat", 500, 80.0)
    tracker.record("/api/chat", 429, 5.0)
    tracker.record("/api/health", 200, 1.0)
    assert tracker.error_rate("/api/chat") == 2 / 3
    assert tracker.error_rate() == 0.5


def test_no_requests_is_no_error() -> None:
    assert RequestTracker().error_rate() == 0.0
