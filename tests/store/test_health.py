"""The shared health answer over a real store (each backend), with scripted probes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pytest_roadmap.health import (
    HEALTH_KEY,
    OK,
    PROBE_KEY,
    PROBING,
    SUSPECT,
    HealthProbe,
    Probed,
    probed_down,
)
from pytest_roadmap.store.base import Store
from tests.support.stores import wait_past


class Prober:
    """Answers probes from a script: (healthy, what it saw) each time, the last one kept."""

    def __init__(self, *answers: tuple[bool, str]) -> None:
        self.answers = list(answers)
        self.probes = 0

    def probe(self, path: str, timeout: float) -> tuple[Probed, str]:
        self.probes += 1
        healthy, detail = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return (Probed.OK if healthy else Probed.DOWN), detail


class Clock:
    """A clock the probe's own sleeps move; `then` runs at each sleep (another worker)."""

    def __init__(self, then: Callable[[], None] = lambda: None) -> None:
        self.now = 0.0
        self.then = then

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.then()


def health(store: Store, prober: Prober, clock: Clock, wait: float = 10.0) -> HealthProbe:
    return HealthProbe(
        prober,
        store,
        "/api/health",
        wait=wait,
        share=60.0,
        timeout=5.0,
        sleep=clock.sleep,
        clock=clock,
    )


def test_a_task_that_saw_the_api_fail_holds_every_send_until_a_probe_says_ok(
    store: Store,
) -> None:
    prober = Prober((True, "GET /api/health -> 200"))
    probe = health(store, prober, Clock())
    assert probe.wait_healthy() is None and probe.judge()[0] is None
    probe.invalidate()
    assert probe.judge()[0] == SUSPECT
    wait_past(store, store.clock() + 0.01)  # no expiry: it holds until a probe
    assert probe.judge()[0] == SUSPECT
    assert probe.wait_healthy() is None
    assert prober.probes == 2 and probe.judge()[0] is None


def test_a_failed_probe_keeps_the_api_down_after_the_next_probe_is_due(store: Store) -> None:
    prober = Prober((False, "GET /api/health -> 503"))
    probe = health(store, prober, Clock(), wait=0.0)
    assert probe.wait_healthy() == "API unhealthy for 0 s: GET /api/health -> 503"
    # The next probe is due after 0.2 s; until one says "ok", no task goes out.
    wait_past(store, store.clock() + 0.3)
    assert probe.judge()[0] == "GET /api/health -> 503"
    prober.answers = [(True, "GET /api/health -> 200")]
    assert health(store, prober, Clock()).wait_healthy() is None
    assert probe.judge()[0] is None


def test_while_another_worker_probes_the_others_wait_for_its_answer(store: Store) -> None:
    store.put(PROBE_KEY, PROBING, ttl=60.0)
    store.put(HEALTH_KEY, f"down: {SUSPECT}", ttl=None)
    looks = 0

    def other_worker() -> None:
        nonlocal looks
        looks += 1
        if looks == 3:  # its probe answered 200
            store.put(HEALTH_KEY, OK, ttl=60.0)

    prober = Prober((True, "GET /api/health -> 200"))
    assert health(store, prober, Clock(other_worker)).wait_healthy() is None
    assert prober.probes == 0


def test_a_send_waits_a_moment_for_the_probe_that_judges_a_doubt(store: Store) -> None:
    store.put(HEALTH_KEY, f"down: {SUSPECT}", ttl=None)
    # Judged "ok" while it waits: a 503 for capacity, the request goes.
    clock = Clock(lambda: store.put(HEALTH_KEY, OK, ttl=60.0))
    assert health(store, Prober((True, "")), clock).judge(1.0)[0] is None
    # Judged "down": it ends unsent at once.
    store.put(HEALTH_KEY, f"down: {SUSPECT}", ttl=None)
    clock = Clock(lambda: store.put(HEALTH_KEY, "down: GET /api/health -> 503", ttl=None))
    assert health(store, Prober((True, "")), clock).judge(1.0)[0] == "GET /api/health -> 503"
    assert clock.now < 0.1
    # Not judged in time: unsent, after the patience.
    store.put(HEALTH_KEY, f"down: {SUSPECT}", ttl=None)
    clock = Clock()
    assert health(store, Prober((True, "")), clock).judge(1.0)[0] == SUSPECT
    assert 1.0 <= clock.now < 1.1


def test_only_a_failed_probe_is_ill_health_for_the_status_line() -> None:
    assert not probed_down(None) and not probed_down(OK)
    assert not probed_down(f"down: {SUSPECT}")  # a 503 for capacity, until probed
    assert probed_down("down: GET /api/health -> 503")


def test_a_wrong_answer_fails_every_worker_at_once_without_probing_again(store: Store) -> None:
    class Wrong(Prober):
        def probe(self, path: str, timeout: float) -> tuple[Probed, str]:
            self.probes += 1
            return Probed.WRONG, "GET /api/health -> 404: no /api/health here"

    prober = Wrong((False, ""))
    clock = Clock()
    first = health(store, prober, clock, wait=60.0).wait_healthy()
    assert first == "API not usable as configured: GET /api/health -> 404: no /api/health here"
    second = health(store, prober, clock, wait=60.0).wait_healthy()
    assert second == first and prober.probes == 1 and clock.now == 0.0
    assert probed_down(store.get(HEALTH_KEY))  # the live line says unhealthy


def test_workers_asking_at_once_send_one_probe(store: Store) -> None:
    # Each HealthProbe stands for a worker process. All of them have looked at whose turn
    # it is before any takes it (as after a pause, when every worker asks at once): one
    # probe still answers for all of them.
    class Slow(Prober):
        def probe(self, path: str, timeout: float) -> tuple[Probed, str]:
            with lock:
                self.probes += 1
            time.sleep(0.05)
            return Probed.OK, "GET /api/health -> 200"

    class LookingAtOnce:
        def __init__(self) -> None:
            self.looked = threading.Barrier(WORKERS)

        def __getattr__(self, name: str) -> object:
            return getattr(store, name)

        def get(self, key: str) -> str | None:
            value = store.get(key)
            if key == PROBE_KEY and threading.current_thread() not in looking:
                looking.add(threading.current_thread())  # each worker's first look only
                self.looked.wait(timeout=10.0)
            return value

    WORKERS = 4
    looking: set[threading.Thread] = set()
    lock = threading.Lock()
    prober = Slow((True, ""))
    shared = LookingAtOnce()
    answers: list[str | None] = []

    def worker() -> None:
        probe = HealthProbe(prober, shared, "/api/health", wait=10.0, share=60.0, timeout=5.0)  # type: ignore[arg-type]
        answers.append(probe.wait_healthy())

    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert answers == [None] * WORKERS and prober.probes == 1


def test_a_probe_whose_worker_died_is_taken_over_after_its_lease(store: Store) -> None:
    # The lease is in the value (a compare-and-set sets no expiry): a stale one is claimed.
    store.swap(PROBE_KEY, None, f"{PROBING} {store.clock() - 1:.3f}")
    prober = Prober((True, "GET /api/health -> 200"))
    assert health(store, prober, Clock()).wait_healthy() is None
    assert prober.probes == 1
