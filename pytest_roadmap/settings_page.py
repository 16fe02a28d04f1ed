"""docs/settings.md, the settings reference, written from the settings' definitions.

Each setting's row and section come from its `Spec` in settings.py (its option, environment
variable, ini key, default, what is allowed and its help), the options that are no setting
of their own from options.py, so the page says what the code does:

    python -m pytest_roadmap.settings_page > docs/settings.md

tests/unit/test_settings_page.py fails while docs/settings.md differs from what this writes.
Nothing imports this module but that test and the command above.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pytest_roadmap import options, settings
from pytest_roadmap.errors import SettingError
from pytest_roadmap.settings import Spec

COMMAND = "python -m pytest_roadmap.settings_page > docs/settings.md"
# Settings whose option another plugin registers: the plugin, and the option when the
# setting's own lookup has none (MAX_CONCURRENCY stands in for xdist's -n).
ELSEWHERE = {
    settings.RERUNS.name: ("pytest-rerunfailures", None),
    settings.CONCURRENCY.name: ("pytest-xdist", "-n"),
}

INTRO = """\
Every setting is resolved once per run, by one rule: **the command line, then the
environment, then the ini file, then the default**. An ini key is the option's name with
underscores and without the leading dashes (`--roadmap-rate-limit 5` is
`roadmap_rate_limit = 5`); the table says which settings have one, and which an environment
variable.

A bad value is a usage error (pytest exits with 4) of one line, naming the setting, where
the value came from and what is allowed:

    ERROR: pytest-roadmap: {example}

Numbers are taken as a person types them: ASCII digits with an optional decimal point (`5`,
`0.5`, `.5`). Exponents (`1e3`), underscores (`1_000`), other digits (full-width `\uff15`),
`inf`, `nan` and surrounding spaces are refused. Paths given on the command line or in the
environment are relative to where pytest started; ini values and defaults are relative to
the rootdir.

`-n` and `MAX_CONCURRENCY` take the same values (`-n` also xdist's `auto` and `logical`).
Without `-n` the plugin adds `-n $MAX_CONCURRENCY` (3 unless set) to the command line before
pytest parses it, so the default holds whatever order the installed plugins load in. `-n 0`
(or `MAX_CONCURRENCY=0`, or `-p no:xdist`) runs the tasks one at a time in pytest's own
process, and the header says so (`workers=0 (in-process, one task at a time)`); `--co` and
`--pdb` run without workers.
"""

TOKEN_SECTION = f"""\
### token

The API token, from the environment only: `{settings.TOKEN_ENV}`, or with
`--roadmap-protocol openai` `{settings.OPENAI_KEY}` when `{settings.TOKEN_ENV}` is unset. It is
sent as `Authorization: Bearer <token>` to the API's own scheme, host and port only, masked
(`***`) wherever it could be shown, an answer that quotes it included, and written nowhere.
A token with spaces or line breaks is a usage error.

- option: none
- environment: `{settings.TOKEN_ENV}` (`{settings.OPENAI_KEY}` with the openai protocol)
- ini key: none
- default: none: no Authorization header
- allowed: any text without spaces or line breaks
"""


def _example_error() -> str:
    """The line a bad value gets, as settings.py words it."""
    sources = settings.Sources({}, {"RATE_LIMIT": "-5"}, {}, Path("."), Path("."))
    try:
        settings.resolve(settings.RATE_LIMIT, sources)
    except SettingError as error:
        return str(error)
    raise AssertionError("RATE_LIMIT=-5 was taken")


def anchor(name: str) -> str:
    """The id MkDocs gives a heading of this name: "API URL" -> "api-url"."""
    return re.sub(r"[\s-]+", "-", re.sub(r"[^\w\s-]", "", name).strip().lower())


def _code(text: str | None) -> str:
    return f"`{text}`" if text else ""


def _option(spec: Spec[Any]) -> str:
    plugin, option = ELSEWHERE.get(spec.name, (None, None))
    shown = _code(spec.option or option)
    return f"{shown} ({plugin})" if plugin else shown


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _section(spec: Spec[Any]) -> str:
    plugin, _ = ELSEWHERE.get(spec.name, (None, None))
    ini = _code(spec.ini) or "none"
    if plugin and spec.ini:
        ini += f" ({plugin}'s)"
    lines = [
        f"### {spec.name}",
        "",
        spec.help,
        "",
        f"- option: {_option(spec) or 'none'}",
        f"- environment: {_code(spec.env) or 'none'}",
        f"- ini key: {ini}",
        f"- default: {spec.shown_default}",
        f"- allowed: {spec.allowed}",
        "",
    ]
    return "\n".join(lines)


def page_text() -> str:
    """The text of docs/settings.md."""
    specs = settings.EVERY_SPEC
    header = ["setting", "option", "environment", "ini key", "default"]
    table = [_row(header), _row(["---"] * len(header))]
    for spec in specs:
        table.append(
            _row(
                [
                    f"[{spec.name}](#{anchor(spec.name)})",
                    _option(spec),
                    _code(spec.env),
                    _code(spec.ini),
                    spec.shown_default,
                ]
            )
        )
    table.append(
        _row(["[token](#token)", "", _code(settings.TOKEN_ENV), "", "none"]),
    )
    switches = [_row(["option", "what it does"]), _row(["---", "---"])]
    for option, _dest, help in (options.ROADMAP, options.BATCH, *options.SWITCHES):
        switches.append(_row([_code(option), help]))
    parts = [
        "# Settings",
        "",
        f"<!-- Generated from pytest_roadmap/settings.py by `{COMMAND}`: do not edit. -->",
        "",
        INTRO.format(example=_example_error()),
        "## Every setting",
        "",
        *table,
        "",
        "## Switches",
        "",
        "Options that are no setting of their own: the command line only.",
        "",
        *switches,
        "",
        "## One by one",
        "",
        *[_section(spec) for spec in specs],
        TOKEN_SECTION,
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    import sys

    sys.stdout.write(page_text())
