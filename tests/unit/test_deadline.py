"""The deadline's arithmetic without a store: room before the cut, the time kept for the end,
the run's start and the deadline the controller decides."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from pytest_roadmap.deadline import (
    deadline_info,
    end_reserve,
    process_age,
    run_started,
    startable,
)
from pytest_roadmap.plan import History, TaskHistory


def test_startable_counts_whole_tasks_before_the_cut() -> None:
    assert startable(0.0, 3.0, 1.0, 1) == 3
    # Three workers, the other two on average a third and two thirds through a task.
    assert startable(0.0, 3.0, 1.0, 3) == 3 + 2 + 2
    assert startable(0.0, 0.5, 1.0, 3) == 0


def test_end_reserve_grows_with_tasks_and_a_measured_end() -> None:
    assert end_reserve(0) < end_reserve(1000)
    assert end_reserve(10, measured=5.0) == 7.5


def test_deadline_info_counts_from_a_recent_process_start() -> None:
    recorded = History({"a": TaskHistory(2.0, 2.0)}, overhead_s=0.1, finish_s=0.3)
    info = deadline_info(8.0, now=100.0, age=1.5, history=recorded)
    assert info.ends_at == 100.0 - 1.5 + 8.0
    assert info.expected_task_s == pytest.approx(2.0 * 2.0 + 0.1)  # attempts x latency
    assert info.measured_end_s == 0.3
    assert deadline_info(8.0, now=100.0, age=None, expected_latency=0.5).expected_task_s == 0.5
    # A process older than any start-up (pytester, a wrapper) counts from now.
    assert run_started(100.0, 3600.0) == 100.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_process_age_reads_proc(tmp_path: Path) -> None:
    age = process_age()
    assert age is not None and age >= 0.0
    (tmp_path / "self").mkdir()
    assert process_age(str(tmp_path)) is None  # no stat file: unknown, not a crash
    ticks = os.sysconf("SC_CLK_TCK")
    (tmp_path / "self" / "stat").write_text(f"1 (a) b) S {' '.join(['0'] * 18)} {ticks * 5}\n")
    (tmp_path / "uptime").write_text("12.5 3.0\n")
    assert process_age(str(tmp_path)) == pytest.approx(7.5)
