"""The one rate limiter every API request goes through, shared by all workers."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from pytest_roadmap.store.base import Spacing, Store

# Spacing is stretched by this fraction so that small differences in how late each
# request really goes out cannot push more than `rate` of them into one second. 1% let a
# server see 21 in one window of 1 run in 10 at 20/s on a busy 2-core machine; 2% held
# in 10 of 10 at 98% efficiency (docs/benchmarks.md, row 6).
MARGIN = 0.02


class RateLimiter:
    """GCRA over a shared store: sends are spaced `(1 + margin) / rate` seconds apart.

    Each `acquire` reserves the next send time in one atomic store operation, then
    sleeps outside any lock until that time, so callers are admitted in reservation
    order however many processes share the store.

    The bound a server sees: in any window of W seconds the reserved times hold at
    most `burst + floor(W * rate / (1 + margin))` sends. Real sends go out a little
    later than reserved. A caller that wakes more than `margin / 2` seconds late
    (a starved CPU) moves the shared schedule back by its lateness, so the sends
    reserved after it cannot crowd in behind it. What remains is the smaller jitter:
    as long as the delays of different requests differ by less than `margin` seconds
    (20 ms at the default 2%), a server counting requests in any sliding 1.0 s window
    sees no more than `rate` (rounded up to a whole request) with `burst=1`. A `burst`
    of b lets b requests go back to back after an idle spell, and the same window
    can then hold up to `rate + b - 1`: keep `burst=1` against a server that
    enforces a strict sliding window.
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
        self._margin = margin
        self.interval = (1.0 + margin) / rate
        self.later: tuple[tuple[float, float], ...] = ()
        # Lateness up to this is left to the margin; beyond it, it is charged to the store.
        self.tolerance = margin / 2
        self._sleep = sleep

    def set_rate(self, rate: float, later: Sequence[tuple[float, float]] = ()) -> None:
        """Space the next reservations for `rate` (the learned pace moves it), and for the
        `(from, rate)` steps of `later` where a send falls at or after one (a rate that
        rises with time: `Spacing.later`)."""
        if rate != self.rate:
            self.rate = rate
            self.interval = (1.0 + self._margin) / rate
        self.later = tuple((at, (1.0 + self._margin) / step) for at, step in later)

    def acquire(self) -> float:
        """Wait for this process's turn to send one request; return the seconds slept."""
        return acquire_together([self])

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self.rate}, burst={self.burst}, key={self.key!r})"


def acquire_together(limiters: Sequence[RateLimiter]) -> float:
    """Wait until one send is allowed by every limiter (all on one store); seconds slept."""
    store = limiters[0].store
    send_at = store.reserve_all(
        [Spacing(lim.key, lim.interval, lim.burst, lim.later) for lim in limiters]
    )
    wait = send_at - store.clock()
    if wait > 0:
        limiters[0]._sleep(wait)
    # Woken late (or held up on the way), this send goes out after its slot while the
    # ones reserved after it keep theirs: charge the lateness to each schedule as an
    # extra send that long. Charging takes time too, so catch up until the rest is small
    # enough for the margin, within a few rounds.
    tolerance = min(lim.tolerance for lim in limiters)
    charged = 0.0
    for _ in range(3):
        late = store.clock() - send_at - charged
        if late <= tolerance:
            break
        store.reserve_all([(lim.key, late, 1) for lim in limiters])
        charged += late
    return max(wait, 0.0)
