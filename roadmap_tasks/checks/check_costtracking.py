"""The cost tracking task's check: each call is priced and added to every running total.

Run by the task's command check in a scratch folder, beside the answer's code saved as
cost_tracking.py.
"""

from datetime import date

from cost_tracking import CostTracker


def test_costs_add_up_per_model_user_project_and_day() -> None:
    tracker = CostTracker({"m": (1.0, 2.0)})
    day = date(2026, 1, 5)
    first = tracker.record("m", 1_000_000, 0, user="ana", project="p", day=day)
    tracker.record("m", 0, 500_000, user="bo", project="p", day=day)
    assert first == 1.0
    assert tracker.total("model", "m") == 2.0
    assert tracker.total("user", "ana") == 1.0
    assert tracker.total("project", "p") == 2.0
    assert tracker.total("day", "2026-01-05") == 2.0
