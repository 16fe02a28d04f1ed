"""The plugin as a user meets it: a wheel in a fresh venv, every plugin from its entry point.

pytest registers entry-point plugins in the order the installed distributions happen to be
listed, and that order decided which of two `tryfirst` hooks read `-n` first: on some machines
the default concurrency was never applied. Here a folder put first on PYTHONPATH holds one
distribution's metadata, so that distribution's plugin registers first; both orders are tried.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.support.project import RemoteSandbox, task_toml
from tests.support.redis_server import run_url

REPO = Path(__file__).resolve().parents[2]
# What a checkout may hold that is no part of the source.
LOCAL_ONLY = (".git", ".venv", ".tox", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")
LOCAL_ONLY += ("roadmap-report", "ROADMAP_PROGRESS.json", "site")


@pytest.fixture(scope="session")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with `pip install '<wheel of this repository>[redis]'`: its site-packages."""
    root = tmp_path_factory.mktemp("installed")
    wheels = root / "wheels"
    quiet = ["-q", "--disable-pip-version-check"]
    # From a copy: pip builds in the tree, and a build/ folder left from an earlier build
    # would slip files into the wheel that the package data no longer names.
    source = root / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*LOCAL_ONLY))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", *quiet, "--no-deps", "-w", wheels, source],
        check=True,
    )
    # Without pip of its own (ensurepip was a fifth of this fixture's time): this venv's pip
    # installs into it, as it would into any environment it is pointed at.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", root / "venv"], check=True)
    python = root / "venv" / "bin" / "python"
    wheel = next(wheels.glob("pytest_roadmap-*.whl"))
    install = [sys.executable, "-m", "pip", "--python", python, "install", *quiet]
    subprocess.run([*install, f"{wheel}[redis]"], check=True)
    return next((root / "venv" / "lib").glob("python3*/site-packages"))


def _first(site: Path, distribution: str, where: Path) -> Path:
    """A folder whose only content is `distribution`'s metadata, to put first on the path."""
    where.mkdir()
    info = next(site.glob(f"{distribution}-*.dist-info"))
    (where / info.name).symlink_to(info)
    return where


def _run(
    site: Path, project: Path, first: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    python = site.parents[2] / "bin" / "python"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "ROADMAP_"))}
    environ.pop("MAX_CONCURRENCY", None)
    environ |= {"PYTHONPATH": str(first), **(env or {})}
    return subprocess.run(
        [python, "-m", "pytest", "-p", "no:cacheprovider", "--roadmap", *args],
        cwd=project,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
@pytest.mark.parametrize("registered_first", ["pytest_xdist", "pytest_roadmap"])
def test_default_concurrency_holds_whatever_the_plugin_order(
    venv: Path, sandbox: RemoteSandbox, tmp_path: Path, registered_first: str
) -> None:
    project = tmp_path / "project"
    (project / "roadmap_tasks").mkdir(parents=True)
    (project / "roadmap_tasks" / "month1.toml").write_text(
        "".join(task_toml(f"t{i}") for i in range(6))
    )
    first = _first(venv, registered_first, tmp_path / "first")
    sandbox.configure(latency=0.3)  # long enough that one worker cannot take every task

    done = _run(venv, project, first, "--roadmap-api", sandbox.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "workers=3 " in done.stdout
    workers = [e["worker"] for e in sandbox.log() if e["path"] == "/api/codebase/chat"]
    assert len(workers) == 6
    assert set(workers) <= {"gw0", "gw1", "gw2"} and len(set(workers)) >= 2

    sandbox.reset()
    done = _run(venv, project, first, "--roadmap-api", sandbox.url, env={"MAX_CONCURRENCY": "0"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "workers=0 (in-process" in done.stdout
    assert {e["worker"] for e in sandbox.log()} == {"main"}


@pytest.mark.slow
@pytest.mark.parametrize("registered_first", ["pytest_xdist", "pytest_roadmap"])
def test_k_run_of_a_task_whose_dependency_is_not_selected_ends_at_once(
    venv: Path, sandbox: RemoteSandbox, tmp_path: Path, registered_first: str
) -> None:
    # It waited 600 s for "shards" when -n had not been applied, although nothing was sharded.
    project = tmp_path / "project"
    (project / "roadmap_tasks").mkdir(parents=True)
    (project / "roadmap_tasks" / "month1.toml").write_text(
        task_toml("base") + task_toml("dashboard", depends_on=["base"])
    )
    first = _first(venv, registered_first, tmp_path / "first")

    done = _run(venv, project, first, "--roadmap-api", sandbox.url, "-k", "dashboard", "-rs")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout
    assert "dependency 'base'" in done.stdout
    assert [e for e in sandbox.log() if e["path"] == "/api/codebase/chat"] == []


def test_the_installed_sandbox_command_serves(venv: Path) -> None:
    """The wheel's `roadmap-sandbox` script (pytest_roadmap.sandbox:main) starts the server."""
    script = venv.parents[2] / "bin" / "roadmap-sandbox"
    process = subprocess.Popen(
        [script, "--host", "127.0.0.1", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("roadmap-sandbox listening on http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1].strip()
        health = requests.get(url + "/api/health", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok"
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0


@pytest.mark.redis
def test_the_wheel_ships_the_redis_scripts_and_a_run_uses_them(
    venv: Path, sandbox: RemoteSandbox, tmp_path: Path, redis_url: str
) -> None:
    source = REPO / "pytest_roadmap" / "store" / "lua"
    installed = venv / "pytest_roadmap" / "store" / "lua"
    scripts = sorted(p.relative_to(source).as_posix() for p in source.rglob("*.lua"))
    assert "reserve.lua" in scripts and "include/prelude.lua" in scripts
    assert sorted(p.relative_to(installed).as_posix() for p in installed.rglob("*.lua")) == scripts

    # A run against a Redis store loads every script from the installed package.
    project = tmp_path / "project"
    (project / "roadmap_tasks").mkdir(parents=True)
    (project / "roadmap_tasks" / "month1.toml").write_text(
        "".join(task_toml(f"t{i}") for i in range(3))
    )
    first = _first(venv, "pytest_roadmap", tmp_path / "first")
    store = run_url(redis_url)
    done = _run(venv, project, first, "--roadmap-api", sandbox.url, "--roadmap-store", store)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout
    assert len([e for e in sandbox.log() if e["path"] == "/api/codebase/chat"]) == 3


# -- the README, as a newcomer follows it ------------------------------------------------

README = REPO / "README.md"
# The README marks the blocks a test runs as written: this comment, then a fenced block.
RUN_AS_WRITTEN = "<!-- Run as written, in a fresh venv, by tests/e2e/test_install.py. -->"
FIRST_TASK_FILE = (
    "<!-- Written to roadmap_tasks/month1.toml of a new project and run by "
    "tests/e2e/test_install.py. -->"
)


def readme_blocks(marker: str) -> list[str]:
    """The fenced blocks that follow `marker` in the README, as their text."""
    text = README.read_text(encoding="utf-8")
    found = re.findall(re.escape(marker) + r"\n```[a-z]*\n(.*?)\n```", text, re.DOTALL)
    assert found, f"no block marked {marker!r} in README.md"
    return found


def readme_commands() -> list[str]:
    return [
        line
        for block in readme_blocks(RUN_AS_WRITTEN)
        for line in block.splitlines()
        if line.strip()
    ]


def newcomers_shell(site: Path, where: Path) -> dict[str, str]:
    """The environment of a newcomer's shell in the fresh venv: its `bin` first on PATH, and
    a `pip` there that installs into it (the venv has no pip of its own: see `venv`)."""
    python = site.parents[2] / "bin" / "python"
    tools = where / "tools"
    tools.mkdir()
    pip = tools / "pip"
    pip.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pip --python "{python}" "$@"\n')
    pip.chmod(0o755)
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "ROADMAP_", "BEAST_MODE_", "VIRTUAL_ENV"))
    }
    environ.pop("MAX_CONCURRENCY", None)
    environ["PATH"] = os.pathsep.join([str(tools), str(python.parent), "/usr/bin", "/bin"])
    return environ


def shell(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_readme_marks_the_blocks_it_says_run_as_written() -> None:
    commands = readme_commands()
    assert commands[:2] == ["pip install .", "pytest --roadmap -n 3"]
    used = " ".join(commands)
    for everyday in ("-k", "-m", "--lf", "--co", "--junitxml", "--roadmap-plan", "roadmap status"):
        assert everyday in used, everyday
    # Every link into the repository leads to a file that is there.
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text(encoding="utf-8"))
    local = [link for link in links if "://" not in link]
    assert local and all((REPO / link).is_file() for link in local), local


@pytest.mark.slow
def test_the_readme_commands_run_as_written(venv: Path, tmp_path: Path) -> None:
    checkout = tmp_path / "pytest-roadmap"
    shutil.copytree(REPO, checkout, ignore=shutil.ignore_patterns(*LOCAL_ONLY))
    env = newcomers_shell(venv, tmp_path)
    for command in readme_commands():
        done = shell(command, checkout, env)
        out = done.stdout + done.stderr
        assert done.returncode == 0, f"{command}\n{out}"
        if command.startswith("pytest --roadmap") and "--co" not in command:
            assert "(sandbox)" in out and "Traceback" not in out, f"{command}\n{out}"
    # What the commands said they would leave behind.
    assert (checkout / "roadmap-report" / "report.html").is_file()
    assert (checkout / "junit.xml").is_file()
    assert not (checkout / "ROADMAP_PROGRESS.json").exists()  # the sandbox never touches it


@pytest.mark.slow
def test_the_readme_first_task_file_runs(venv: Path, tmp_path: Path) -> None:
    (toml,) = readme_blocks(FIRST_TASK_FILE)
    project = tmp_path / "project"
    (project / "roadmap_tasks").mkdir(parents=True)
    (project / "roadmap_tasks" / "month1.toml").write_text(toml + "\n", encoding="utf-8")
    done = shell("pytest --roadmap -n 3", project, newcomers_shell(venv, tmp_path))
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    tasks = toml.count("[[tasks]]")
    assert f"{tasks} passed" in out and "(sandbox)" in out, out
