"""Run-wide budgets (budgets.py) over each store backend: retries, tokens and cost shared
by processes that race for them."""

from __future__ import annotations

from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event

import pytest

from pytest_roadmap.budgets import (
    COST_USED_KEY,
    TOKENS_KEY,
    TOKENS_USED_KEY,
    BudgetSpent,
    RunBudgets,
    Spend,
    budget_rows,
)
from pytest_roadmap.protocol import Usage
from pytest_roadmap.store import Store, open_store
from tests.support.stores import spawn
from tests.support.waiting import PATIENCE

# -- retries ------------------------------------------------------------------------------


def _take_retries(url: str, limit: int, tries: int, go: Event, done: Queue[int]) -> None:
    with open_store(url) as store:
        budgets = RunBudgets(store, max_retries=limit)
        done.put(-1)  # ready: the processes race from one start, not one after another
        go.wait(PATIENCE)
        done.put(sum(budgets.take_retry() for _ in range(tries)))


def test_four_processes_never_take_more_retries_than_the_budget(store: Store) -> None:
    url = store.url
    go = spawn.Event()
    done: Queue[int] = spawn.Queue()
    procs = [spawn.Process(target=_take_retries, args=(url, 37, 40, go, done)) for _ in range(4)]
    for proc in procs:
        proc.start()
    assert [done.get(timeout=PATIENCE) for _ in procs] == [-1] * 4
    go.set()
    taken = [done.get(timeout=PATIENCE) for _ in procs]
    for proc in procs:
        proc.join(PATIENCE)
        assert proc.exitcode == 0
    assert sum(taken) == 37  # 160 asked for, every one of the 37 given, none more
    assert RunBudgets(store, max_retries=37).retries_used() == 37


def test_no_retry_budget_never_refuses(store: Store) -> None:
    budgets = RunBudgets(store)
    assert all(budgets.take_retry() for _ in range(5))
    assert budgets.summary() is None


def test_a_retry_budget_of_zero_refuses_the_first(store: Store) -> None:
    budgets = RunBudgets(store, max_retries=0)
    assert not budgets.take_retry()
    assert budgets.summary() == {"retries": {"limit": 0, "used": 0}, "stopped": None}


# -- tokens and cost ------------------------------------------------------------------------


def _spend_tokens(url: str, go: Event, done: Queue[int]) -> None:
    with open_store(url) as store:
        budgets = RunBudgets(store, max_tokens=1000, patience=PATIENCE)
        done.put(-1)
        go.wait(PATIENCE)
        admitted = 0
        while True:
            spend = budgets.worst_case(30, 70)  # 100 tokens at most
            try:
                budgets.admit(spend)
            except BudgetSpent:
                break
            admitted += 1
            budgets.settle(spend, Usage(30, 70))  # it used all of it
        done.put(admitted)


def test_four_processes_never_start_more_than_the_token_budget_holds(store: Store) -> None:
    url = store.url
    go = spawn.Event()
    done: Queue[int] = spawn.Queue()
    procs = [spawn.Process(target=_spend_tokens, args=(url, go, done)) for _ in range(4)]
    for proc in procs:
        proc.start()
    assert [done.get(timeout=PATIENCE) for _ in procs] == [-1] * 4
    go.set()
    admitted = [done.get(timeout=PATIENCE) for _ in procs]
    for proc in procs:
        proc.join(PATIENCE)
        assert proc.exitcode == 0
    # Exactly ten tasks of 100 fit in 1,000: none beyond, and none refused while one fitted.
    assert sum(admitted) == 10
    assert store.incr(TOKENS_USED_KEY, 0) == 1000
    assert store.incr(TOKENS_KEY, 0) == 1000


def test_an_answer_below_its_worst_case_gives_the_rest_back(store: Store) -> None:
    budgets = RunBudgets(store, max_tokens=250)
    first = budgets.worst_case(20, 100)
    budgets.admit(first)
    budgets.settle(first, Usage(20, 10))  # used 30 of 120
    second = budgets.worst_case(20, 180)  # 200: fits beside 30, not beside 120
    budgets.admit(second)
    budgets.settle(second, None)  # an error answer: nothing used
    assert store.incr(TOKENS_USED_KEY, 0) == 30
    assert store.incr(TOKENS_KEY, 0) == 30


def test_an_attempt_without_an_answer_counts_its_worst_case(store: Store) -> None:
    budgets = RunBudgets(store, max_tokens=250)
    spend = budgets.worst_case(20, 100)
    budgets.admit(spend)
    budgets.keep(spend)  # timed out: the server may have done the work
    assert store.incr(TOKENS_USED_KEY, 0) == 120
    with pytest.raises(BudgetSpent, match="--roadmap-max-tokens=250 spent: 120 tokens used"):
        budgets.admit(budgets.worst_case(20, 120))


def test_once_spent_every_later_task_is_skipped_even_a_small_one(store: Store) -> None:
    budgets = RunBudgets(store, max_tokens=100)
    budgets.admit(budgets.worst_case(10, 50))
    budgets.settle(budgets.worst_case(10, 50), Usage(10, 50))
    with pytest.raises(BudgetSpent, match="the next task may use up to 60"):
        budgets.admit(budgets.worst_case(10, 50))
    # 10 tokens would fit, but the run's order is the priority order: nothing after it runs.
    with pytest.raises(BudgetSpent, match="the next task may use up to 60"):
        budgets.admit(budgets.worst_case(5, 5))
    assert budgets.stopped() is not None and "--roadmap-max-tokens=100" in budgets.stopped()


def test_a_task_waits_for_room_held_in_flight_then_goes(store: Store) -> None:
    budgets_a = RunBudgets(store, max_tokens=150)
    held = budgets_a.worst_case(0, 100)
    budgets_a.admit(held)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        budgets_a.settle(held, Usage(0, 20))  # the request in flight answers meanwhile

    budgets_b = RunBudgets(store, max_tokens=150, sleep=sleep)
    budgets_b.admit(budgets_b.worst_case(0, 100))  # did not fit beside 100; fits beside 20
    assert len(sleeps) == 1
    assert store.incr(TOKENS_KEY, 0) == 120


def test_room_held_past_the_patience_counts_as_spent(store: Store) -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    RunBudgets(store, max_tokens=150).admit(Spend(tokens=100))  # never settles: a dead worker
    budgets = RunBudgets(store, max_tokens=150, patience=1.0, sleep=sleep, clock=lambda: now[0])
    with pytest.raises(BudgetSpent, match="held by requests in flight for over 1 s"):
        budgets.admit(Spend(tokens=100))


def test_cost_budget_counts_at_the_run_prices_and_rounds_up(store: Store) -> None:
    # $3 and $15 per million tokens: a 1,000 + 500 token answer costs $0.0105.
    budgets = RunBudgets(store, max_cost=0.02, price_in=3.0, price_out=15.0)
    spend = budgets.worst_case(1000, 500)
    assert spend == Spend(tokens=0, nano=10_500_000)
    budgets.admit(spend)
    budgets.settle(spend, Usage(1000, 100))  # $0.0045
    assert store.incr(COST_USED_KEY, 0) == 4_500_000
    second = budgets.worst_case(1000, 500)
    budgets.admit(second)  # 0.0045 + 0.0105 <= 0.02
    budgets.settle(second, Usage(1000, 500))  # used all of it: $0.015 in all
    with pytest.raises(BudgetSpent, match=r"--roadmap-max-cost=0.02 spent: \$0.0150 used"):
        budgets.admit(budgets.worst_case(1000, 500))


def test_cost_budget_waits_when_only_flight_holds_the_room(store: Store) -> None:
    budgets = RunBudgets(store, max_cost=0.02, price_in=3.0, price_out=15.0, patience=0.0)
    budgets.admit(budgets.worst_case(1000, 500))  # $0.0105 in flight
    with pytest.raises(BudgetSpent, match="held by requests in flight"):
        budgets.admit(budgets.worst_case(1000, 500))  # used 0 + 0.0105 fits: it only waits
    assert store.incr(COST_USED_KEY, 0) == 0


def test_budget_summary_and_rows(store: Store) -> None:
    budgets = RunBudgets(store, max_retries=3, max_tokens=500, max_cost=1.0, price_in=1.0)
    budgets.take_retry()
    spend = budgets.worst_case(100, 100)
    budgets.admit(spend)
    budgets.settle(spend, Usage(100, 50))
    summary = budgets.summary()
    assert summary == {
        "retries": {"limit": 3, "used": 1},
        "tokens": {"limit": 500, "used": 150},
        "cost": {"limit": 1.0, "used": 0.0001},
        "stopped": None,
    }
    assert budget_rows(summary) == [
        ("Retry budget", "1 of 3 retries used"),
        ("Token budget", "150 of 500 tokens used"),
        ("Cost budget", "$0.0001 of $1 used"),
    ]
