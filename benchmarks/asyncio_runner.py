"""The baseline: what a user would write instead of pytest-roadmap, in one asyncio process.

An aiohttp session, a semaphore of `--concurrency` and a leaky bucket of `--rate` requests
per second send `--tasks` chat requests (the same POST /api/codebase/chat bodies the plugin
sends for the benchmark's task files) and check each answer as the plugin does. No retries,
no health probes, no report. The benchmarks run it as a subprocess and time it from process
start to exit, like the pytest runs. By hand, against a running sandbox:

    python -m pytest_roadmap.sandbox --port 3000 --latency-ms 50 &
    python benchmarks/asyncio_runner.py --api http://127.0.0.1:3000 --tasks 600 \
        --concurrency 4 --rate 50

It prints one JSON line: tasks passed and failed, and its own wall time from the first
request to the last answer.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
from command_line import BenchmarkParser
from harness import prompt_of

from pytest_roadmap.sandbox import CHAT_PATH


class LeakyBucket:
    """Sends spaced exactly 1/rate apart, in the order callers asked."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next_at = 0.0

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        at = max(now, self.next_at)
        self.next_at = at + self.interval
        if at > now:
            await asyncio.sleep(at - now)


async def run(
    api: str, tasks: int, concurrency: int, rate: float, timeout: float
) -> dict[str, int]:
    url = api.rstrip("/") + CHAT_PATH
    bucket = LeakyBucket(rate)
    gate = asyncio.Semaphore(concurrency)
    outcome = {"passed": 0, "failed": 0}
    connector = aiohttp.TCPConnector(limit=concurrency)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:

        async def one(index: int) -> None:
            body = {"message": prompt_of(index), "model": "custom:default", "useLLM": True}
            async with gate:
                await bucket.wait()
                try:
                    async with session.post(url, json=body) as response:
                        answer = await response.json(content_type=None)
                        ok = response.status == 200 and isinstance(answer, dict)
                        ok = ok and ("code" in answer or "message" in answer)
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    ok = False
            outcome["passed" if ok else "failed"] += 1

        await asyncio.gather(*(one(index) for index in range(tasks)))
    return outcome


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.add_argument("--api", required=True, help="base URL, e.g. http://127.0.0.1:3000")
    parser.add_argument("--tasks", type=int, required=True, help="requests to send")
    parser.add_argument("--concurrency", type=int, required=True, help="requests in flight")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    options = parser.parse_args()
    if not options.api.startswith(("http://127.0.0.1", "http://localhost")):
        parser.error("the baseline only talks to a sandbox on 127.0.0.1")
    start = time.perf_counter()
    outcome = asyncio.run(
        run(options.api, options.tasks, options.concurrency, options.rate, options.timeout)
    )
    print(json.dumps({**outcome, "seconds": round(time.perf_counter() - start, 3)}))


if __name__ == "__main__":
    main()
