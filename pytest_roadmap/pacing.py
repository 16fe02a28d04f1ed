"""Learned pacing: the run's concurrency limit, send rate and pauses, moved by the API's answers.

Users rarely know their API's limits, and the limits move. So every answer teaches the run:

- a refusal for load (503, a refused or reset connection, a timeout) halves the shared
  concurrency limit at once; refusals of requests sent before that cut are the same burst
  and change nothing (each request carries the limit's epoch from when it was sent). The
  limit grows back by one per round of answers while it is in use (tasks waiting for a
  slot), and only slowly past the level that was refused: a probe there waits
  `PROBE_WAIT` seconds after the last change, twice as long after each failed probe;
- a 429 says the send rate is above the server's: the shared rate drops to what the server
  was accepting, and grows back along a CUBIC curve (as the AWS SDKs' adaptive retry
  mode does), flat near that rate for several seconds, then faster; judged on a single
  answer, or on answers sent further apart than the refused request, it doubles every
  second instead until the next refusal (once a run), which is judged by the closest two
  sends the ramp had accepted, again as its last sends are answered; while the rate
  rises, each send is spaced at the rate in force when it goes out (`Pacer.rising`). A
  503 is such a refusal too when it came at one request in flight, during the ramp, or
  much closer to the last accepted send than those came to each other;
- `Retry-After` pauses the whole run ("nothing before T"); one longer than the longest
  wait allowed means the quota is gone, and the run stops starting tasks;
- `RateLimit-*`, `RateLimit`/`RateLimit-Policy` and `x-ratelimit-*-requests` headers pace
  the run at the limit they say per window (the policy's, else the longest reset said):
  the whole of it in a window of up to `OWN_WINDOW`, else one request short; with no limit
  said, so the remaining budget lasts until the reset. They pause it at 0, until the reset,
  or, when the run's own sends fill the window, until the oldest of them leaves it;
  `x-ratelimit-remaining-tokens` at 0 pauses it until `x-ratelimit-reset-tokens`. A
  gateway's `x-ratelimit-remaining-*` with no reset is a budget per calendar minute;
- a 429 for a request sent while the server's window was already known spent (after a
  refusal in it, or a budget at 0 until its turn) says nothing new of the rate.

All of it is one JSON document in the store (`PACE_KEY`), changed only by compare-and-set,
so every worker and every CI shard sharing the store learns as one client. The rules are
pure functions of that document (no I/O), so they can be tested on their own; `Pacer` is
the I/O around them. Every change is also appended to the store as an event, which the
controller's monitor prints and records.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pytest_roadmap.store.base import Store
from pytest_roadmap.validation import duration

PACE_KEY = "pace"
EVENTS_KEY = "pace:events"
REFUSED_KEY = "pace:refused"
# Answers that were no refusal, per 50 ms of their send time (at most one key per request):
# a 429 is judged by what the server accepted in the second before it.
ACCEPTED_KEY = "pace:accepted"
BUCKET = 0.05

# Concurrency: the factor of a cut, and how long a probe past a refused level waits.
CUT = 0.5
PROBE_WAIT = 2.0
MAX_PROBE_WAIT = 60.0
# Rate: a cut sets the rate to this share of what the server accepted, then CUBIC growth
# W(t) = W_max + C (t - K)^3 with C = CUBIC_SCALE * W_max; K makes W(0) = BETA * W_max.
# With these, the rate stays within 2% of W_max for about 8 s after a cut and doubles
# after about 19 s (the AWS SDKs use C = 0.4 requests/s^3 and BETA = 0.7, which at 4
# requests/s probe past W_max within 2 s: a refusal every couple of seconds).
BETA = 0.95
CUBIC_SCALE = 0.0004
CUBIC_K = float(((1 - BETA) / CUBIC_SCALE) ** (1 / 3))  # math.cbrt is 3.11+
MIN_RATE = 0.05
# A server spacing requests with no burst (nginx's limit_req) refuses the run's second
# request: "it accepted 1 in the second before" is no measure of its rate, and paced at
# 0.95/s the run spent 25 s on CUBIC's plateau where 4/s were allowed. A cut judged on at
# most one answered request ramps instead: the rate doubles every RAMP_DOUBLING seconds
# after the hold, as TCP's slow start does, until the next refusal. That refusal judges the
# rate by the send it refused: it came RAMP_KEEP / gap after the last one accepted. A
# server counting requests per second accepts the run's first few at its full speed, so it
# never ramps. Once per run: a server allowing one a second would be ramped past forever.
RAMP_DOUBLING = 1.0
RAMP_KEEP = 0.9
# The ramp's accepted sends kept to judge its end by (`proven_rate`): more than its last
# second holds at the rates it ends at.
RAMP_SENDS = 16
# A 429 without Retry-After: the server's window is full now, so nothing goes out for this
# long (and refusals of requests sent within it are the same burst).
RATE_HOLD = 1.0
# A refused send that followed the last accepted one at under 1/CLOSER of their mean
# spacing was refused for its spacing, not for the count (`Pacer.answered`): it ramps.
CLOSER = 2.0
# A quota the server announced stands this long after the last answer that said it.
POLICY_HOLD = 60.0
# A budget said with no reset (a LiteLLM proxy's `x-ratelimit-remaining-requests`) is one
# per calendar minute: the gateways that send it so count per deployment and UTC minute
# (LiteLLM keys its counters "%H-%M"), and LLM providers state their limits per minute.
# Spread over the time to the minute's turn, the budget is used whole in every minute,
# which a full minute from each answer would not (that decays: about 63% of it); a server
# counting a sliding minute says so in its own `remaining` after the turn. TURN_MARGIN
# allows for two hosts' clocks.
MINUTE = 60.0
TURN_MARGIN = 0.5
# The slowest such a budget is spread: a send every 2 s. Spread thinner (a few left with a
# minute to go), the sends wait in the limiter, inside the attempt's timer, n workers times
# the spacing: against a LiteLLM proxy at 6 a minute the run went at 0.08/s and its tasks
# timed out in the limiter. Sent at this pace, the budget runs out before the turn and the
# run pauses at 0 until it, holding no slot.
MINUTE_FLOOR = 0.5
# Pauses this short are waited out inside a request; longer ones end the attempt unsent,
# and the task waits in its next setup, holding no slot.
INLINE_PAUSE = 1.0
# A rate that grows with time is handed to a reservation as steps of RISE_STEP seconds
# over the next RISE_STEPS of them (`Pacer.rising`), each at least RISING times the last:
# enough to cover the queue of a few workers at a ramp's slow start.
RISE_STEP = 0.1
RISE_STEPS = 30
RISING = 1.01
# A quota per window this short is paced at the whole quota: the run's own accepted sends
# (ACCEPTED_KEY, one read per 50 ms of the window) tell whether a 0 left is its own doing.
# Over longer windows that would take too many reads, and one request is kept in hand.
OWN_WINDOW = 2.0
# Paced at the whole quota, each window is stretched by this much: a send that leaves late
# (two shared cores, four workers) and the next on time must not put one more than the
# quota in the server's window.
SEND_MARGIN = 0.05

MODES = ("aimd", "seed", "off")


class QuotaExhausted(Exception):
    """The API's quota is exhausted: no task starts any more (the reason says why)."""


class Paused(Exception):
    """The run is paused for longer than a request should wait; nothing was sent."""

    def __init__(self, until: float, reason: str) -> None:
        super().__init__(reason)
        self.until = until
        self.reason = reason


@dataclass
class Pace:
    """The shared document. Times are on the store's clock."""

    limit: int  # the concurrency limit in force (mirrored into the gate)
    epoch: int = 0  # bumps with every change of `limit`
    refused_at: int = 0  # the limit at which the server last refused for load (0: never)
    probe_wait: float = PROBE_WAIT
    changed_at: float = 0.0
    acked: int = 0  # answers of this epoch while the limit was in use
    peak: float = 0.0  # CUBIC's W_max: the rate accepted at the last 429 (0: not learned)
    cut_at: float = 0.0
    ramp: bool = False  # the peak was judged on one answer: it doubles until refused
    ramped: bool = False  # a ramp has run in this run (it runs once)
    ramp_sends: list[float] = dataclasses.field(default_factory=list)  # its accepted sends
    ended_by: float = 0.0  # the send that ended the ramp (0: none to judge by later answers)
    ended_rate: float = 0.0  # the rate in force when it was refused
    header_rate: float = 0.0  # the pace the server's rate-limit headers ask for (0: none)
    header_until: float = 0.0
    policy_rate: float = 0.0  # the steady rate of a quota the server announced (0: none)
    policy_until: float = 0.0
    announced: str = ""  # the server's announced limit, as it last said it
    window: float = 0.0  # the longest reset said with that limit: its window, as learned
    in_hand: bool = False  # a refusal came while paced at the whole quota: keep one in hand
    until: float = 0.0  # nothing is sent before this
    refused_until: float = 0.0  # the server's window known spent ends then (a 429, a 0 left)
    until_reason: str = ""
    stop: str = ""  # the quota is exhausted: why the run stops

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None, limit: int) -> Pace:
        if not text:
            return cls(limit=limit)
        try:
            data = json.loads(text)
            return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})
        except (ValueError, TypeError):
            return cls(limit=limit)

    def rate(self, ceiling: float, now: float) -> float:
        """The send rate in force: the configured ceiling, the learned curve, the headers."""
        rate = ceiling
        if self.peak > 0 and self.ramp:
            doublings = max(0.0, now - self.cut_at - RATE_HOLD) / RAMP_DOUBLING
            rate = min(rate, BETA * self.peak * math.pow(2.0, min(doublings, 30.0)))
        elif self.peak > 0:
            rate = min(rate, cubic(self.peak, now - self.cut_at))
        if self.header_rate > 0 and now < self.header_until:
            rate = min(rate, self.header_rate)
        if self.policy_rate > 0 and now < self.policy_until:
            rate = min(rate, self.policy_rate)
        return max(rate, min(MIN_RATE, ceiling))  # the configured rate is never exceeded


def cubic(peak: float, elapsed: float) -> float:
    """CUBIC's window for a rate: BETA * peak right after the cut, flat near peak, then up."""
    return peak + CUBIC_SCALE * peak * math.pow(max(0.0, elapsed) - CUBIC_K, 3)


@dataclass(frozen=True)
class Event:
    """One change the run should show: `kind` is concurrency, rate, pause or stop."""

    kind: str
    at: float
    old: float
    new: float
    reason: str

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Event:
        data = json.loads(text)
        return cls(
            str(data["kind"]),
            float(data["at"]),
            float(data["old"]),
            float(data["new"]),
            str(data["reason"]),
        )


# --------------------------------------------------------------------------- the rules


def on_overload(pace: Pace, epoch: int, now: float, what: str) -> Event | None:
    """A request sent at `epoch` was refused for load: cut the limit, once per burst."""
    if epoch != pace.epoch or pace.limit <= 1:
        return None
    old = pace.limit
    if pace.refused_at and old >= pace.refused_at:  # a probe past the refused level failed
        pace.probe_wait = min(MAX_PROBE_WAIT, pace.probe_wait * 2)
    else:
        pace.probe_wait = PROBE_WAIT
    pace.refused_at = old
    pace.limit = max(1, math.ceil(old * CUT))
    pace.epoch += 1
    pace.changed_at, pace.acked = now, 0
    return Event("concurrency", now, old, pace.limit, f"{what} at {old} in flight")


def on_success(pace: Pace, epoch: int, in_use: bool, now: float, maximum: int) -> Event | None:
    """An answer that was not a refusal: one round of them while the limit is in use grows
    it by one; past the refused level only after the probe wait."""
    if epoch != pace.epoch or not in_use or pace.limit >= maximum:
        return None
    pace.acked += 1
    if pace.acked < pace.limit:
        return None
    if pace.refused_at and pace.limit >= pace.refused_at:
        # A whole round at the level once refused, and no refusal: it holds now.
        pace.refused_at, pace.probe_wait = 0, PROBE_WAIT
    new = pace.limit + 1
    probing = bool(pace.refused_at) and new >= pace.refused_at
    if probing and now - pace.changed_at < pace.probe_wait:
        return None
    old = pace.limit
    pace.limit = new
    pace.epoch += 1
    pace.changed_at, pace.acked = now, 0
    if probing:
        reason = f"no refusal for {pace.probe_wait:g} s: probing {new}, refused before"
    else:
        reason = f"{old} answers in a row with tasks waiting"
    return Event("concurrency", now, old, new, reason)


def on_throttled(
    pace: Pace,
    sent_at: float,
    now: float,
    accepted: float | None,
    ceiling: float,
    hold: float = RATE_HOLD,
    what: str = "429",
    *,
    thin: bool = False,
    gap: float | None = None,
    why: str = "too few to judge",
) -> Event | None:
    """A 429: the send rate is above the server's. Cut to what it was accepting, once per
    burst (requests sent within `RATE_HOLD` of the last cut are the same burst), and never
    for a request sent while the server's window was already known spent: it refused
    because the window is full, which the run knew. `hold`: how long this refusal's
    window lasts (its Retry-After, else `RATE_HOLD`). `thin`: what the server accepted in
    the second before does not measure its rate (`why`: too few, or sent further apart
    than the refused one): the cut ramps, once a run; `gap`: seconds from the last send
    it accepted to this one."""
    if sent_at < pace.refused_until:
        return None
    if pace.peak > 0 and sent_at < pace.cut_at + RATE_HOLD:
        return None
    old = pace.rate(ceiling, now)
    peak = accepted if accepted is not None and accepted > 0 else old / 2
    if 0 < pace.peak < old:
        # A probe past the learned rate failed: that rate held, the server did not change.
        peak = max(peak, pace.peak)
    elif pace.ended_by > 0 and old >= BETA * pace.peak:
        # Refused on CUBIC's plateau, just under the rate a ramp's end was judged at: that
        # was a little high (a send's time is taken before it leaves, so two sends the
        # server accepted 0.25 s apart can look 0.23 s apart). One step down, once, not to
        # the count of a second, which at one request in flight was 1 and left the run at
        # 0.95/s against 4/s. Refused again, the server's limit went down: the count.
        peak = max(peak, BETA * pace.peak)
    if pace.ramp:
        # The ramp is refused: the sends before ramped up through the second, so what was
        # accepted in it is low; the send refused is the rate the server no longer takes,
        # and the closest two sends it accepted are a rate it takes. Sends still out now
        # judge it again once answered (`on_ramp_accept`).
        if gap is not None and gap > 0:
            peak = max(peak, RAMP_KEEP / gap)
        peak = max(peak, proven_rate(pace.ramp_sends, sent_at))
        pace.ended_by, pace.ended_rate = sent_at, old
    else:
        pace.ended_by = pace.ended_rate = 0.0
        pace.ramp_sends = []
    pace.ramp = thin and not pace.ramped
    pace.ramped = pace.ramped or pace.ramp
    pace.peak = max(MIN_RATE, min(old, peak))
    pace.cut_at = now
    pace.refused_until = max(pace.refused_until, now + hold)
    new = pace.rate(ceiling, now)
    words = (
        f"it accepted {accepted:g} requests in the second before"
        if accepted
        else "it accepted none in the second before"
    )
    if pace.ramp:
        words += f": {why}, doubling until refused"
    return Event("rate", now, old, new, f"{what} from the API ({words})")


def proven_rate(sends: list[float], before: float) -> float:
    """The rate of the closest two consecutive `sends` made before `before`: a rate the
    server accepted (0.0: fewer than two). A server spacing requests admits none closer
    than its interval, so this never exceeds its rate; a send between two of them still out
    only makes the gap longer."""
    times = sorted(t for t in sends if t < before)
    gaps = [later - sooner for sooner, later in itertools.pairwise(times) if later > sooner]
    return 1.0 / min(gaps) if gaps else 0.0


def on_ramp_accept(pace: Pace, sent_at: float, now: float, ceiling: float) -> Event | None:
    """A send made at `sent_at` while the rate ramped was accepted. While it ramps, it is
    kept (`ramp_sends`); answered after the send that ended the ramp was judged, it may
    show the server took more than that judgement knew: the cut sees only the answers in by
    then, and behind nginx at 7 r/s with 250 ms answers the send just before the refused
    one is still out (the run learned 5.7/s). Raises the learned rate to `proven_rate`,
    never past the rate in force at the refusal."""
    if not pace.ramp and (sent_at >= pace.ended_by or pace.peak <= 0):
        return None  # sent after the ramp's end, or no ramp to judge
    pace.ramp_sends = sorted([*pace.ramp_sends, sent_at])[-RAMP_SENDS:]
    if pace.ramp:
        return None
    peak = min(pace.ended_rate, proven_rate(pace.ramp_sends, pace.ended_by))
    if peak <= pace.peak:
        return None
    old = pace.rate(ceiling, now)
    pace.peak = peak
    new = pace.rate(ceiling, now)
    return Event(
        "rate",
        now,
        old,
        new,
        f"sends of the ramp answered after its end were accepted {1 / peak:.2g} s apart",
    )


def on_pause(pace: Pace, seconds: float, now: float, reason: str) -> Event | None:
    """Nothing is sent for `seconds`, by anyone. A pause that only lengthens one already
    running (several workers told the same) is no new event."""
    until = now + seconds
    if until <= pace.until:
        return None
    running = pace.until > now
    pace.until, pace.until_reason = until, reason
    return None if running else Event("pause", now, 0.0, seconds, reason)


def on_stop(pace: Pace, now: float, reason: str) -> Event | None:
    if pace.stop:
        return None
    pace.stop = reason
    return Event("stop", now, 0.0, 0.0, reason)


def on_headers(
    pace: Pace,
    limits: Limits,
    now: float,
    ceiling: float,
    *,
    refused: bool = False,
    own_wait: float | None = None,
) -> list[Event]:
    """Pace by what the server says of its budget; pause while none is left.

    A quota per window is paced at its steady rate (`steady_rate`), which keeps any
    window, sliding or fixed, within it; it stands while the server keeps saying it, also
    after a pause, when no answer has come yet to say it again. Without a limit, the
    budget left is spread over the time to the reset. At 0 left nobody sends until the
    reset, counted from the answer (the server may have counted from any moment up to it),
    unless the run's own sends fill the window (`own_wait`: then until the oldest of them
    leaves it). `refused`: the answer was a 429 or 503, whose reset may be a penalty, not
    the window; paced at the whole quota, the run keeps one request in hand from then on.
    """
    old = pace.rate(ceiling, now)
    said = bool(limits.announced) and limits.announced != pace.announced
    if said:
        # Another quota: learn again.
        pace.announced, pace.window, pace.in_hand = limits.announced, 0.0, False
    if refused and limits.quota > 0:
        pace.in_hand = True
    steady = steady_rate(pace, limits, learn=not refused)
    first_window = False
    if steady:
        pace.policy_rate, pace.policy_until = steady, now + POLICY_HOLD
        spread = (limits.remaining - 1) / max(limits.reset, 0.05)
        if said and spread >= MINUTE_FLOOR:
            # The requests sent before the quota was known, at the configured rate, count in
            # this window: until its reset, what is left of it is spread, one kept in hand.
            # Not thinner than MINUTE_FLOOR, whose sends would wait in the limiter inside
            # their attempts' timers; a 0 pauses the run in the tasks' setups instead.
            pace.header_rate, pace.header_until = spread, now + limits.reset
            first_window = True
    elif limits.remaining > 0:
        pace.header_rate = max(limits.floor, limits.remaining / max(limits.reset, 0.05))
        pace.header_until = now + limits.reset
    events: list[Event] = []
    if said:
        new = pace.rate(ceiling, now)
        words = f"the API announces {limits.announced}"
        steady_then = pace.rate(ceiling, pace.header_until)
        if first_window and steady_then > new:
            # The summary shows this change alone: say where the pace goes after the spread.
            words += f"; {steady_then:.3g}/s once what is left of its first window is spread"
        events.append(Event("rate", now, old, new, words))
    if limits.remaining <= 0:
        wait = limits.reset if own_wait is None or refused else own_wait
        if wait > 0:
            on_pause(pace, wait, now, f"{limits.source} 0")  # routine pacing: no line
            pace.refused_until = max(pace.refused_until, now + wait)
    return events


def steady_rate(pace: Pace, limits: Limits, *, learn: bool = True) -> float:
    """The rate at which the quota the server announces lasts for good (0.0: none known).

    The window is the policy's, else the longest reset said with the limit, learned in
    `Pace.window` (a reset never exceeds its window). A window of at most `OWN_WINDOW` is
    paced at the whole quota, each window stretched by `SEND_MARGIN`: at the whole quota a
    server counting a sliding window says 0 left at almost every answer, and the run tells
    from its own sends that the 0 is its own (`Pacer.own_wait`) instead of pausing until
    the reset (a whole second, rounded up, in `RateLimit-Reset`, which halved its speed).
    Longer windows, and any after a refusal (`Pace.in_hand`), keep one request of each
    window in hand, so the budget never reaches 0. A learned window is too short until a
    reset is seen whole, and the budget then runs out before the reset, which pauses the
    run until it, as the server says; a server refilling a bucket that says the time until
    it is full (OpenAI's `x-ratelimit-reset-requests`) says longer resets as it drains, and
    the rate settles at its refill with the budget just above 0. `learn`: the reset may
    lengthen the window.
    """
    if limits.steady:  # a policy: its quota per its window
        quota = limits.quota
        window = quota / limits.steady if quota > 0 else 0.0
    elif limits.quota <= 0:
        return 0.0
    else:
        quota = limits.quota
        if learn:
            pace.window = max(pace.window, limits.reset)
        window = pace.window
    if window <= 0:
        return limits.steady
    if window <= OWN_WINDOW and not pace.in_hand:
        return quota / (window + SEND_MARGIN)
    return max(1, quota - 1) / window


# --------------------------------------------------------------------------- headers


@dataclass(frozen=True)
class Limits:
    """What a server's rate-limit headers say: requests left, seconds until the reset."""

    remaining: int
    reset: float
    source: str  # the header family, for the reasons
    announced: str = ""  # "5 requests per 1 s" when the server says its quota
    steady: float = 0.0  # requests/s the announced quota allows for good (0: unknown)
    floor: float = 0.0  # the budget is never spread thinner than this (requests/s)
    # The limit as a number (0: not said), for its steady rate; left out of comparisons:
    # `announced` says it in words.
    quota: int = dataclasses.field(default=0, compare=False)


_PARAM = re.compile(r";\s*([a-z]+)=(\d+(?:\.\d+)?)")


def _whole(text: str | None) -> int | None:
    if text is None or not re.fullmatch(r"\s*\d{1,12}\s*", text):
        return None
    return int(text)


def parse_limits(headers: Mapping[str, str], now: float | None = None) -> Limits | None:
    """The request budget a server announces, in any of three header families; None if none.

    `RateLimit-Limit/Remaining/Reset` (IETF draft, delta seconds), `RateLimit: "p";r=R;t=S`
    with `RateLimit-Policy: "p";q=Q;w=W` (the newer draft), and `x-ratelimit-limit-requests`
    / `-remaining-requests` / `-reset-requests` (durations like "1s" or "6m0s"). Values that
    do not parse are ignored, as if the header were absent. Given `now` (seconds since the
    epoch), an `x-ratelimit-*` pair with no reset is a budget until the next calendar
    minute (`MINUTE`).
    """
    get = _lower(headers)
    found = _triple(get, "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
    if found is not None:
        return found
    combined = get("ratelimit")
    if combined:
        params = dict(_PARAM.findall(combined))
        if "r" in params and "t" in params:
            said, steady = "", 0.0
            policy = dict(_PARAM.findall(get("ratelimit-policy") or ""))
            if "q" in policy:
                window = f" per {float(policy['w']):g} s" if "w" in policy else ""
                said = f"{int(float(policy['q']))} requests{window} (RateLimit-Policy)"
                if float(policy.get("w", 0)) > 0:
                    steady = float(policy["q"]) / float(policy["w"])
            quota = int(float(policy["q"])) if "q" in policy else 0
            return Limits(
                int(float(params["r"])),
                float(params["t"]),
                "RateLimit",
                said,
                steady,
                quota=quota,
            )
    return _triple(
        get,
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        now=now,
    )


def minute_turn(now: float) -> float:
    """Seconds from `now` until the next calendar minute begins, and a margin for clocks."""
    return MINUTE - now % MINUTE + TURN_MARGIN


def _triple(
    get: Callable[[str], str | None],
    limit: str,
    remaining: str,
    reset: str,
    unit: str = "requests",
    now: float | None = None,
) -> Limits | None:
    """A limit / remaining / reset family of headers, as `Limits`; None unless both the
    remaining budget and the reset parse. With `now`, a remaining budget and its limit
    with no reset header at all are a budget per calendar minute."""
    said_left = get(remaining.lower())
    left = _whole(said_left)
    if left is None and said_left is not None and re.fullmatch(r"\s*-\d{1,12}\s*", said_left):
        # A LiteLLM proxy that counts without enforcing goes below 0: none is left.
        left = 0
    quota = _whole(get(limit.lower()))
    said = f"{quota} {unit} ({limit})" if quota is not None else ""
    raw = get(reset.lower())
    if raw is None and now is not None and left is not None and quota is not None:
        said = f"{quota} {unit} a minute ({limit}, no reset)"
        floor = MINUTE_FLOOR if unit == "requests" else 0.0
        return Limits(left, minute_turn(now), remaining, said, floor=floor)
    seconds = duration((raw or "").strip())
    if left is None or seconds is None:
        return None
    return Limits(left, seconds, remaining, said, quota=quota or 0)


def parse_token_limits(headers: Mapping[str, str], now: float | None = None) -> Limits | None:
    """The token budget a server announces in OpenAI's `x-ratelimit-remaining-tokens` /
    `-reset-tokens` (with `now`, a gateway's pair with no reset: until the minute's turn);
    None if it does not."""
    return _triple(
        _lower(headers),
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
        "tokens",
        now=now,
    )


def _lower(headers: Mapping[str, str]) -> Callable[[str], str | None]:
    lowered = {k.lower(): v for k, v in headers.items()}
    return lowered.get


# --------------------------------------------------------------------------- I/O


@dataclass(frozen=True)
class Ticket:
    """What a request carries from its send to its answer."""

    sent_at: float
    epoch: int
    limit: int  # the concurrency limit when it was sent
    ramp: bool = False  # sent while the rate ramped: its answer may judge the ramp's end


class Pacer:
    """One process's hands on the shared pace: read before every send, changed by answers.

    `mode` is "aimd" (the rules above), "seed" (the original system's rule moves the
    concurrency limit, from the controller's monitor) or "off" (limit and rate stay as
    configured). The server's own words (Retry-After, rate-limit headers, an exhausted
    quota) are obeyed in every mode.
    """

    def __init__(
        self,
        store: Store,
        *,
        gate_key: str,
        maximum: int,
        ceiling: float,
        max_wait: float,
        mode: str = "aimd",
        lower: bool = True,
        higher: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.store = store
        self.gate_key = gate_key
        self.maximum = maximum
        self.ceiling = ceiling
        self.max_wait = max_wait
        self.mode = mode
        # A batch file's safeguards may let the limit move one way only (the original's
        # autoReduceOnFailure / autoIncreaseOnSuccess).
        self.lower, self.higher = lower, higher
        self._sleep = sleep

    # -- reading

    def read(self) -> Pace:
        return Pace.from_json(self.store.get(PACE_KEY), self.maximum)

    def check(self) -> Pace:
        """The pace before a task starts or a request goes out; raises QuotaExhausted."""
        pace = self.read()
        if pace.stop:
            raise QuotaExhausted(pace.stop)
        return pace

    def wait_pause(self) -> None:
        """Wait out a pause (in a task's setup, holding no slot); QuotaExhausted once the
        quota is gone."""
        while True:
            pace = self.check()
            left = pace.until - self.store.clock()
            if left <= 0:
                return
            self._sleep(min(left, 1.0))

    def before_send(self) -> tuple[Pace, float]:
        """The pace and the send rate for the next request; Paused if it must not go now."""
        pace = self.check()
        now = self.store.clock()
        left = pace.until - now
        if left > INLINE_PAUSE:
            raise Paused(pace.until, pace.until_reason)
        if left > 0:
            self._sleep(left)
            now = self.store.clock()
        return pace, pace.rate(self.ceiling, now)

    def rising(self, pace: Pace) -> tuple[tuple[float, float], ...]:
        """While the learned rate rises with time (the ramp, CUBIC away from its plateau):
        `(from, rate)` steps of the next RISE_STEPS * RISE_STEP seconds, for a slot that
        comes later to be spaced at the rate in force then (`Spacing.later`); empty while
        the rate is flat. Each worker reserves its slot when it asks, up to a slot per
        worker ahead: spaced at the rate of the asking, the sends trailed a doubling rate
        by seconds."""
        now = self.store.clock()
        last = pace.rate(self.ceiling, now)
        if pace.rate(self.ceiling, now + RISE_STEPS * RISE_STEP) <= last * RISING:
            return ()
        steps: list[tuple[float, float]] = []
        for k in range(1, RISE_STEPS + 1):
            at = now + k * RISE_STEP
            rate = pace.rate(self.ceiling, at)
            if rate > last * RISING:
                steps.append((at, rate))
                last = rate
        return tuple(steps)

    # -- learning

    def answered(
        self,
        ticket: Ticket,
        status: int | None,
        headers: Mapping[str, str],
        *,
        overload: str | None = None,
        retry_after: float | None = None,
    ) -> float | None:
        """Learn from one answer: `status` None with `overload` for a network failure that
        smells of load (its words), else the HTTP status and headers. Returns the wait an
        answer at 0 left came to when the run's own sends explain the 0 (`own_wait`)."""
        now = self.store.clock()
        limits = parse_limits(headers, now) if status is not None else None
        refused = status in (429, 503)
        if refused:
            self.store.incr(REFUSED_KEY)
            self.store.incr(f"{REFUSED_KEY}:{status}")
        elif status is not None and (self.mode == "aimd" or limits is not None):
            # Counted once answered, off the path from admission to send.
            self.store.incr(f"{ACCEPTED_KEY}:{int(ticket.sent_at / BUCKET)}")
        own_wait = None
        if limits is not None and limits.remaining <= 0 and not refused:
            own_wait = self.own_wait(limits, ticket.sent_at, now)
        if retry_after is not None and refused:
            words = f"Retry-After {retry_after:g} s on a {status}"
            if retry_after > self.max_wait:
                self.stop(
                    f"API quota exhausted: Retry-After {retry_after:g} s "
                    f"(longer than --roadmap-max-wait {self.max_wait:g} s)"
                )
                return None
            self._change(lambda p: _listed(on_pause(p, retry_after, now, words)))
        if limits is not None:
            self._change(
                lambda p: on_headers(
                    p, limits, now, self.ceiling, refused=refused, own_wait=own_wait
                )
            )
        tokens = parse_token_limits(headers, now) if status is not None else None
        if tokens is not None and tokens.remaining <= 0:
            # The server's token budget is spent until its reset: nobody sends before (a
            # routine pause, like a request budget at 0: no line).
            def spent(pace: Pace) -> list[Event]:
                on_pause(pace, tokens.reset, now, f"{tokens.source} 0")
                pace.refused_until = max(pace.refused_until, now + tokens.reset)
                return []

            self._change(spent)
        # A 503 sent while one request at a time was all the run allowed cannot be load:
        # the server refuses by rate and says it with a 503 (nginx's limit_req does by
        # default). Cutting the concurrency can do nothing more, and without a cut of the
        # rate the next request (and the health probe before it) came as fast as the last,
        # to be refused again, for as long as the run lasted.
        # While the rate ramps, a 503 is its overshoot whatever the concurrency. So is one
        # sent much closer to the last request the server accepted than those came to each
        # other (`closer`, below): behind nginx answering 503, the run's health probes are
        # accepted and the task 0.1 s after each refused; read as load, the concurrency came
        # down 3 -> 2 -> 1 (a refusal and a probe each) before the rate was cut at all.
        by_rate = status == 429 or (status == 503 and (ticket.limit <= 1 or self.read().ramp))
        spaced = False
        learn = self.mode == "aimd" and limits is None and tokens is None
        if refused and learn:
            answered, first, last = self.answered_before(ticket.sent_at)
            gap = ticket.sent_at - last if last is not None else None
            # Too few answers to judge the server's rate by, or the refused send came much
            # closer to the last accepted one than those came to each other: against
            # nginx's limit_req, the health probes between 503s are accepted and the send
            # 0.1 s after each is refused, so "3 accepted" measured the probes' pace.
            closer = (
                answered >= 2
                and first is not None
                and last is not None
                and gap is not None
                and gap * CLOSER < (last - first) / (answered - 1)
            )
            spaced = status == 503 and not by_rate and closer
            by_rate = by_rate or spaced
            if by_rate:
                waiting = max(0, self.store.gate_state(self.gate_key)[0] - 1)
                accepted = float(answered + waiting)
                why = "too few to judge" if answered <= 1 else "sent closer than those it accepted"

                def cut(pace: Pace) -> list[Event]:
                    # Far over the server's rate, its window is full: nobody sends until it has
                    # drained. A probe just past the learned rate overshot by a request or so.
                    probe = 0 < pace.peak < pace.rate(self.ceiling, now)
                    hold = RATE_HOLD if retry_after is None else max(RATE_HOLD, retry_after)
                    what = "429" if status == 429 else f"{status} at one request in flight"
                    if spaced:
                        what = f"{status} for a send closer than those accepted"
                    event = on_throttled(
                        pace,
                        ticket.sent_at,
                        now,
                        accepted,
                        self.ceiling,
                        hold,
                        what=what,
                        thin=answered <= 1 or closer,
                        gap=gap,
                        why=why,
                    )
                    if event is None or probe or retry_after is not None:
                        return _listed(event)
                    return _listed(event, on_pause(pace, RATE_HOLD, now, str(status)))

                self._change(cut)
        if ticket.ramp and status is not None and not refused and self.mode == "aimd":
            # Sends of the ramp only: a few seconds' worth, once a run.
            self._change(lambda p: _listed(on_ramp_accept(p, ticket.sent_at, now, self.ceiling)))
        if self.mode != "aimd":
            return own_wait
        if (status == 503 and not spaced) or overload is not None:
            if self.lower:
                what = "503 from the API" if status == 503 else overload or "overload"
                self._change(lambda p: _listed(on_overload(p, ticket.epoch, now, what)))
        elif status is not None and not refused and self.higher:
            if ticket.limit >= self.maximum:
                return own_wait  # the common case: the limit was at its ceiling when sent
            pace = self.read()
            if pace.limit >= self.maximum or ticket.epoch != pace.epoch:
                return own_wait
            in_use = self.store.gate_state(self.gate_key)[1] > 0
            self._change(lambda p: _listed(on_success(p, ticket.epoch, in_use, now, self.maximum)))
        return own_wait

    def own_wait(self, limits: Limits, sent_at: float, now: float) -> float | None:
        """At 0 left: if the run's own accepted sends fill the server's window up to the
        request sent at `sent_at`, the seconds from `now` until enough of them have left it
        for one more (0.0: already); None if they do not (someone else spends the same
        budget, answers are still out, or the window is unknown or longer than
        `OWN_WINDOW`): then the server's reset stands.

        Counted from 50 ms buckets of send times: the bucket the window begins in counts
        whole (left out, a run that had just sped up lost its oldest send and paused for the
        server's whole reset), and a send leaves the window at its bucket's end, never
        before it leaves the server's."""
        quota = limits.quota
        if limits.steady and quota > 0:
            window = quota / limits.steady
        else:
            pace = self.read()
            window = pace.window if limits.announced == pace.announced else 0.0
        if quota <= 0 or not 0 < window <= OWN_WINDOW:
            return None
        buckets = self._accepted(int((sent_at - window) / BUCKET), int(sent_at / BUCKET))
        over = sum(count for _, count in buckets) - quota  # to leave before one more fits
        if over < 0:
            return None
        for key, count in buckets:  # the oldest first; `over` goes below 0 by the last
            over -= count
            if over < 0:
                return max(0.0, (key + 1) * BUCKET + window - now)
        return None  # pragma: no cover - the counts add up to quota + over

    def stop(self, reason: str) -> None:
        now = self.store.clock()
        self._change(lambda p: _listed(on_stop(p, now, reason)))

    def answered_before(self, sent_at: float) -> tuple[int, float | None, float | None]:
        """Requests sent in the second up to `sent_at` that the API answered and accepted,
        and when the first and the last of them were sent (their 50 ms buckets' starts:
        the gap from the last is never shorter than it was; None: none)."""
        last = int(sent_at / BUCKET)
        buckets = self._accepted(last - round(1.0 / BUCKET) + 1, last)
        seen = [key * BUCKET for key, count in buckets if count]
        return (
            sum(count for _, count in buckets),
            seen[0] if seen else None,
            seen[-1] if seen else None,
        )

    def _accepted(self, first: int, last: int) -> list[tuple[int, int]]:
        """(bucket, answers accepted) of the 50 ms buckets `first` to `last`, the oldest
        first: one store read each."""
        keys = range(first, last + 1)
        return [(key, int(self.store.get(f"{ACCEPTED_KEY}:{key}") or 0)) for key in keys]

    def _change(self, rule: Callable[[Pace], list[Event]]) -> list[Event]:
        """Apply `rule` to the shared document by compare-and-set; publish its events."""
        for _ in range(50):
            text = self.store.get(PACE_KEY)
            pace = Pace.from_json(text, self.maximum)
            old_limit = pace.limit
            events = rule(pace)
            if not events and pace.to_json() == (text or Pace(limit=self.maximum).to_json()):
                return []
            if self.store.swap(PACE_KEY, text, pace.to_json()):
                if pace.limit != old_limit:
                    self._mirror_limit()
                for event in events:
                    number = self.store.incr(EVENTS_KEY)
                    self.store.put(f"{EVENTS_KEY}:{number}", event.to_json())
                return events
        return []  # pragma: no cover - 50 lost races in a row: the next answer tries again

    def _mirror_limit(self) -> None:
        """Make the gate's limit the document's, even if another process raced ahead."""
        for _ in range(5):
            pace = self.read()
            self.store.gate_set_limit(self.gate_key, pace.limit)
            if self.read().epoch == pace.epoch:
                return

    def events_since(self, seen: int) -> tuple[int, list[Event]]:
        """Events after number `seen`, and the number of the last one."""
        last = self.store.incr(EVENTS_KEY, 0)
        events: list[Event] = []
        for number in range(seen + 1, last + 1):
            text = self.store.get(f"{EVENTS_KEY}:{number}")
            if text is None:  # counted but not written yet: next time
                return number - 1, events
            events.append(Event.from_json(text))
        return last, events


def _listed(*events: Event | None) -> list[Event]:
    return [e for e in events if e is not None]


def describe(event: Event, ceiling: float) -> str:
    """One line for the terminal."""
    if event.kind == "concurrency":
        return f"roadmap: concurrency {event.old:g} -> {event.new:g}: {event.reason}"
    if event.kind == "rate":
        if event.old == event.new:
            return f"roadmap: rate {event.new:.3g}/s (of {ceiling:g}/s): {event.reason}"
        return f"roadmap: rate {event.old:.3g}/s -> {event.new:.3g}/s: {event.reason}"
    if event.kind == "pause":
        return f"roadmap: every worker pauses {event.new:.3g} s: {event.reason}"
    return f"roadmap: stopping: {event.reason}"
