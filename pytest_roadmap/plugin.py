"""The entry point: the options, the `roadmap` marker, the `roadmap_client` fixture.

Every pytest run of a project that installs the plugin loads this module, so it imports
only what registering the options needs (options.py and the literals of option_table.py).
Everything else is imported and registered in `pytest_configure`, and only once `--roadmap`
is given (configure.py): a run without it pays for the option definitions and nothing more.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pytest_roadmap.errors import RoadmapError
from pytest_roadmap.options import PLAN_WORKERS, add_options, tasks_dir_of


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> None:
    """MAX_CONCURRENCY (default 3) stands in for `-n` when it is not given.

    pytest parses the command line into options only after this hook, so an `-n` added to
    `args` here is there before any plugin's `pytest_cmdline_main` reads it (xdist reads it
    in a `tryfirst` one, and which of two `tryfirst` hooks runs first depends on the order
    the plugins' entry points happen to be listed in). pytest's docs show this very hook
    for adding `-n` ("Dynamically adding command line options").
    """
    known = early_config.known_args_namespace
    if not getattr(known, "roadmap", False) or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    if not hasattr(known, "numprocesses"):  # xdist is not installed or disabled: one process
        return
    from pytest_roadmap.settings import check_workers, concurrency_from_env

    try:
        if known.numprocesses is not None:
            check_workers(known.numprocesses)
        elif not (known.collectonly or getattr(known, "usepdb", False)):
            args[:] = [f"--numprocesses={concurrency_from_env(os.environ)}", *args]
    except RoadmapError as exc:
        raise pytest.UsageError(f"pytest-roadmap: {exc}") from None


def pytest_cmdline_main(config: pytest.Config) -> None:
    # After xdist's own (tryfirst), which has turned -n into workers: the plan collects only,
    # so no worker starts and nothing talks to the API.
    if config.option.roadmap and config.option.roadmap_plan:
        config.stash[PLAN_WORKERS] = int(getattr(config.option, "numprocesses", 0) or 0)
        config.option.collectonly = True


@pytest.hookimpl(trylast=True)  # after pytest-rerunfailures has opened its socket
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "roadmap: a roadmap task collected by pytest-roadmap")
    if config.option.roadmap:
        from pytest_roadmap.configure import configure

        configure(config)


TASKS_DIR = pytest.StashKey["Path | None"]()


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    # Without --roadmap the tasks folder does not exist for pytest: no task, no API call.
    if config.option.roadmap:
        return None
    if TASKS_DIR not in config.stash:  # resolved once per session, not once per path
        try:
            config.stash[TASKS_DIR] = tasks_dir_of(config)
        except RoadmapError:
            config.stash[TASKS_DIR] = None
    return True if collection_path == config.stash[TASKS_DIR] else None


@pytest.fixture(scope="session")
def roadmap_client(request: pytest.FixtureRequest) -> Any:
    """The API client for Python tasks: every request passes the run's safeguards."""
    runner = None
    if request.config.option.roadmap:
        from pytest_roadmap.collect import RUNNER

        runner = request.config.stash.get(RUNNER, None)
    if runner is None:
        pytest.fail("the roadmap_client fixture needs a roadmap run: pytest --roadmap", False)
    return runner.safeguards().client
