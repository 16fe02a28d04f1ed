"""A batch file's `safeguards` block: caps on the run's own settings.

The original system's BATCH_CONFIG.json carries them as the run's outer bounds, so here they
only ever lower what the run would do: the concurrency limit, the rate limit and the health
interval take the smaller of the run's setting and the file's, and the adaptive limit moves
only in the directions the file allows.
"""

from __future__ import annotations

from dataclasses import replace

from pytest_roadmap.batches import SafeguardCaps
from pytest_roadmap.gate import AdaptiveLimit, Change
from pytest_roadmap.settings import Settings


def capped_settings(settings: Settings, caps: SafeguardCaps) -> Settings:
    """`settings` with the rate limit and health interval capped, and the adaptive limit off
    when the file allows it to move in neither direction."""
    rate = settings.rate_limit
    if caps.max_rate_limit is not None:
        rate = min(rate, caps.max_rate_limit)
    interval = settings.health_interval
    if caps.health_check_interval is not None:
        interval = min(interval, caps.health_check_interval)
    moves = caps.auto_reduce_on_failure or caps.auto_increase_on_success
    adaptive = settings.adaptive if moves else "off"
    return replace(settings, rate_limit=rate, health_interval=interval, adaptive=adaptive)


def concurrency_ceiling(slots: int, caps: SafeguardCaps | None) -> int:
    """The most tasks that may do API work at once: the run's slots (workers x requests in
    flight per worker), capped by the file."""
    if caps is None or caps.max_total_concurrency is None:
        return slots
    return max(1, min(slots, caps.max_total_concurrency))


def cap_lines(before: Settings, after: Settings, caps: SafeguardCaps, source: str) -> list[str]:
    """One header line saying what the file's safeguards lowered, or none."""
    parts = []
    workers, inflight = before.workers, before.inflight
    ceiling = concurrency_ceiling(workers * inflight, caps)
    if ceiling < workers * inflight:
        each = f" x {inflight} in flight" if inflight > 1 else ""
        parts.append(f"at most {ceiling} tasks at once ({workers} workers{each})")
    if after.rate_limit < before.rate_limit:
        parts.append(f"rate {after.rate_limit:g}/s (not {before.rate_limit:g})")
    if after.health_interval < before.health_interval:
        parts.append(
            f"health interval {after.health_interval:g} s (not {before.health_interval:g})"
        )
    if before.adaptive != "off" and after.adaptive == "off":
        parts.append("adaptive concurrency off")
    elif after.adaptive != "off" and not caps.auto_reduce_on_failure:
        parts.append("concurrency never lowered")
    elif after.adaptive != "off" and not caps.auto_increase_on_success:
        parts.append("concurrency never raised")
    return [f"roadmap: safeguards of {source}: {', '.join(parts)}"] if parts else []


class OneWayLimit(AdaptiveLimit):
    """An AdaptiveLimit that may only lower the limit, or only raise it."""

    def __init__(
        self, maximum: int, *, interval: float, lower: bool = True, higher: bool = True
    ) -> None:
        super().__init__(maximum, interval=interval)
        self.lower = lower
        self.higher = higher

    def observe(self, ended: int, failed: int) -> Change | None:
        before = self.value
        change = super().observe(ended, failed)
        if change is None:
            return None
        if (change.new < change.old and not self.lower) or (
            change.new > change.old and not self.higher
        ):
            self.value = before
            return None
        return change


def adaptive_limit(ceiling: int, interval: float, caps: SafeguardCaps | None) -> AdaptiveLimit:
    """The adaptive rule for a run whose concurrency tops out at `ceiling`."""
    if caps is None:
        return AdaptiveLimit(ceiling, interval=interval)
    return OneWayLimit(
        ceiling,
        interval=interval,
        lower=caps.auto_reduce_on_failure,
        higher=caps.auto_increase_on_success,
    )
