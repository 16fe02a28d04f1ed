"""Saturate one shared RateLimiter from several processes and print what a server would see.

Run by hand, from the repository root:

    python benchmarks/ratelimit_bench.py --rate 20 --procs 4 --seconds 10

The first phase holds the limit: every process acquires as fast as it is allowed, and
the admit times give the achieved rate, the busiest 1 s window and each process's
share. The second phase measures what one acquire costs (a store round trip under
contention) with a rate so high that nobody sleeps.
"""

from __future__ import annotations

import itertools
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

from command_line import BenchmarkParser

from pytest_roadmap.ratelimit import MARGIN, RateLimiter
from pytest_roadmap.store import open_store
from pytest_roadmap.store.sqlite import SQLiteStore

UNLIMITED = 1e12


def saturate(
    url: str,
    rate: float,
    burst: int,
    margin: float,
    seconds: float,
    go: Event,
    out: Queue[tuple[list[float], list[float]]],
) -> None:
    """Acquire for `seconds`; report each admit time, and how late each sleep woke."""
    lateness: list[float] = []

    def sleep(seconds: float) -> None:
        due = time.monotonic() + seconds
        time.sleep(seconds)
        lateness.append(time.monotonic() - due)

    with open_store(url) as store:
        limiter = RateLimiter(store, rate, burst, sleep=sleep, margin=margin)
        go.wait()
        admits: list[float] = []
        end = time.time() + seconds
        while time.time() < end:
            limiter.acquire()
            admits.append(time.time())
    out.put((admits, lateness))


def measure_cost(
    url: str, calls: int, go: Event, out: Queue[tuple[list[float], list[float]]]
) -> None:
    """Time `calls` acquires at a rate that never makes anyone wait."""
    with open_store(url) as store:
        limiter = RateLimiter(store, UNLIMITED, key="cost")
        limiter.acquire()  # the first call pays for opening the connection
        go.wait()
        costs: list[float] = []
        for _ in range(calls):
            start = time.perf_counter()
            limiter.acquire()
            costs.append(time.perf_counter() - start)
    out.put((costs, []))


def run_all(
    target: Callable[..., None], args: tuple[object, ...], procs: int
) -> list[tuple[list[float], list[float]]]:
    """Start `procs` copies of `target`, release them together, gather their reports."""
    spawn = multiprocessing.get_context("spawn")
    go = spawn.Event()
    out: Queue[tuple[list[float], list[float]]] = spawn.Queue()
    workers = [spawn.Process(target=target, args=(*args, go, out)) for _ in range(procs)]
    for worker in workers:
        worker.start()
    go.set()
    results = [out.get() for _ in workers]
    for worker in workers:
        worker.join()
    return results


def max_in_window(times: list[float], window: float) -> int:
    """The most events in any closed window of `window` seconds."""
    most, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] > window:
            start += 1
        most = max(most, end - start + 1)
    return most


def percentile(ordered: list[float], fraction: float) -> float:
    """The value below which `fraction` of the sorted values fall (nearest rank)."""
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.rate(20.0)
    parser.add_argument("--burst", type=int, default=1)
    parser.add_argument("--margin", type=float, default=MARGIN, help="spacing margin")
    parser.add_argument("--procs", type=int, default=4)
    parser.seconds(10.0, help="how long the processes saturate the limiter")
    parser.add_argument("--calls", type=int, default=2000, help="acquires per process, cost")
    parser.add_argument("--store", help="store URL (default: a fresh SQLite file)")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        if options.store:
            store = open_store(options.store)
        else:
            store = SQLiteStore.create(Path(folder) / "store.db")
        with store:
            reports = run_all(
                saturate,
                (store.url, options.rate, options.burst, options.margin, options.seconds),
                options.procs,
            )
            costs = [
                cost for cost, _ in run_all(measure_cost, (store.url, options.calls), options.procs)
            ]

    shares = [admits for admits, _ in reports]
    late = sorted(value for _, lateness in reports for value in lateness)
    admits = sorted(moment for share in shares for moment in share)
    span = admits[-1] - admits[0]
    achieved = (len(admits) - 1) / span
    gaps = [later - earlier for earlier, later in itertools.pairwise(admits)]
    every_cost = sorted(cost for share in costs for cost in share)

    print(f"store:               {store.url}")
    print(
        f"limit:               {options.rate:g}/s, burst {options.burst}, margin {options.margin:g}"
    )
    print(f"admits:              {len(admits)} over {span:.2f} s from {options.procs} processes")
    print(f"achieved rate:       {achieved:.2f}/s ({achieved / options.rate:.1%} of the limit)")
    print(f"max in any 1 s:      {max_in_window(admits, 1.0)}")
    interval = RateLimiter(store, options.rate, margin=options.margin).interval
    print(f"smallest gap:        {min(gaps) * 1e3:.2f} ms (interval {interval * 1e3:.2f} ms)")
    print(
        f"wake-up lateness:    median {statistics.median(late) * 1e3:.2f} ms,"
        f" p99 {percentile(late, 0.99) * 1e3:.2f} ms, max {late[-1] * 1e3:.2f} ms"
    )
    print("per-process shares:  " + ", ".join(str(len(share)) for share in shares))
    print(
        f"acquire cost:        median {statistics.median(every_cost) * 1e6:.0f} us,"
        f" p99 {percentile(every_cost, 0.99) * 1e6:.0f} us"
        f" ({len(every_cost)} calls, {options.procs} processes at once)"
    )


if __name__ == "__main__":
    main()
