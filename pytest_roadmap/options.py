"""The command-line options and ini keys, and the settings' sources read from pytest's config.

Imported by the entry point in every pytest run, so it imports nothing but pytest and
option_table.py, the settings' options as literals (generated from settings.py); the
settings themselves are imported only by a run that reads them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_roadmap import option_table

if TYPE_CHECKING:
    from pytest_roadmap.settings import Sources

# --roadmap-plan: the workers the run would have (0: one process); the session only collects.
PLAN_WORKERS = pytest.StashKey[int]()


# The options that are no setting of their own, (option, dest, help): switches, which
# settings.py does not resolve, and --roadmap-batch (repeatable). The settings page
# (settings_page.py) lists them from here.
ROADMAP = (
    "--roadmap",
    "roadmap",
    "Collect and run the roadmap tasks (without it no task is collected or sent).",
)
BATCH = ("--roadmap-batch", "roadmap_batch", "In batch mode, run only this batch (repeatable).")
SWITCHES: tuple[tuple[str, str, str], ...] = (
    (
        "--no-roadmap-adaptive",
        "no_roadmap_adaptive",
        "The same as --roadmap-adaptive off (kept for earlier command lines).",
    ),
    (
        "--roadmap-resume",
        "roadmap_resume",
        "Skip the tasks the progress tracker already marks complete.",
    ),
    (
        "--roadmap-stop-on-failure",
        "roadmap_stop_on_failure",
        "In batch mode, skip later batches once a batch has a failure.",
    ),
    (
        "--roadmap-plan",
        "roadmap_plan",
        "Print what the selected tasks will take (requests, time, tokens) and send nothing.",
    ),
    (
        "--roadmap-replay",
        "roadmap_replay",
        "Judge the selected tasks' checks against the answers the last run saved in the "
        "report folder; send nothing.",
    ),
)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("roadmap", "pytest-roadmap: roadmap tasks against a code API")
    option, dest, help = ROADMAP
    group.addoption(option, action="store_true", default=False, dest=dest, help=help)
    for name, dest, ini, help in option_table.OPTIONS:
        if name:
            group.addoption(name, dest=dest, default=None, help=help)
        if ini:
            parser.addini(ini, help, default=None)
    option, dest, help = BATCH
    group.addoption(option, action="append", default=[], dest=dest, metavar="NAME", help=help)
    for option, dest, help in SWITCHES:
        group.addoption(option, action="store_true", default=False, dest=dest, help=help)


class _IniView(Mapping[str, Any]):
    """Lazy ini lookups for the settings resolver."""

    def __init__(self, config: pytest.Config) -> None:
        self._config = config

    def __getitem__(self, key: str) -> Any:
        try:
            return self._config.getini(key)
        except ValueError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def sources_of(config: pytest.Config) -> Sources:
    """Where the settings come from: this session's options, environment and ini file."""
    from pytest_roadmap.settings import Sources

    return Sources(
        vars(config.option),
        os.environ,
        _IniView(config),
        config.invocation_params.dir,
        config.rootpath,
    )


def tasks_dir_of(config: pytest.Config) -> Path:
    """The tasks folder as the settings would resolve it; raises RoadmapError if invalid.

    Asked by every run without --roadmap, to leave the folder alone: the settings are
    imported only when a source names the folder, the default is placed as they would
    place it (under the rootdir).
    """
    table = option_table
    if (
        getattr(config.option, table.TASKS_DIR_DEST, None) is None
        and not (table.TASKS_DIR_ENV and os.environ.get(table.TASKS_DIR_ENV))
        and not (table.TASKS_DIR_INI and config.getini(table.TASKS_DIR_INI))
    ):
        return config.rootpath / table.TASKS_DIR_DEFAULT
    from pytest_roadmap import settings

    sources = sources_of(config)
    raw, origin = settings.resolve(settings.TASKS_DIR, sources)
    return settings.place(raw, origin, sources)
