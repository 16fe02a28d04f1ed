"""Run-wide budgets: retries, tokens and cost, shared by every worker and shard through the store.

Retries (`--roadmap-max-retries N`): a failed attempt that pytest-rerunfailures would run
again first takes one retry from a counter in the store (`Store.incr`, atomic on both
backends). The N callers that got a count up to N rerun; every later one is refused, and
its failure is final. Two processes can never both take the last retry, however they race.

Tokens (`--roadmap-max-tokens N`) and cost (`--roadmap-max-cost X`, US dollars, at the run's
prices): a task starts only if what it may use at most (its prompt by the rule of thumb plus
its `max_tokens`) fits beside what the answers so far used and what the requests in flight
may still use. So the budget is never passed as long as the server counts the prompt no
higher than the estimate. Each check adds the task's worst case to one counter per budget
and takes it back if the total is over (again one atomic `incr`); its answer's `usage` then
replaces the worst case by what it used. A task that can never fit (what was used plus its
worst case is over) ends the run's work: it and every task after it are skipped with a
reason that names the budget. One that does not fit only because of requests in flight
waits for them.

This module knows nothing of pytest.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pytest_roadmap.errors import SettingError
from pytest_roadmap.protocol import OPENAI, Usage
from pytest_roadmap.store.base import Store
from pytest_roadmap.usage import PER

RETRIES_KEY = "budget:retries"  # retries asked for, granted or not
TOKENS_KEY = "budget:tokens"  # tokens used by answers plus the worst case of those in flight
TOKENS_USED_KEY = "budget:tokens:used"  # tokens the answers used
COST_KEY = "budget:cost"  # the same in nano-dollars
COST_USED_KEY = "budget:cost:used"
STOP_KEY = "budget:stop"  # why the run stopped starting tasks, once a budget is spent
NANO = 1_000_000_000  # cost is counted in whole nano-dollars: the store adds integers
POLL = 0.05  # seconds between looks while requests in flight hold the room a task needs


class BudgetSpent(Exception):
    """A run-wide budget cannot take this task: it and every task after it are skipped."""


def retry_spent_words(limit: int) -> str:
    return f"run-wide retry budget --roadmap-max-retries={limit} spent"


def check_budget_settings(
    protocol: str,
    max_tokens: int | None,
    max_cost: float | None,
    price_in: float | None,
    price_out: float | None,
) -> None:
    """Token and cost budgets need answers that report usage, and a cost needs a price."""
    for value, option in ((max_tokens, "--roadmap-max-tokens"), (max_cost, "--roadmap-max-cost")):
        if value is not None and protocol != OPENAI:
            raise SettingError(
                f"{option} needs --roadmap-protocol openai: the {protocol} protocol's answers "
                "report no token usage to count"
            )
    if max_cost is not None and price_in is None and price_out is None:
        raise SettingError(
            "--roadmap-max-cost needs a price: --roadmap-price-in and/or --roadmap-price-out "
            "(US dollars per million tokens)"
        )


def unbounded_tasks(
    tasks: Iterable[tuple[str, str, int | None]], max_tokens: int | None, max_cost: float | None
) -> list[tuple[str, str]]:
    """`(where, line)` for each task (`(where, id, max_tokens)`) whose cost has no upper bound
    under a token or cost budget: without `max_tokens` its answer can be of any length."""
    if max_tokens is None and max_cost is None:
        return []
    option = "--roadmap-max-tokens" if max_tokens is not None else "--roadmap-max-cost"
    return [
        (
            where,
            f"{where} (id {task_id!r}): 'max_tokens' is required with {option}: a task "
            "starts only if its prompt plus max_tokens fits in the budget",
        )
        for where, task_id, bound in tasks
        if bound is None
    ]


@dataclass(frozen=True)
class Spend:
    """What one attempt may use at most, in each budget's units (0: no such budget)."""

    tokens: int = 0
    nano: int = 0  # cost in nano-dollars


class RunBudgets:
    """One process's hands on the run's budgets (any of them may be off: None)."""

    def __init__(
        self,
        store: Store,
        *,
        max_retries: int | None = None,
        max_tokens: int | None = None,
        max_cost: float | None = None,
        price_in: float | None = None,
        price_out: float | None = None,
        patience: float = 300.0,
        sleep: Callable[[float], object] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        # Longest a task waits for room that requests in flight hold: a worker killed
        # mid-request never gives its room back.
        self.patience = patience
        self.max_retries = max_retries
        self.max_tokens = max_tokens
        self.max_cost = max_cost
        self.price_in = price_in or 0.0
        self.price_out = price_out or 0.0
        # The cost limit in whole nano-dollars, rounded down: the safe side.
        self._cost_limit = math.floor(max_cost * NANO) if max_cost is not None else None
        self._sleep = sleep
        self._clock = clock

    @property
    def spends(self) -> bool:
        """Whether a token or cost budget holds tasks back."""
        return self.max_tokens is not None or self.max_cost is not None

    # -- retries --------------------------------------------------------------------

    def take_retry(self) -> bool:
        """Take one retry from the run's budget; False once it is spent (or True: no budget)."""
        if self.max_retries is None:
            return True
        return self.store.incr(RETRIES_KEY) <= self.max_retries

    def retries_used(self) -> int:
        if self.max_retries is None:
            return 0
        return min(self.store.incr(RETRIES_KEY, 0), self.max_retries)

    # -- tokens and cost --------------------------------------------------------------

    def _nano(self, prompt: int, completion: int) -> int:
        # Rounded up, so that the counted cost is never below the real one.
        return math.ceil((prompt * self.price_in + completion * self.price_out) * NANO / PER)

    def worst_case(self, prompt: int, max_tokens: int) -> Spend:
        """The most an attempt of a `prompt`-token request with `max_tokens` may use."""
        return Spend(
            tokens=prompt + max_tokens if self.max_tokens is not None else 0,
            nano=self._nano(prompt, max_tokens) if self._cost_limit is not None else 0,
        )

    def admit(self, spend: Spend) -> None:
        """Hold `spend` for one attempt, waiting while requests in flight hold the room it
        needs; raises BudgetSpent once the budget can never take it (and from then on for
        every task)."""
        deadline = self._clock() + self.patience
        while True:
            stop = self.store.get(STOP_KEY)
            if stop:
                raise BudgetSpent(stop)
            held: list[tuple[str, int]] = []
            why = None
            for key, used_key, amount, limit, name in self._budgets(spend):
                if self.store.incr(key, amount) <= limit:
                    held.append((key, amount))
                    continue
                self.store.incr(key, -amount)
                if self.store.incr(used_key, 0) + amount > limit:
                    why = self._spent_words(name, used_key, amount)
                elif self._clock() > deadline:
                    why = self._spent_words(name, used_key, amount) + (
                        f" (the rest is held by requests in flight for over {self.patience:g} s)"
                    )
                break
            else:
                return
            for key, amount in held:  # all or nothing
                self.store.incr(key, -amount)
            if why is not None:
                # The first words stay: every later task is skipped for the same reason.
                self.store.swap(STOP_KEY, None, why)
                raise BudgetSpent(self.store.get(STOP_KEY) or why)
            self._sleep(POLL)

    def settle(self, spend: Spend, usage: Usage | None) -> None:
        """An attempt held `spend` and its answer used `usage` (None: nothing to count, as
        for an error answer). Adds what was used before giving the rest back, so a look in
        between sees too much, never too little."""
        used = Spend()
        if usage is not None:
            used = Spend(
                tokens=usage.total if spend.tokens else 0,
                nano=self._nano(usage.prompt, usage.completion) if spend.nano else 0,
            )
        if used.tokens:
            self.store.incr(TOKENS_USED_KEY, used.tokens)
        if used.nano:
            self.store.incr(COST_USED_KEY, used.nano)
        if spend.tokens:
            self.store.incr(TOKENS_KEY, used.tokens - spend.tokens)
        if spend.nano:
            self.store.incr(COST_KEY, used.nano - spend.nano)

    def keep(self, spend: Spend) -> None:
        """An attempt got no answer (a timeout, a cut connection): the server may have done
        the work, so its worst case stays counted as used."""
        if spend.tokens:
            self.store.incr(TOKENS_USED_KEY, spend.tokens)
        if spend.nano:
            self.store.incr(COST_USED_KEY, spend.nano)

    def _budgets(self, spend: Spend) -> list[tuple[str, str, int, int, str]]:
        found: list[tuple[str, str, int, int, str]] = []
        if self.max_tokens is not None:
            found.append((TOKENS_KEY, TOKENS_USED_KEY, spend.tokens, self.max_tokens, "tokens"))
        if self._cost_limit is not None:
            found.append((COST_KEY, COST_USED_KEY, spend.nano, self._cost_limit, "cost"))
        return found

    def _spent_words(self, name: str, used_key: str, amount: int) -> str:
        used = self.store.incr(used_key, 0)
        if name == "tokens":
            return (
                f"run-wide token budget --roadmap-max-tokens={self.max_tokens} spent: "
                f"{used:,} tokens used, the next task may use up to {amount:,}"
            )
        return (
            f"run-wide cost budget --roadmap-max-cost={self.max_cost:g} spent: "
            f"${used / NANO:.4f} used, the next task may cost up to ${amount / NANO:.4f}"
        )

    def stopped(self) -> str | None:
        """Why the run stopped starting tasks, if a budget is spent."""
        return self.store.get(STOP_KEY) or None

    def summary(self) -> dict[str, Any] | None:
        """The budgets in force and what was spent of each, for report.json; None if none."""
        if self.max_retries is None and not self.spends:
            return None
        found: dict[str, Any] = {}
        if self.max_retries is not None:
            found["retries"] = {"limit": self.max_retries, "used": self.retries_used()}
        if self.max_tokens is not None:
            used = self.store.incr(TOKENS_USED_KEY, 0)
            found["tokens"] = {"limit": self.max_tokens, "used": used}
        if self.max_cost is not None:
            used = self.store.incr(COST_USED_KEY, 0)
            found["cost"] = {"limit": self.max_cost, "used": round(used / NANO, 9)}
        found["stopped"] = self.stopped()
        return found


def budget_rows(summary: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The budgets of a run (`RunBudgets.summary`) for people: (label, plain text) rows."""
    if not summary:
        return []
    rows: list[tuple[str, str]] = []
    if "retries" in summary:
        retries = summary["retries"]
        rows.append(("Retry budget", f"{retries['used']:,} of {retries['limit']:,} retries used"))
    if "tokens" in summary:
        tokens = summary["tokens"]
        rows.append(("Token budget", f"{tokens['used']:,} of {tokens['limit']:,} tokens used"))
    if "cost" in summary:
        cost = summary["cost"]
        rows.append(("Cost budget", f"${cost['used']:.4f} of ${cost['limit']:g} used"))
    return rows
