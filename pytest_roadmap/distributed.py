"""The xdist glue, registered only on an xdist controller: the run's coordinates down to
the workers, a dead worker's slots back, the workers' collection, and the scheduler."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from xdist.report import report_collection_diff
from xdist.scheduler import LoadScheduling

from pytest_roadmap.run import Controller
from pytest_roadmap.safeguards import GATE_KEY, batch_gate_key


class XdistHooks:
    """Hands workers the run's coordinates and cleans up after a worker dies."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput.update(self.controller.where.to_dict())

    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        # A crashed worker's slot goes back at once instead of at lease expiry.
        store = self.controller.store
        holder = f"{self.controller.where.instance}:{node.workerinput['workerid']}"
        store.gate_reclaim(GATE_KEY, holder)
        plan = self.controller.run.plan
        for batch in plan.batches if plan else ():
            store.gate_reclaim(batch_gate_key(batch), holder)

    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        controller = self.controller
        controller.expected = max(controller.expected, len(ids))
        if not controller.collected:  # what the workers run (a worker that differs runs none)
            controller.collected = list(ids)

    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        # Only for the default `--dist load`; another mode the user chose is kept.
        if config.getoption("dist") == "load":
            controller = self.controller
            inflight = controller.run.settings.inflight
            # A worker with K requests in flight holds K tasks (see pytest_roadmap/inflight/):
            # one more would wait on it for a thread while another worker has one free.
            # With one, it holds three: xdist's worker loop takes the task after the next
            # before it starts the next one, so with two each task waited for the
            # controller's answer to the last one's report (13% of a worker's time at
            # -n 6 with 200 ms answers, docs/benchmarks.md).
            # The third only while tasks are plenty: in a short run it would leave a worker
            # with none (8 tasks on 4 workers went 3, 3, 2, 0).
            if inflight > 1:
                scheduler = OrderedScheduling(config, log, hold=inflight, least=inflight)
            else:
                scheduler = OrderedScheduling(config, log, hold=3, least=2)
            # What is mid-attempt at the end: the task each worker runs; with requests in
            # flight, every task a worker holds (each began its attempt's setup on arrival).
            controller.running = scheduler.held if inflight > 1 else scheduler.running
            return scheduler
        return None


class OrderedScheduling(LoadScheduling):
    """xdist's load scheduling, but no worker ever holds a task behind a later one.

    Tasks only wait (at a batch barrier or for a dependency) for tasks earlier in the run
    order. If every worker's queue is in that order, the earliest unfinished task always
    sits at the head of some queue with nothing left to wait for, so the run cannot
    deadlock. Plain LoadScheduling breaks that after a crash: it re-queues the dead worker's
    tasks behind later ones on the survivors. Here earlier tasks wait for a worker whose
    queue they can head (the replacement xdist starts), and each worker holds at most its
    running task and the next two (`hold`, 3, the third only while more than two tasks per
    worker are pending; with --roadmap-inflight K, K).

    It also starts as soon as the first worker has collected, instead of waiting for all
    of them: on a small machine the last of N interpreters is ready seconds after the first
    (2.3 s apart at -n 8 on 2 cores), and until then every worker would sit idle. A worker
    that collects something else than the first one did gets no task and is shut down, with
    a collection error naming both.
    """

    collection: list[str] | None  # set by LoadScheduling.__init__; declared for mypy

    def __init__(
        self, config: pytest.Config, log: Any = None, *, hold: int = 3, least: int = 2
    ) -> None:
        super().__init__(config, log)
        self.hold = hold  # tasks a worker holds at most
        # ... and more than `least` only while more than `least` per worker are pending.
        self.least = min(least, hold)

    def running(self) -> set[str]:
        """Node ids of the tasks the workers are running: the head of each worker's queue
        (a task leaves it once it has ended)."""
        if self.collection is None:
            return set()
        return {self.collection[queue[0]] for queue in self.node2pending.values() if queue}

    def held(self) -> set[str]:
        """Node ids of every task a worker holds and has not reported."""
        if self.collection is None:
            return set()
        return {self.collection[n] for queue in self.node2pending.values() for n in queue}

    @property
    def collection_is_completed(self) -> bool:
        return bool(self.node2collection)

    def add_node_collection(self, node: Any, collection: Sequence[str]) -> None:
        if self.collection is None:
            self.node2collection[node] = list(collection)
            return
        if list(collection) == self.collection:
            self.node2collection[node] = self.collection
            return
        first = next(iter(self.node2collection))
        message = report_collection_diff(
            self.collection, list(collection), first.gateway.id, node.gateway.id
        )
        self.log(message)
        self.config.hook.pytest_collectreport(
            report=pytest.CollectReport(
                nodeid=node.gateway.id, outcome="failed", longrepr=message, result=[]
            )
        )
        self.node2pending.pop(node, None)
        node.shutdown()

    def schedule(self) -> None:
        if self.collection is None:
            first: list[str] = next(iter(self.node2collection.values()))
            self.collection = first
            self.pending[:] = range(len(first))
            if not first:
                return  # nothing to run: xdist sees tests_finished and shuts down
        for node in self.nodes:
            self.check_schedule(node)

    def check_schedule(self, node: Any, duration: float = 0.0) -> None:
        if node.shutting_down:
            return
        if node not in self.node2collection and self.pending:
            return  # still collecting: a task handed to it now would wait for its start-up
        self.pending.sort()
        if not self.pending:
            # Nothing left to hand out: every worker may finish what it holds.
            for other in self.nodes:
                if not other.shutting_down:
                    other.shutdown()
            return
        queue = self.node2pending[node]
        hold = self.hold
        # The workers asked for, not those up yet: they join one after another.
        if len(self.pending) <= self.least * max(len(self.nodes), self.numnodes):
            hold = self.least
        if len(queue) >= hold:
            return
        top = max(queue, default=-1)
        fits = [index for index in self.pending if index > top][: hold - len(queue)]
        if not fits:
            return
        for index in fits:
            self.pending.remove(index)
        queue.extend(fits)
        node.send_runtest_some(fits)
