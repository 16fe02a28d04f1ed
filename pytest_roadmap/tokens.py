"""The run's tokens-per-minute budget, shared by every worker and shard through the store.

GCRA, as the request limit, but in tokens: a request that will use T tokens reserves T
emission intervals (60 / N seconds each, plus the limiter's margin) on the store's `tokens`
schedule, in one atomic step, and waits for its send time. So the next request goes at
least T intervals after this one, and a server counting tokens in any sliding minute sees
the tokens of every request in it but the last within N: at most N plus one request's worth.

The tokens a request will use are not known before its answer, so it reserves an estimate:
its prompt by the rule of thumb of protocol.py, plus `max_tokens` if the task sets it, else
the largest completion seen so far in the run (shared through the store; `DEFAULT_COMPLETION`
before the first answer). The answer's `usage` corrects it: tokens above the estimate are
charged at once, which moves every later reservation back. Tokens below it are not given
back: in GCRA the requests reserved after this one already hold their send times, and
pulling the schedule forward would put new requests on top of theirs. So the guarantee holds
as long as estimates are not below what the server counts, and an estimate that was short by
E tokens lets a minute hold up to E more, for the requests already scheduled when it became
known. Estimates high by E cost E tokens of the budget, never the limit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from pytest_roadmap.protocol import Usage
from pytest_roadmap.ratelimit import MARGIN
from pytest_roadmap.store.base import Store

KEY = "tokens"
COMPLETION_KEY = "tokens:completion"  # the largest completion seen in the run
WINDOW = 60.0
# Before any answer has shown how long completions are, and without `max_tokens`.
DEFAULT_COMPLETION = 256


class TokenBudget:
    """Tokens per minute over a shared store: `reserve` before a send, `settle` after."""

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
        self.store = store
        self.per_minute = per_minute
        # Seconds of the schedule one token takes. The margin, as in the request limit,
        # keeps a send that goes out a little after its reserved time (up to 2% of a
        # minute) from bringing a minute over N.
        self.interval = (1.0 + margin) * WINDOW / per_minute
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

    def reserve(self, tokens: int) -> float:
        """Wait until `tokens` more fit in the budget; return the seconds waited."""
        send_at = self.store.reserve_all([(KEY, max(tokens, 1) * self.interval, 1)])
        wait = send_at - self.store.clock()
        if wait > 0:
            self._sleep(wait)
        return max(wait, 0.0)

    def settle(self, reserved: int, usage: Usage | None) -> int:
        """Correct a reservation of `reserved` tokens from the answer's `usage`: charge what
        it used beyond it, and learn the completion's length. Returns the tokens charged."""
        if usage is None:
            return 0
        self._learn(usage.completion)
        extra = usage.total - reserved
        if extra > 0:
            # A reservation that no one sends: it only moves the schedule back.
            self.store.reserve_all([(KEY, extra * self.interval, 1)])
            return extra
        return 0

    def _learn(self, completion: int) -> None:
        for _ in range(20):  # compare-and-set: another worker may be learning too
            text = self.store.get(COMPLETION_KEY)
            if text is not None and text.isdigit() and int(text) >= completion:
                return
            if self.store.swap(COMPLETION_KEY, text, str(completion)):
                return
