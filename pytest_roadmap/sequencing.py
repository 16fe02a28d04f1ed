"""Batch barriers and task dependencies, over the shared store.

Workers only ever wait for tasks that come earlier in the run order (see
`batches.run_order`), and every worker runs its tasks in that order, so some task can always
make progress: the earliest unfinished one has nothing left to wait for.

All state is per task id in the store, so runs that share a store (CI shards with one run
id) share it too: a barrier waits for every task of the batch that any of them selected.
Shards start at different times, so a barrier or dependency first waits until every one of
the `shards` runs has announced its tasks: a late shard's batch-one tasks are then known
before anyone passes the barrier.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping

from pytest_roadmap.batches import Batch, BatchPlan
from pytest_roadmap.results import PASSED
from pytest_roadmap.store.base import Store
from pytest_roadmap.tasks import Task

CURRENT_BATCH_KEY = "batch:current"
SHARDS_KEY = "shards:announced"


class ShardsMissing(Exception):
    """Not every shard of the run announced its tasks within the shard wait."""


def _done(task_id: str) -> str:
    return f"done:{task_id}"


def _selected(task_id: str) -> str:
    return f"selected:{task_id}"


class Sequencer:
    """Decides when a task may start, and records when one has ended for good."""

    def __init__(
        self,
        store: Store,
        plan: BatchPlan | None,
        *,
        stop_on_failure: bool = False,
        shards: int = 1,
        shard_wait: float = 600.0,
        complete: Collection[str] = (),
        outside: Mapping[str, str] | None = None,
        poll: float = 0.02,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`complete`: ids of tasks the tracker marks complete, which count as passed when a
        dependant needs them and no run selected them. `outside`: for a dependency that is
        neither selected here nor complete, why its dependant is skipped (how to include
        it); a default sentence otherwise."""
        self._store = store
        self._complete = complete
        self._outside = outside or {}
        self._plan = plan
        self._stop_on_failure = stop_on_failure
        self._shards = shards
        self._shard_wait = shard_wait
        self._shards_seen = 0
        self._poll = poll
        self._sleep = sleep

    def register(self, task_ids: Iterable[str], shard: str) -> None:
        """Announce the tasks shard `shard` will end, before any of its tasks waits.

        Every xdist worker of a shard selects the same tasks, so the first of them to get
        here announces the shard; the counter per shard keeps the others from counting it
        again."""
        for task_id in task_ids:
            self._store.put(_selected(task_id), "1")
        if self._store.incr(f"shard:{shard}") == 1:
            self._store.incr(SHARDS_KEY)

    def batch_of(self, task_id: str) -> Batch | None:
        return self._plan.batch_of(task_id) if self._plan else None

    def wait_turn(self, task: Task) -> str | None:
        """Block until `task` may start; None, or the reason it must be skipped instead."""
        batch = self.batch_of(task.id)
        if batch is not None or task.depends_on:
            self._wait_for_shards()
        # Before any wait: a dependency that no shard selected and that was not done in an
        # earlier run would never come, so the dependant is skipped at once.
        selected = []
        for dep in task.depends_on:
            if self._store.get(_selected(dep)) is not None:
                selected.append(dep)
            elif dep not in self._complete:
                return self._outside.get(dep) or f"dependency {dep!r} was not selected in this run"
        if batch is not None and self._plan is not None:
            reason = self._wait_for_earlier_batches(batch, self._plan)
            if reason:
                return reason
            self._store.put(CURRENT_BATCH_KEY, batch.name)
        for dep in selected:
            outcome = self._wait_for(_done(dep))
            if outcome != PASSED:
                words = "was skipped" if outcome == "skipped" else "failed"
                return f"dependency {dep!r} {words}"
        return None

    def _wait_for_shards(self) -> None:
        # One shard is this run alone, and it announced its tasks before any of them ran.
        if self._shards <= 1 or self._shards_seen >= self._shards:
            return
        deadline = self._store.clock() + self._shard_wait
        while (seen := int(self._store.get(SHARDS_KEY) or 0)) < self._shards:
            if self._store.clock() >= deadline:
                raise ShardsMissing(
                    f"only {seen} of {self._shards} shards (--roadmap-shards) announced their"
                    f" tasks within {self._shard_wait:g} s (--roadmap-shard-wait); start every"
                    " shard with the same --roadmap-run-id and store"
                )
            self._sleep(self._poll)
        self._shards_seen = seen

    def _wait_for_earlier_batches(self, batch: Batch, plan: BatchPlan) -> str | None:
        last: Batch | None = None
        for previous in plan.batches:
            if previous.index >= batch.index:
                break
            pending = [t for t in previous.tasks if self._store.get(_selected(t))]
            if pending:
                last = previous
            while pending:
                pending = [t for t in pending if self._store.get(_done(t)) is None]
                if pending:
                    self._sleep(self._poll)
        if last is None:
            return None
        ended_at = float(self._wait_for(f"batch_end_at:{last.index}"))
        while (left := ended_at + plan.between_batches - self._store.clock()) > 0:
            self._sleep(min(left, 0.25))
        if self._stop_on_failure:
            for previous in plan.batches[: batch.index]:
                if self._store.get(f"batch_failed:{previous.index}"):
                    return (
                        f"batch {previous.name!r} had a failure and --roadmap-stop-on-failure "
                        "is set"
                    )
        return None

    def _wait_for(self, key: str) -> str:
        while (value := self._store.get(key)) is None:
            self._sleep(self._poll)
        return value

    def mark_done(self, task_id: str, outcome: str) -> None:
        """`task_id` has its final outcome: release its dependants and maybe its batch."""
        if self._store.get(_done(task_id)) is not None:
            return  # already recorded (a crash report can follow a worker's own)
        batch = self.batch_of(task_id)
        if batch is not None:
            if outcome != PASSED:
                self._store.put(f"batch_failed:{batch.index}", "1")
            # The end time goes in before the task counts as done: once a waiter sees every
            # task of the batch done, the latest end time is there, later than every answer.
            self._store.put(f"batch_end_at:{batch.index}", repr(self._store.clock()))
        self._store.put(_done(task_id), outcome)
