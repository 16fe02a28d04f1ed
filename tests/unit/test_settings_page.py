"""docs/settings.md, the settings reference, says what settings.py says."""

from __future__ import annotations

from pathlib import Path

from pytest_roadmap import option_table, options, settings
from pytest_roadmap.settings_page import COMMAND, page_text

PAGE = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def table_rows(text: str, heading: str) -> list[list[str]]:
    """The cells of the table under `## heading`, header and rule left out."""
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows[2:]]


def test_the_settings_page_is_current() -> None:
    # Changed a Spec or an option? Write the page again.
    assert PAGE.read_text(encoding="utf-8") == page_text(), COMMAND


def test_the_page_lists_every_setting_with_its_option_environment_ini_key_and_default() -> None:
    text = PAGE.read_text(encoding="utf-8")
    rows = {row[0].split("](")[0].lstrip("["): row for row in table_rows(text, "Every setting")}
    for spec in settings.EVERY_SPEC:
        _name, option, env, ini, default = rows.pop(spec.name)
        assert option.startswith(f"`{spec.option or '-n'}`"), spec.name
        assert env == (f"`{spec.env}`" if spec.env else ""), spec.name
        assert ini == (f"`{spec.ini}`" if spec.ini else ""), spec.name
        assert default == spec.shown_default != "", spec.name
        # ... and its own section, with what is allowed.
        section = text.split(f"\n### {spec.name}\n", 1)[1].split("\n### ", 1)[0]
        assert f"- default: {spec.shown_default}\n" in section
        assert f"- allowed: {spec.allowed}\n" in section
        assert spec.help in section
    assert list(rows) == ["token"]
    assert rows["token"][2] == f"`{settings.TOKEN_ENV}`"


def test_every_option_the_plugin_registers_is_on_the_page() -> None:
    text = PAGE.read_text(encoding="utf-8")
    registered = [option for option, _dest, _ini, _help in option_table.OPTIONS if option]
    registered += [option for option, _dest, _help in (options.ROADMAP, options.BATCH)]
    registered += [option for option, _dest, _help in options.SWITCHES]
    for option in registered:
        assert f"`{option}`" in text, option


def test_defaults_are_shown_as_a_user_writes_them() -> None:
    assert settings.RETRY_DELAY.default == 2.0  # kept in seconds, given in milliseconds
    assert settings.RETRY_DELAY.shown_default == "2000 milliseconds"
    assert settings.RATE_LIMIT.shown_default == "10 requests per second"
    assert settings.MAX_QUEUE.shown_default == "100"
    assert settings.MAX_BODY.shown_default == "10 MB"
    assert settings.MAX_TOKENS.shown_default.startswith("none")
