"""Run-wide budgets (budgets.py) over real stores, and the compliance section's arithmetic."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import pytest
from redis_server import redis_url_fixture  # noqa: F401 (the Redis backend of `store`)
from test_store import PATIENCE, make_store

from pytest_roadmap.budgets import (
    COST_USED_KEY,
    TOKENS_KEY,
    TOKENS_USED_KEY,
    BudgetSpent,
    RunBudgets,
    Spend,
    budget_rows,
    check_budget_settings,
    unbounded_tasks,
)
from pytest_roadmap.compliance import RequestLog, asked_wait, busiest_window, compliance
from pytest_roadmap.errors import SettingError
from pytest_roadmap.protocol import Usage
from pytest_roadmap.settings import Sources, resolve_settings
from pytest_roadmap.store import Store, open_store

spawn = multiprocessing.get_context("spawn")


@pytest.fixture(params=["sqlite", "redis"], name="store")
def store_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    created = make_store(request.param, tmp_path, request.config)
    yield created
    created.close()


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


# -- settings --------------------------------------------------------------------------------


def _settings(options: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    here = Path(".")
    return resolve_settings(Sources(options, env or {}, {}, here, here), 1)


@pytest.mark.parametrize(
    ("options", "env", "words"),
    [
        (
            {"roadmap_max_retries": "-1"},
            {},
            "invalid retry budget '-1' from option --roadmap-max-retries: must be an integer "
            "from 0 to 10000000",
        ),
        (
            {},
            {"ROADMAP_MAX_RETRIES": "2.5"},
            "invalid retry budget '2.5' from environment variable ROADMAP_MAX_RETRIES",
        ),
        (
            {"roadmap_protocol": "openai", "roadmap_max_tokens": "0"},
            {},
            "invalid token budget '0' from option --roadmap-max-tokens",
        ),
        (
            {"roadmap_protocol": "openai", "roadmap_price_in": "1"},
            {"ROADMAP_MAX_COST": "1e3"},
            "invalid cost budget '1e3' from environment variable ROADMAP_MAX_COST: must be a "
            "number of US dollars",
        ),
        (
            {"roadmap_max_tokens": "100"},
            {},
            "--roadmap-max-tokens needs --roadmap-protocol openai: the beast protocol's answers "
            "report no token usage to count",
        ),
        (
            {"roadmap_protocol": "openai", "roadmap_max_cost": "5"},
            {},
            "--roadmap-max-cost needs a price: --roadmap-price-in and/or --roadmap-price-out",
        ),
    ],
)
def test_bad_budget_settings_are_one_line(
    options: dict[str, Any], env: dict[str, str], words: str
) -> None:
    with pytest.raises(SettingError) as raised:
        _settings(options, env)
    assert words in str(raised.value)
    assert "\n" not in str(raised.value)


def test_budget_settings_from_each_source() -> None:
    settings = _settings(
        {"roadmap_protocol": "openai", "roadmap_max_retries": "4", "roadmap_price_out": "2"},
        {"ROADMAP_MAX_TOKENS": "9000", "ROADMAP_MAX_COST": "0.5"},
    )
    assert (settings.max_retries, settings.max_tokens, settings.max_cost) == (4, 9000, 0.5)
    assert _settings({}).max_retries is None


def test_check_budget_settings_passes_an_openai_run_with_a_price() -> None:
    check_budget_settings("openai", 100, 1.0, None, 0.5)
    check_budget_settings("beast", None, None, None, None)


def test_tasks_without_max_tokens_are_named_under_a_token_or_cost_budget() -> None:
    tasks = [("a.toml", "one", 100), ("a.toml", "two", None)]
    assert unbounded_tasks(tasks, None, None) == []
    [(where, line)] = unbounded_tasks(tasks, 1000, None)
    assert where == "a.toml"
    assert line.startswith("a.toml (id 'two'): 'max_tokens' is required with --roadmap-max-tokens")


# -- compliance ------------------------------------------------------------------------------


def test_busiest_window_is_half_open() -> None:
    assert busiest_window([]) == (0, None)
    assert busiest_window([0.0, 0.5, 0.99, 1.0, 1.5]) == (3, 0.0)
    assert busiest_window([0.0, 1.0, 2.0]) == (1, 0.0)


def test_asked_wait_reads_retry_after_and_the_header_families() -> None:
    assert asked_wait(429, {}, 2.0) == (2.0, "Retry-After 2 s on a 429")
    assert asked_wait(200, {}, None) == (0.0, "")
    assert asked_wait(500, {}, 5.0) == (0.0, "")  # only a refusal's Retry-After pauses the run
    headers = {"RateLimit-Limit": "5", "RateLimit-Remaining": "0", "RateLimit-Reset": "3"}
    wait, words = asked_wait(200, headers, None)
    assert wait == 3.0 and words.endswith("0 for 3 s")
    assert asked_wait(200, {**headers, "RateLimit-Remaining": "2"}, None) == (0.0, "")


def test_compliance_merges_pauses_and_counts_sends_inside_them() -> None:
    entries = [
        [10.0, 429, 10.1, 2.0, "Retry-After 2 s on a 429"],  # paused 10.1 .. 12.1
        [10.05, 503, 10.2, 1.0, "Retry-After 1 s on a 503"],  # within it: merged
        [11.0, 200, 11.2, 0.0, ""],  # sent during the pause
        [12.5, 200, 12.6, 0.0, ""],
        [13.0, None, None, 0.0, ""],
        [13.5, 429, 13.6, 3600.0, "Retry-After 3600 s on a 429"],  # cut at the run's end
    ]
    section = compliance(entries, rate_limit=2.0, until=14.0)
    assert section.requests == 6
    assert section.statuses == {200: 2, 429: 2, 503: 1}
    assert section.refusals == {429: 2, 503: 1}
    assert section.no_answer == 1
    assert [(p.at, round(p.seconds, 3)) for p in section.pauses] == [(10.1, 2.0), (13.6, 0.4)]
    assert section.sent_while_paused == 1
    assert (section.max_per_second, section.busiest_at) == (2, 10.0)
    assert section.allowed_per_second == 2 and section.held
    assert not compliance(entries, rate_limit=1.0).held


def test_request_log_pairs_answers_with_their_sends() -> None:
    log = RequestLog()
    first, second = object(), object()
    log.sent(first, 1.0)
    log.sent(second, 1.5)
    log.answered(second, 429, {}, 2.0, 1.6)
    log.answered(object(), 200, {}, None, 9.0)  # never sent through this log: ignored
    assert log.take() == [
        [1.0, None, None, 0.0, ""],  # no answer (yet)
        [1.5, 429, 1.6, 2.0, "Retry-After 2 s on a 429"],
    ]
    assert log.take() == []
