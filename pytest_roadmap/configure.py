"""`--roadmap` given: this process's role, its run objects, and the hooks it gets.

The entry point (plugin.py) imports this module only once `--roadmap` is on the command
line, so a pytest run that does not use the plugin never loads the core.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from typing import Any

import pytest

from pytest_roadmap.attempt import AttemptHooks
from pytest_roadmap.batches import BatchPlan, load_batches
from pytest_roadmap.caps import cap_lines, capped_settings, concurrency_ceiling
from pytest_roadmap.collect import RUN_PROTOCOL, RUNNER, TaskItem
from pytest_roadmap.controller import ControllerHooks
from pytest_roadmap.errors import RoadmapError
from pytest_roadmap.inflight import AheadPool
from pytest_roadmap.interrupt import handle_sigterm
from pytest_roadmap.options import PLAN_WORKERS, sources_of
from pytest_roadmap.plan import History, read_history
from pytest_roadmap.protocol import PROTOCOLS
from pytest_roadmap.run import Controller, Role, RunConfig, TaskRunner
from pytest_roadmap.selection import SelectionHooks
from pytest_roadmap.settings import Settings, resolve_settings
from pytest_roadmap.store.base import StoreError
from pytest_roadmap.tasks import Task, load_tasks
from pytest_roadmap.terminal import header_line, replaced_timeout_line
from pytest_roadmap.wire import Coordinates


def role_of(config: pytest.Config) -> Role:
    """What this process does in the run; xdist has decided by configure time."""
    if hasattr(config, "workerinput"):
        return Role.WORKER
    if config.option.collectonly:
        return Role.LISTING
    distributing = (
        config.pluginmanager.hasplugin("xdist") and getattr(config.option, "dist", "no") != "no"
    )
    return Role.CONTROLLER if distributing else Role.ALONE


def configure(config: pytest.Config) -> None:
    """Resolve the settings, build this process's run objects, register their hooks."""
    _no_delay_for_rerun_state(config)
    role = role_of(config)
    info = getattr(config, "workerinput", {})
    try:
        workers = int(info.get("roadmap_workers") or _worker_count(config, role))
        settings = resolve_settings(sources_of(config), workers)
        plan, left_out = _batch_plan(config, settings, role)
    except RoadmapError as exc:
        raise pytest.UsageError(f"pytest-roadmap: {exc}") from None
    config.stash[RUN_PROTOCOL] = PROTOCOLS[settings.protocol]
    caps: tuple[str, ...] = ()
    if plan is not None:
        capped = capped_settings(settings, plan.safeguards)
        caps = tuple(cap_lines(settings, capped, plan.safeguards, plan.source))
        settings = capped
    ceiling = concurrency_ceiling(
        settings.workers * settings.inflight, plan.safeguards if plan else None
    )
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        if not settings.tasks_dir.is_dir():
            raise pytest.UsageError(
                f"pytest-roadmap: tasks folder {settings.tasks_dir} does not exist "
                "(set --roadmap-tasks or the ini key roadmap_tasks)"
            )
        config.args = [str(settings.tasks_dir)]
    if role is Role.WORKER:
        where = Coordinates.from_dict(info)
        run = RunConfig(
            role, settings, plan, ceiling, where.completed, caps, replay=_replay(config)
        )
        worker = TaskRunner(run, where, info["workerid"], parent=os.getppid())
        _register(config, run, runner=worker, controller=None, undo=handle_sigterm())
        return
    run = RunConfig(
        role,
        settings,
        plan,
        ceiling,
        _completed_in_tracker(config, settings),
        caps,
        left_out,
        resume=config.option.roadmap_resume,
        replay=_replay(config),
    )
    # Read before this run rewrites it.
    history = read_history(settings.report_dir / "report.json")
    if role is Role.LISTING:
        # Enough to order and list the tasks; nothing that talks to the API.
        _register(config, run, runner=None, controller=None, undo=None)
        if PLAN_WORKERS in config.stash:
            config.pluginmanager.register(
                PlanHooks(run, history, config.stash[PLAN_WORKERS]), "roadmap-plan"
            )
        return
    try:
        controller = Controller.start(run, history)
    except (RoadmapError, StoreError) as exc:
        raise pytest.UsageError(f"pytest-roadmap: {exc}") from None
    runner: TaskRunner | None = None
    if role is Role.ALONE:
        alone = runner = TaskRunner(run, controller.where, "main", store=controller.store)
        controller.running = lambda: alone.running()
    _register(config, run, runner=runner, controller=controller, undo=handle_sigterm())


def _replay(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "roadmap_replay", False))


def _register(
    config: pytest.Config,
    run: RunConfig,
    *,
    runner: TaskRunner | None,
    controller: Controller | None,
    undo: Callable[[], None] | None,
) -> None:
    """The hooks this process's role needs, and nothing else."""
    manager = config.pluginmanager
    manager.register(ProcessHooks(run, runner, controller, undo), "roadmap-process")
    if run.role is not Role.CONTROLLER:  # an xdist controller collects nothing
        manager.register(SelectionHooks(run, runner, controller), "roadmap-selection")
    if controller is not None:
        manager.register(ControllerHooks(controller), "roadmap-controller")
        if run.role is Role.CONTROLLER:
            from pytest_roadmap.distributed import XdistHooks  # xdist is loaded: it decided

            manager.register(XdistHooks(controller), "roadmap-xdist")
    if runner is not None:
        config.stash[RUNNER] = runner
        manager.register(AttemptHooks(run, runner), "roadmap-attempts")
        if run.settings.inflight > 1 and not run.replay:
            from pytest_roadmap.inflight.hooks import InflightHooks

            runner.ahead = AheadPool(run.settings.inflight, runner.send_ahead)
            worker = run.role is Role.WORKER
            manager.register(InflightHooks(runner.ahead, worker=worker), "roadmap-inflight")


class ProcessHooks:
    """What every process of a roadmap run has: its header and its end."""

    def __init__(
        self,
        run: RunConfig,
        runner: TaskRunner | None,
        controller: Controller | None,
        undo_sigterm: Callable[[], None] | None,
    ) -> None:
        self.run = run
        self.runner = runner
        self.controller = controller
        self.undo_sigterm = undo_sigterm

    def pytest_report_header(self, config: pytest.Config) -> list[str] | None:
        run, controller = self.run, self.controller
        if run.role is Role.WORKER:
            return None
        settings = run.settings
        api_url = controller.where.api_url if controller else settings.api
        distributed = run.role is Role.CONTROLLER
        if run.replay:
            return [
                f"roadmap: replay: the checks judge the answers saved in "
                f"{settings.report_dir / 'outputs'}; nothing is sent; reports go to "
                f"{run.replay_dir}"
            ]
        lines = [header_line(settings, api_url, settings.workers, distributed), *run.cap_lines]
        replaced = pytest_timeout_default(config)
        if replaced is not None:
            lines.append(replaced_timeout_line(*replaced))
        if settings.store and controller is not None:
            shown = getattr(controller.store, "shown_url", settings.store)
            lines.append(f"roadmap: store={shown} run={controller.where.run_id}")
        return lines

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.undo_sigterm is not None:
            self.undo_sigterm()
        if self.runner is not None:
            self.runner.close()
            del config.stash[RUNNER]
        if self.controller is not None:
            self.controller.close()


class PlanHooks:
    """--roadmap-plan: the session only collects; the summary prints what the selected tasks
    would take."""

    def __init__(self, run: RunConfig, history: History | None, workers: int) -> None:
        self.run = run
        self.history = history
        self.workers = workers  # -n, 0 without xdist
        self.tasks: list[Task] = []

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.tasks = [i.task for i in session.items if isinstance(i, TaskItem)]

    def pytest_terminal_summary(
        self, terminalreporter: Any, exitstatus: int, config: pytest.Config
    ) -> None:
        terminalreporter.write_sep("=", "roadmap plan")
        plan = self.run.run_plan(
            self.tasks,
            workers=self.workers or 1,
            distributed=bool(self.workers),
            history=self.history,
        )
        for line in plan.lines():
            terminalreporter.write_line(self.run.redact(line))


def pytest_timeout_default(config: pytest.Config) -> tuple[float, str] | None:
    """pytest-timeout's timeout for every test, which its header line shows, and where it
    came from: its --timeout, PYTEST_TIMEOUT or the ini key `timeout`, read as it reads them
    (None when it has none). The selection gives every task an attempt timeout of its own
    (a `timeout` marker), so this one applies to no task."""
    if not config.pluginmanager.hasplugin("timeout"):
        return None
    for raw, origin in (
        (config.getoption("timeout", None), "option --timeout"),
        (os.environ.get("PYTEST_TIMEOUT"), "environment variable PYTEST_TIMEOUT"),
        (config.getini("timeout"), "ini file"),
    ):
        if raw is None or raw == "":
            continue
        try:
            seconds = float(raw)
        except ValueError:
            return None  # pytest-timeout refuses it itself
        return (seconds, origin) if seconds else None
    return None


def _no_delay_for_rerun_state(config: pytest.Config) -> None:
    """Turn off Nagle's algorithm on pytest-rerunfailures' worker socket.

    Under xdist every worker asks the controller for each item's rerun state over a TCP
    socket with small writes; with Nagle and delayed ACKs each exchange can wait tens of
    milliseconds. Measured in docs/benchmarks.md (600 tasks, -n 2): work phase 13.3 s with
    the stock socket, 5.6 s with TCP_NODELAY. It reaches into the plugin's attributes, so
    it is best effort: any other shape is left alone.
    """
    sock = getattr(getattr(config, "failures_db", None), "sock", None)
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _worker_count(config: pytest.Config, role: Role) -> int:
    """The processes that run tasks: xdist's workers, or this one."""
    if role is Role.CONTROLLER:
        return max(1, len(getattr(config.option, "tx", None) or ()))
    return 1


def _batch_plan(
    config: pytest.Config, settings: Settings, role: Role
) -> tuple[BatchPlan | None, int]:
    """The batch file's plan, if any, and (for the controller) how many tasks it leaves out."""
    if settings.batches is None:
        if config.option.roadmap_batch:
            raise RoadmapError("--roadmap-batch needs a batch file: --roadmap-batches PATH")
        return None, 0
    path = settings.batches
    shown = (
        str(path.relative_to(config.rootpath))
        if path.is_relative_to(config.rootpath)
        else str(path)
    )
    plan = load_batches(path, shown)
    if config.option.roadmap_batch:
        plan = plan.named(config.option.roadmap_batch)
    left_out = 0
    if role is not Role.WORKER and settings.tasks_dir.is_dir():
        try:
            known = load_tasks(settings.tasks_dir, config.rootpath)
        except RoadmapError:
            return plan, 0  # the broken task file is reported by collection, with its name
        plan.check_tasks(t.id for t in known)
        left_out = sum(1 for t in known if plan.batch_of(t.id) is None)
    return plan, left_out


def _completed_in_tracker(config: pytest.Config, settings: Settings) -> frozenset[str]:
    """Keys the tracker marks complete, read once by the controller for every process: for
    --roadmap-resume, and for dependencies this run did not select."""
    if not config.option.roadmap_resume and not settings.tracker.is_file():
        return frozenset()
    from pytest_roadmap.tracker import ProgressTracker  # only when there is one to read

    try:
        return frozenset(ProgressTracker(settings.tracker).completed_keys())
    except RoadmapError as exc:
        if config.option.roadmap_resume:  # a broken tracker is a usage error up front
            raise pytest.UsageError(f"pytest-roadmap: --roadmap-resume: {exc}") from None
        return frozenset()  # the end of the run says why it was not updated
