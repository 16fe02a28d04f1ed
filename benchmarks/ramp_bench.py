"""Workers on one store during a ramp: how many sends a doubling rate gets in its first seconds.

Run by hand, from the repository root:

    python benchmarks/ramp_bench.py -n 3 --seconds 3 --repeat 3

Each worker (a thread, as a worker process would) reserves its next send as soon as its
last one went out. The learned pace ramps from 1/s, doubling every second, capped at 10/s;
the rate allows about (2^T - 1) / ln 2 sends in the first T seconds. "asking" spaces each
slot at the rate in force when its worker asked (before the `Spacing.later` steps),
"steps" at the rate in force when it goes out.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import threading

from command_line import BenchmarkParser

from pytest_roadmap import pacing
from pytest_roadmap.pacing import BETA, Pace, Pacer
from pytest_roadmap.ratelimit import MARGIN, RateLimiter
from pytest_roadmap.store import open_store


def sends(workers: int, seconds: float, steps: bool) -> int:
    """Sends in the first `seconds` of a ramp from 1/s, on a fresh SQLite store."""
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(f"sqlite://{folder}/store.db", create=True)
        store.gate_set_limit("gate", workers)
        pacer = Pacer(store, gate_key="gate", maximum=workers, ceiling=10.0, max_wait=300.0)
        now = store.clock()
        ramp = Pace(limit=workers, peak=1 / BETA, cut_at=now - pacing.RATE_HOLD, ramp=True)
        store.put(pacing.PACE_KEY, ramp.to_json())
        start = store.clock()
        sent: list[float] = []
        lock = threading.Lock()

        def worker() -> None:
            limiter = RateLimiter(store, rate=1.0)
            while store.clock() < start + seconds:
                pace, rate = pacer.before_send()
                limiter.set_rate(rate, pacer.rising(pace) if steps else ())
                limiter.acquire()
                with lock:
                    sent.append(store.clock())

        threads = [threading.Thread(target=worker) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        store.close()
        return sum(at < start + seconds for at in sent)


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.workers(3, help="workers reserving on one store")
    parser.seconds(3.0, help="how long into the ramp to count")
    parser.repeat(3)
    options = parser.parse_args()
    allowed = (2**options.seconds - 1) / math.log(2) / (1 + MARGIN)
    print(f"the ramp allows {allowed:.1f} sends in its first {options.seconds:g} s")
    for steps in (False, True):
        counts = [sends(options.workers, options.seconds, steps) for _ in range(options.repeat)]
        kind = "steps" if steps else "asking"
        print(f"{kind}: {statistics.median(counts):g} sends (runs: {counts})")


if __name__ == "__main__":
    main()
