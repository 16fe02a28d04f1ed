"""option_table.py, the literals the entry point registers, says what settings.py says."""

from __future__ import annotations

from pathlib import Path

from pytest_roadmap import option_table, settings
from pytest_roadmap.settings import TASKS_DIR, Sources

REGENERATE = "python -m pytest_roadmap.settings > pytest_roadmap/option_table.py"


def test_the_option_table_is_the_settings_options() -> None:
    # Changed a Spec? Regenerate the table (and `ruff format` it).
    expected = tuple((spec.option, spec.dest, spec.ini, spec.help) for spec in settings.SPECS)
    assert expected == option_table.OPTIONS, REGENERATE
    assert (TASKS_DIR.dest, TASKS_DIR.env, TASKS_DIR.ini, TASKS_DIR.default) == (
        option_table.TASKS_DIR_DEST,
        option_table.TASKS_DIR_ENV,
        option_table.TASKS_DIR_INI,
        option_table.TASKS_DIR_DEFAULT,
    ), REGENERATE


def test_the_generated_text_defines_the_same_table() -> None:
    namespace: dict[str, object] = {}
    exec(compile(settings.option_table_text(), "option_table.py", "exec"), namespace)
    assert namespace["OPTIONS"] == option_table.OPTIONS
    assert namespace["TASKS_DIR_DEFAULT"] == option_table.TASKS_DIR_DEFAULT


def test_the_default_tasks_folder_is_placed_as_the_settings_place_it(tmp_path: Path) -> None:
    # options.tasks_dir_of places the default itself, without importing the settings.
    sources = Sources({}, {}, {}, tmp_path / "started_here", tmp_path / "root")
    raw, origin = settings.resolve(TASKS_DIR, sources)
    assert (
        settings.place(raw, origin, sources) == tmp_path / "root" / option_table.TASKS_DIR_DEFAULT
    )
