"""The one rate limiter every API request goes through, shared by all workers."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from pytest_roadmap.store.base import Store

# Spacing is stretched by this fraction so that late wake-ups cannot push more than
# `rate` requests into one second; see RateLimiter.
MARGIN = 0.01


class RateLimiter:
    """GCRA over a shared store: sends are spaced `(1 + margin) / rate` seconds apart.

    Each `acquire` reserves the next send time in one atomic store operation, then
    sleeps outside any lock until that time, so callers are admitted in reservation
    order however many processes share the store.

    The bound a server sees: in any window of W seconds the reserved times hold at
    most `burst + floor(W * rate / (1 + margin))` sends. Real sends are a little later
    than their reserved times (scheduler wake-up, network); as long as those delays
    differ by less than `margin` seconds (10 ms at the default 1%), a server counting
    requests in any sliding 1.0 s window never sees more than `rate` (rounded up to a
    whole request) with `burst=1`. A `burst` of b lets b requests go back to back after
    an idle spell, and then the same window can hold up to `rate + b - 1`: keep
    `burst=1` against a server that enforces a strict sliding window.
    """

    def __init__(
        self,
        store: Store,
        rate: float,
        burst: int = 1,
        key: str = "rate",
        sleep: Callable[[float], object] = time.sleep,
        margin: float = MARGIN,
    ) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number of requests per second, not {rate}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst}")
        if not 0 <= margin < 1:
            raise ValueError(f"margin must be in [0, 1), not {margin}")
        self.store = store
        self.rate = rate
        self.burst = burst
        self.key = key
        self.interval = (1.0 + margin) / rate
        self._sleep = sleep

    def acquire(self) -> float:
        """Wait for this process's turn to send one request; return the seconds waited."""
        delay = self.store.reserve(self.key, self.interval, self.burst)
        if delay > 0:
            self._sleep(delay)
        return max(delay, 0.0)

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self.rate}, burst={self.burst}, key={self.key!r})"
