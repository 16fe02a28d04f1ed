"""One process's view of the run's shared safeguards: rate limit, concurrency gate, health.

Every worker builds one of these over the shared store; the limits they enforce are the
run's, not the worker's, because all their state lives in the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pytest_roadmap.client import RoadmapClient
from pytest_roadmap.gate import ConcurrencyGate, Slot
from pytest_roadmap.health import HealthProbe
from pytest_roadmap.ratelimit import RateLimiter
from pytest_roadmap.retry import Backoff, TaskFailure
from pytest_roadmap.settings import Settings
from pytest_roadmap.store.base import Store
from pytest_roadmap.tasks import Task

GATE_KEY = "gate"
REQUESTS_KEY = "requests"
# A slot's lease is renewed by a heartbeat while its worker lives; a killed worker's slot
# comes back after this long at the latest (sooner through pytest_testnodedown).
GATE_LEASE = 10.0


class Safeguards:
    """The limiter, gate, health probe and client of one process, over the shared store."""

    def __init__(
        self,
        settings: Settings,
        api_url: str,
        store: Store,
        worker: str,
        run_id: str,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.store = store
        self.worker = worker
        self._sleep = sleep
        self.limiter = RateLimiter(store, settings.rate_limit, settings.burst)
        self.gate = ConcurrencyGate(store, holder=worker, key=GATE_KEY, lease=GATE_LEASE)
        self.client = RoadmapClient(
            api_url,
            model=settings.model,
            token=settings.token,
            timeout=settings.timeout,
            throttle=self.limiter,
            headers={"X-Roadmap-Worker": worker, "X-Roadmap-Run": run_id},
            ca_bundle=settings.ca_bundle,
            on_request=self._count_request,
        )
        self.health = HealthProbe(
            self.client,
            store,
            settings.health_path,
            wait=settings.health_wait,
            share=settings.health_interval,
            timeout=settings.timeout,
        )
        self.backoff = Backoff(settings.retry_delay, settings.backoff, settings.max_delay)

    def _count_request(self) -> None:
        self.store.incr(REQUESTS_KEY)

    def before_attempt(self, failed_attempts: int, last: BaseException | None) -> str | None:
        """Wait out the backoff after a failed attempt, then for a healthy API.

        Returns None when the attempt may go ahead, or why the API is not usable. The
        caller holds no concurrency slot yet, so sleeping here blocks no one.
        """
        if failed_attempts:
            retry_after = last.retry_after if isinstance(last, TaskFailure) else None
            self._sleep(self.backoff.wait(failed_attempts, retry_after))
        return self.health.wait_healthy()

    def acquire_slot(self) -> Slot:
        return self.gate.acquire()

    def chat(self, task: Task, attempt: int) -> dict[str, Any]:
        """Send one task's prompt; a failure that smells of overload re-arms the probe."""
        headers = {"X-Roadmap-Task": task.id, "X-Roadmap-Attempt": str(attempt)}
        try:
            return self.client.chat(task.prompt, headers=headers)
        except TaskFailure as failure:
            if failure.overload:
                self.health.invalidate()
            raise

    def close(self) -> None:
        self.client.close()
