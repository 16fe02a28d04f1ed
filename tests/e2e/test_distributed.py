"""CI shards sharing one Redis store: one rate limit, one concurrency limit, one batch order."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from pytest_roadmap.sandbox import max_in_flight, max_in_window
from pytest_roadmap.sequencing import SHARDS_KEY
from pytest_roadmap.store import open_store
from pytest_roadmap.store.base import StoreError
from pytest_roadmap.store.redis import with_run_id
from tests.support.project import Roadmap, task_toml
from tests.support.redis_server import private_server

SHARDS = 3
PER_SHARD = 6


def _shard(
    roadmap: Roadmap, store: str, run_id: str, pattern: str, *extra: str
) -> subprocess.Popen[bytes]:
    return roadmap.spawn(
        "--roadmap",
        "-n",
        "2",
        "--roadmap-api",
        roadmap.sandbox.url,
        "--roadmap-store",
        store,
        "--roadmap-run-id",
        run_id,
        "-k",
        pattern,
        "--roadmap-report",
        f"report-{pattern.replace(' ', '')}",
        *extra,
    )


def _run_shards(roadmap: Roadmap, store: str, run_ids: list[str], *extra: str) -> list[str]:
    names = [[f"s{s}t{i}" for i in range(PER_SHARD)] for s in range(SHARDS)]
    roadmap.tasks("month1", *(task_toml(n) for group in names for n in group))
    procs = [_shard(roadmap, store, run_ids[s], f"s{s}", *extra) for s in range(SHARDS)]
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=180)
        outputs.append(out.decode())
        assert proc.returncode == 0, out.decode()
    return outputs


@pytest.mark.slow
@pytest.mark.redis
def test_shards_with_one_run_id_share_the_limits(roadmap: Roadmap, redis_url: str) -> None:
    roadmap.sandbox.configure(latency=0.3)
    run_id = f"shared-{uuid.uuid4().hex[:8]}"
    outputs = _run_shards(
        roadmap,
        redis_url,
        [run_id] * SHARDS,
        "--roadmap-rate-limit",
        "8",
        "--no-roadmap-adaptive",
    )
    entries = roadmap.sandbox.log()
    assert len([e for e in entries if e["path"] == "/api/codebase/chat"]) == SHARDS * PER_SHARD
    assert max_in_window(entries, 1.0) <= 8  # one limit for all shards, not 3 x 8
    assert max_in_flight(entries) <= 2  # one concurrency limit (-n 2) for all shards
    assert {e["run"] for e in entries if e["run"]} == {run_id}
    for out in outputs:
        assert f"run={run_id}" in out
        assert "redis://" in out and "?run=" in out
    reports = [
        json.loads(p.read_text()) for p in roadmap.pytester.path.glob("report-*/report.json")
    ]
    assert len(reports) == SHARDS
    assert all(r["run"]["run_id"] == run_id and r["totals"]["total"] == PER_SHARD for r in reports)


@pytest.mark.slow
@pytest.mark.redis
def test_shards_with_different_run_ids_are_independent(roadmap: Roadmap, redis_url: str) -> None:
    roadmap.sandbox.configure(latency=0.3)
    ids = [f"own-{uuid.uuid4().hex[:8]}" for _ in range(SHARDS)]
    _run_shards(roadmap, redis_url, ids, "--roadmap-rate-limit", "8", "--no-roadmap-adaptive")
    entries = roadmap.sandbox.log()
    # each shard had its own two slots: more than two requests were in flight at once
    assert max_in_flight(entries) > 2


@pytest.mark.slow
@pytest.mark.redis
def test_batches_stay_in_order_across_shards(roadmap: Roadmap, redis_url: str) -> None:
    roadmap.sandbox.configure(latency=0.2)
    first, second = _write_two_batches(roadmap)
    run_id = f"batches-{uuid.uuid4().hex[:8]}"
    _run_shards(
        roadmap,
        redis_url,
        [run_id] * SHARDS,
        "--roadmap-batches",
        "batches.json",
        "--roadmap-shards",
        str(SHARDS),
    )
    _assert_batch_order(roadmap, first, second)


def _write_two_batches(roadmap: Roadmap) -> tuple[list[str], list[str]]:
    first = [f"s{s}t{i}" for s in range(SHARDS) for i in range(3)]
    second = [f"s{s}t{i}" for s in range(SHARDS) for i in range(3, PER_SHARD)]
    (roadmap.pytester.path / "batches.json").write_text(
        json.dumps(
            {
                "batches": [{"name": "one", "tasks": first}, {"name": "two", "tasks": second}],
                "delays": {"betweenBatches": 300},
            }
        )
    )
    return first, second


def _assert_batch_order(roadmap: Roadmap, first: list[str], second: list[str]) -> None:
    chats = roadmap.chats()
    one = [e for e in chats if e["task"] in first]
    two = [e for e in chats if e["task"] in second]
    assert len(one) == len(first) and len(two) == len(second)
    assert min(e["arrived"] for e in two) >= max(e["answered"] for e in one) + 0.3


def _announced_shards(redis_url: str, run_id: str) -> int:
    try:
        with open_store(with_run_id(redis_url, run_id)) as store:
            return int(store.get(SHARDS_KEY) or 0)
    except StoreError:  # the first shard has not created the run yet
        return 0


@pytest.mark.slow
@pytest.mark.redis
def test_a_late_shard_runs_its_first_batch_before_any_shard_runs_the_second(
    roadmap: Roadmap, redis_url: str
) -> None:
    roadmap.sandbox.configure(latency=0.2)
    first, second = _write_two_batches(roadmap)
    roadmap.tasks(
        "month1", *(task_toml(f"s{s}t{i}") for s in range(SHARDS) for i in range(PER_SHARD))
    )
    run_id = f"late-{uuid.uuid4().hex[:8]}"
    extra = ("--roadmap-batches", "batches.json", "--roadmap-shards", str(SHARDS))
    early = [_shard(roadmap, redis_url, run_id, f"s{s}", *extra) for s in range(SHARDS - 1)]
    deadline = time.monotonic() + 120
    while _announced_shards(redis_url, run_id) < SHARDS - 1:
        assert time.monotonic() < deadline, "the early shards never announced their tasks"
        assert all(p.poll() is None for p in early), "an early shard ended before the last began"
        time.sleep(0.05)
    # Two of three shards are ready: none of them may start a task of a batch yet.
    assert roadmap.chats() == []
    procs = [*early, _shard(roadmap, redis_url, run_id, f"s{SHARDS - 1}", *extra)]
    for proc in procs:
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, out.decode()
    _assert_batch_order(roadmap, first, second)


def test_a_shard_that_never_starts_fails_the_batch_tasks_clearly(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("a"), task_toml("b"))
    (roadmap.pytester.path / "batches.json").write_text(
        json.dumps({"batches": [{"name": "one", "tasks": ["a", "b"]}]})
    )
    result = roadmap.run(
        "--roadmap-batches", "batches.json", "--roadmap-shards", "2", "--roadmap-shard-wait", "0.5"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*only 1 of 2 shards (--roadmap-shards) announced their tasks*"])
    assert result.parseoutcomes() == {"failed": 2}
    assert "Traceback" not in result.stdout.str()
    assert roadmap.chats() == []


@pytest.mark.redis
def test_unreachable_redis_is_a_clear_error_before_any_task(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("a"))
    result = roadmap.run("--roadmap-store", "redis://127.0.0.1:1/0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-roadmap: cannot reach the Redis store at *"])
    assert roadmap.sandbox.log() == []


def test_bad_store_url_and_run_id(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("a"))
    result = roadmap.run("--roadmap-store", "memcached://x")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*invalid store URL 'memcached://x' from option --roadmap-store*"])
    result = roadmap.run("--roadmap-run-id", "a b")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*invalid run id 'a b'*"])


@pytest.mark.slow
@pytest.mark.redis
def test_redis_restarted_mid_run_the_run_finishes_within_the_limit(
    roadmap: Roadmap, tmp_path: Path
) -> None:
    (tmp_path / "redis").mkdir()
    server = private_server(tmp_path / "redis")
    try:
        names = [f"t{i:02d}" for i in range(30)]
        roadmap.tasks("month1", *(task_toml(n) for n in names))
        restarted: list[float] = []

        def restart() -> None:
            deadline = time.monotonic() + 60
            while len(roadmap.chats()) < 8 and time.monotonic() < deadline:
                time.sleep(0.02)
            server.restart()
            restarted.append(time.time())

        thread = threading.Thread(target=restart)
        thread.start()
        result = roadmap.run(
            "-n",
            "2",
            "--roadmap-store",
            f"{server.url}?recovery=2",
            "--roadmap-rate-limit",
            "10",
            "--reruns",
            "5",
        )
        thread.join()
        assert restarted
        outcomes = result.parseoutcomes()
        assert outcomes.get("passed") == 30, result.stdout.str()
        assert max_in_window(roadmap.sandbox.log(), 1.0) <= 10
    finally:
        server.stop()
