"""The budget settings and the tasks a token or cost budget cannot bound (budgets.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_roadmap.budgets import check_budget_settings, unbounded_tasks
from pytest_roadmap.errors import SettingError
from pytest_roadmap.settings import Sources, resolve_settings


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
