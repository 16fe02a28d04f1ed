"""The messages between the processes of a run: typed on each side, plain values between."""

from __future__ import annotations

import json

from pytest_roadmap.tasks import Task
from pytest_roadmap.wire import (
    AttemptEnded,
    Coordinates,
    TaskStarting,
    ended_task,
    from_wire,
    python_task,
)

TASK = Task(id="t1", title="T", prompt="p", month=2, week=3, depends_on=("t0",), timeout=5.0)


def plain(data: object) -> object:
    """What execnet would carry: only plain values survive a JSON round trip unchanged."""
    return json.loads(json.dumps(data))


def test_each_message_comes_back_as_it_was_sent() -> None:
    ended = AttemptEnded(
        task=TASK,
        attempt=2,
        phase="call",
        worker="gw1",
        started=1.5,
        finished=2.5,
        batch="first",
        error="HTTP 503",
        overload=True,
        refused=True,
        answer={"code": "x = 1", "message": "ok"},
        usage={"prompt_tokens": 3},
    )
    starting = TaskStarting(TASK, "first")
    for message in (ended, starting, TaskStarting(python_task("test_f", "test_a.py"))):
        data = message.to_dict()
        assert plain(data) == data
        assert from_wire(data) == message
    assert ended_task(ended.to_dict()) == "t1"
    assert ended_task(starting.to_dict()) is None


def test_a_report_without_a_message_has_none() -> None:
    assert from_wire(None) is None
    assert from_wire({"something": "else"}) is None
    assert ended_task(None) is None


def test_coordinates_go_down_as_workerinput_keys() -> None:
    where = Coordinates("http://api", "sqlite:///s.db", "run1", "abc", 4, frozenset({"k2", "k1"}))
    data = where.to_dict()
    assert plain(data) == data
    assert data["roadmap_completed"] == ["k1", "k2"]
    assert Coordinates.from_dict({**data, "workerid": "gw0"}) == where
