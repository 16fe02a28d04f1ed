"""The run's tokens-per-minute budget, shared by every worker and shard through the store.

A sliding minute, as a server counting tokens per minute has it: the store keeps a log of
(send time, tokens) entries on the `tokens` key, and a request of T tokens is placed, in
one atomic step (`Store.window_reserve`), at the earliest time when the entries in the
window before it and T add up to at most N. So a run that is idle sends a whole minute's N
at once, and the next request waits until the oldest ones leave the window; a request of
more than N goes alone, once the window is empty. The window is the minute plus the
margin of the request limit (see `logged_window`), for sends that go out a little after
their reserved time; a send held up longer (in the request limit's queue, which comes after
the token wait) moves its entry to its real send time if every window from then on has
room for it, and is not sent otherwise (`TokenBudget.admit`).

The tokens a request will use are not known before its answer, so it reserves an estimate:
its prompt by the rule of thumb of protocol.py, plus `max_tokens` if the task sets it, else
the largest completion seen so far in the run (shared through the store; `DEFAULT_COMPLETION`
before the first answer). The answer's `usage` then becomes the entry's amount
(`Store.window_settle`): tokens below the estimate are given back at once (a smaller entry
never brings a window over N, so the next request may go sooner), tokens above it are
charged, and every placement from then on counts them. A request that never went out gives
its whole reservation back. So the guarantee, a server counting tokens in any sliding
minute sees at most N, holds as long as estimates are not below what the server counts; an
estimate short by E tokens lets a minute hold up to E more, for the requests placed while
it was not yet known.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from pytest_roadmap.protocol import Usage
from pytest_roadmap.ratelimit import MARGIN
from pytest_roadmap.store.base import Store

KEY = "tokens"
COMPLETION_KEY = "tokens:completion"  # the largest completion seen in the run
WINDOW = 60.0
# Before any answer has shown how long completions are, and without `max_tokens`.
DEFAULT_COMPLETION = 256


@dataclass(frozen=True)
class Reservation:
    """A request's place in the token budget: its entry in the store's log, the tokens
    it reserved, its send time (on the store's clock) and the seconds it waited for it."""

    entry: int
    tokens: int
    at: float
    waited: float = 0.0


def logged_window(window: float = WINDOW, margin: float = MARGIN) -> float:
    """The window the store's log holds N tokens in: the minute and its margin.

    N per (1 + margin) minute, not per minute: a request goes out a little after its
    reserved time (its wake-up, the request limit's slot), so a minute of real sends spans
    a little more than a minute of reserved times. As long as every send goes out within
    `margin` x `window` (1.2 s at 2%) of its reserved time, any 60 s in which a server counts
    holds sends reserved within one logged window, hence at most N tokens. It costs the
    same 2% as the request limit's margin.
    """
    return (1.0 + margin) * window


class TokenBudget:
    """Tokens per sliding minute over a shared store: `reserve` before a send, `settle`
    after its answer (or `give_back` if it never went)."""

    def __init__(
        self,
        store: Store,
        per_minute: float,
        *,
        sleep: Callable[[float], object] = time.sleep,
        margin: float = MARGIN,
    ) -> None:
        if not (per_minute > 0 and math.isfinite(per_minute)):
            raise ValueError(f"tokens per minute must be a positive number, not {per_minute}")
        if not 0 <= margin < 1:
            raise ValueError(f"margin must be in [0, 1), not {margin}")
        self.store = store
        self.per_minute = per_minute
        self.window = logged_window(margin=margin)
        # A send later than its reserved time by more than this moves its entry to its real
        # time (`admit`): half the margin, the rest left for the way to the server.
        self.tolerance = margin * WINDOW / 2
        self._sleep = sleep

    def estimate(self, prompt: int, max_tokens: int | None = None) -> int:
        """Tokens to reserve for a request of `prompt` tokens."""
        if max_tokens is not None:
            return prompt + max_tokens
        return prompt + self.completion()

    def completion(self) -> int:
        """The completion to expect: the largest seen so far in the run, or the default."""
        text = self.store.get(COMPLETION_KEY)
        return int(text) if text and text.isdigit() else DEFAULT_COMPLETION

    def reserve(self, tokens: int) -> Reservation:
        """Wait until `tokens` more fit in the sliding minute; return the reservation."""
        tokens = max(tokens, 0)
        entry, send_at = self.store.window_reserve(KEY, tokens, self.window, self.per_minute)
        wait = send_at - self.store.clock()
        if wait > 0:
            self._sleep(wait)
        return Reservation(entry, tokens, send_at, max(wait, 0.0))

    def admit(self, reservation: Reservation) -> bool:
        """Right before the send: may it go now? A send held up after its reserved time
        (by the request limit's queue) by more than the tolerance moves its entry to now,
        where a server counts it, if every window from now on still has room; False if
        one has not (the caller must not send, and gives the reservation back)."""
        if self.store.clock() - reservation.at <= self.tolerance:
            return True
        return self.store.window_move(KEY, reservation.entry, self.window, self.per_minute)

    def settle(self, reservation: Reservation, usage: Usage | None) -> int:
        """Make the answer's `usage` the reservation's amount and learn the completion's
        length. Returns the tokens charged beyond the estimate (given back if negative);
        without usage the estimate stays, and 0."""
        if usage is None:
            return 0
        self._learn(usage.completion)
        self.store.window_settle(KEY, reservation.entry, usage.total)
        return usage.total - reservation.tokens

    def give_back(self, reservation: Reservation) -> None:
        """The request never went out: its tokens are free for the next one."""
        self.store.window_settle(KEY, reservation.entry, 0)

    def _learn(self, completion: int) -> None:
        for _ in range(20):  # compare-and-set: another worker may be learning too
            text = self.store.get(COMPLETION_KEY)
            if text is not None and text.isdigit() and int(text) >= completion:
                return
            if self.store.swap(COMPLETION_KEY, text, str(completion)):
                return
