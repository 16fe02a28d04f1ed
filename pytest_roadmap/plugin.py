"""The pytest layer: options, ini keys, markers, the fixture, and the hooks that wire the core.

Everything here is thin on purpose; the work happens in the core modules. The controller
(the process without `workerinput`) owns the store, the embedded sandbox, the monitor and
the reports; workers only run tasks.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_roadmap import settings as setting_specs
from pytest_roadmap.batches import BatchPlan, dependency_problems, load_batches, run_order
from pytest_roadmap.caps import adaptive_limit, cap_lines, capped_settings, concurrency_ceiling
from pytest_roadmap.collect import RUN_PROTOCOL, TaskFile, TaskItem, odd_task_files
from pytest_roadmap.deadline import Deadline, deadline_info, info_key, process_age
from pytest_roadmap.display import Secrets, escape_controls, shown_url
from pytest_roadmap.errors import RoadmapError
from pytest_roadmap.health import PROBES_KEY
from pytest_roadmap.interrupt import StopCheck, handle_sigterm, interruption
from pytest_roadmap.monitor import Monitor
from pytest_roadmap.pacing import REFUSED_KEY, Pacer, QuotaExhausted
from pytest_roadmap.plan import History, collection_order, plan_run, read_history
from pytest_roadmap.progress import ProgressKeeper, python_task_wire, wires_from_task_files
from pytest_roadmap.protocol import PROTOCOLS
from pytest_roadmap.recorder import RunRecorder, task_to_wire
from pytest_roadmap.results import FAILED, INTERRUPTED, NOT_RUN, PASSED, RERUN, SKIPPED, RunRecord
from pytest_roadmap.retry import TaskFailure, is_retryable
from pytest_roadmap.safeguards import (
    GATE_KEY,
    REQUESTS_KEY,
    Safeguards,
    Slots,
    batch_gate_key,
    pacer_of,
    store_failures_are_transient,
)
from pytest_roadmap.sequencing import Sequencer, ShardsMissing
from pytest_roadmap.settings import (
    Settings,
    Sources,
    check_workers,
    concurrency_from_env,
    resolve_settings,
)
from pytest_roadmap.store import open_store
from pytest_roadmap.store.base import Store, StoreError
from pytest_roadmap.tasks import load_tasks
from pytest_roadmap.terminal import header_line, summary_lines
from pytest_roadmap.usage import USAGE_PROPERTIES, usage_of, usage_properties

if TYPE_CHECKING:
    from pytest_roadmap.report import OutputWriter

# Extra seconds pytest-timeout allows beyond the HTTP read timeout, so a slow API is
# reported by the client's clear words; pytest-timeout catches whatever else hangs.
TIMEOUT_GRACE = 2.0
CLIENT_FIXTURE = "roadmap_client"
JUNIT_PROPERTIES = frozenset(
    {"attempts", "refusals", "worker", "dogfooding", "month", "week", "batch", *USAGE_PROPERTIES}
)


@dataclass
class AttemptState:
    """Per-item state across one attempt's setup, call and teardown."""

    unhealthy: str | None = None
    slot: Slots | None = None
    last_error: BaseException | None = None
    refusals: int = 0  # attempts refused for load in a row (the task did not run)
    refused_since: float | None = None  # when that run of refusals began
    reserved: int | None = None  # tokens this attempt reserved in the run's token budget


@dataclass
class Runtime:
    """One process's part of a run."""

    settings: Settings
    api_url: str
    store_url: str
    run_id: str
    worker: str
    workers: int
    instance: str = ""  # unique per controller: names this run's gate holders in the store
    store: Store | None = None
    safeguards_: Safeguards | None = None
    plan: BatchPlan | None = None
    sequencer: Sequencer | None = None
    deadline: Deadline | None = None  # with --roadmap-deadline, in a process that runs tasks
    runs_tasks: bool = True  # False on an xdist controller: its workers run the tasks
    concurrency: int = 1  # tasks doing API work at once, at most (the batch file may cap it)
    completed: frozenset[str] = frozenset()  # tracker keys marked complete at the start
    parent: int | None = None  # a worker: its controller's pid (gone: send nothing more)
    undo_sigterm: Any = None
    # controller only
    run_dir: Path | None = None
    sandbox: Any = None
    recorder: RunRecorder | None = None
    outputs: OutputWriter | None = None  # writes passed tasks' outputs during the run
    keeper: ProgressKeeper | None = None  # tracker during the run, alerts, the stop flag
    selected: list[pytest.Item] = field(default_factory=list)  # without xdist
    collected: list[str] = field(default_factory=list)  # with xdist: the workers' node ids
    scheduler: Any = None  # with xdist: our OrderedScheduling, which knows what is running
    current: str | None = None  # without xdist: the task whose attempt started last
    end_lines: list[str] = field(default_factory=list)  # what writing the reports said
    monitor: Monitor | None = None
    expected: int = 0
    left_out: int = 0  # tasks in no batch, in batch mode
    states: dict[str, AttemptState] = field(default_factory=dict)
    secrets_: Secrets | None = None

    def pacer(self) -> Pacer:
        """The learned pace of the run, bounded by the batch file's safeguards if any."""
        if self.store is None:
            self.store = open_store(self.store_url)
        caps = self.plan.safeguards if self.plan is not None else None
        return pacer_of(
            self.settings,
            self.store,
            maximum=self.concurrency,
            lower=caps is None or caps.auto_reduce_on_failure,
            higher=caps is None or caps.auto_increase_on_success,
        )

    def safeguards(self) -> Safeguards:
        if self.safeguards_ is None:
            pacer = self.pacer()
            assert self.store is not None  # opened by pacer()
            self.safeguards_ = Safeguards(
                self.settings,
                self.api_url,
                self.store,
                self.worker,
                self.run_id,
                holder=f"{self.instance}:{self.worker}",
                # Only workers can outlive their run's end; one process stops with it.
                stop=StopCheck(self.store, self.instance, self.parent)
                if self.parent is not None
                else None,
                pacer=pacer,
            )
        return self.safeguards_

    def state(self, item: pytest.Item) -> AttemptState:
        return self.states.setdefault(item.nodeid, AttemptState())

    @property
    def secrets(self) -> Secrets:
        if self.secrets_ is None:
            self.secrets_ = Secrets(self.settings.token, self.settings.api)
        return self.secrets_

    def redact(self, text: str) -> str:
        """`text` as shown or saved: secrets masked, control characters escaped."""
        return escape_controls(self.secrets.mask(text))


RUNTIME = pytest.StashKey[Runtime]()


def runtime_of(config: pytest.Config) -> Runtime | None:
    return config.stash.get(RUNTIME, None)


def is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")


# --- options -------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("roadmap", "pytest-roadmap: roadmap tasks against a code API")
    group.addoption(
        "--roadmap",
        action="store_true",
        default=False,
        help="Collect and run the roadmap tasks (without it no task is collected or sent).",
    )
    for spec in setting_specs.SPECS:
        if spec.option and spec.option != "--reruns":  # --reruns is rerunfailures' own
            group.addoption(spec.option, dest=spec.dest, default=None, help=spec.help)
        if spec.ini:
            parser.addini(spec.ini, spec.help, default=None)
    group.addoption(
        "--no-roadmap-adaptive",
        action="store_true",
        default=False,
        dest="no_roadmap_adaptive",
        help="The same as --roadmap-adaptive off (kept for earlier command lines).",
    )
    group.addoption(
        "--roadmap-batch",
        action="append",
        default=[],
        dest="roadmap_batch",
        metavar="NAME",
        help="In batch mode, run only this batch (repeatable).",
    )
    group.addoption(
        "--roadmap-resume",
        action="store_true",
        default=False,
        dest="roadmap_resume",
        help="Skip the tasks the progress tracker already marks complete.",
    )
    group.addoption(
        "--roadmap-stop-on-failure",
        action="store_true",
        default=False,
        dest="roadmap_stop_on_failure",
        help="In batch mode, skip later batches once a batch has a failure.",
    )
    group.addoption(
        "--roadmap-plan",
        action="store_true",
        default=False,
        dest="roadmap_plan",
        help="Print what the selected tasks will take (requests, time, tokens) and send nothing.",
    )


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


def _sources(config: pytest.Config) -> Sources:
    return Sources(
        vars(config.option),
        os.environ,
        _IniView(config),
        config.invocation_params.dir,
        config.rootpath,
    )


def _tasks_dir(config: pytest.Config) -> Path:
    sources = _sources(config)
    raw, origin = setting_specs.resolve(setting_specs.TASKS_DIR, sources)
    return setting_specs._place(raw, origin, sources)


# --- start-up --------------------------------------------------------------------------


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
    try:
        if known.numprocesses is not None:
            check_workers(known.numprocesses)
        elif not (known.collectonly or getattr(known, "usepdb", False)):
            args[:] = [f"--numprocesses={concurrency_from_env(os.environ)}", *args]
    except RoadmapError as exc:
        raise pytest.UsageError(f"pytest-roadmap: {exc}") from None


def pytest_cmdline_main(config: pytest.Config) -> None:
    # After xdist's own (tryfirst), which has turned -n into workers: the plan collects only.
    if getattr(config.option, "roadmap", False) and getattr(config.option, "roadmap_plan", False):
        config.stash[PLAN_WORKERS] = int(getattr(config.option, "numprocesses", 0) or 0)
        config.option.collectonly = True


PLAN_WORKERS = pytest.StashKey[int]()  # --roadmap-plan: the workers the run would have
HISTORY = pytest.StashKey[History | None]()  # the last report's measurements


def _distributing(config: pytest.Config) -> bool:
    """Whether xdist runs the tasks in worker processes (it has decided by configure time)."""
    return (
        config.pluginmanager.hasplugin("xdist")
        and getattr(config.option, "dist", "no") != "no"
        and not config.option.collectonly
    )


def _worker_count(config: pytest.Config) -> int:
    """The processes that run tasks: xdist's workers, or this one."""
    return max(1, len(getattr(config.option, "tx", None) or ())) if _distributing(config) else 1


@pytest.hookimpl(trylast=True)  # after pytest-rerunfailures has opened its socket
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "roadmap: a roadmap task collected by pytest-roadmap")
    if not config.option.roadmap:
        return
    _no_delay_for_rerun_state(config)
    try:
        info = getattr(config, "workerinput", {})
        workers = int(info.get("roadmap_workers") or _worker_count(config))
        settings = resolve_settings(_sources(config), workers)
        plan = _batch_plan(config, settings)
    except RoadmapError as exc:
        raise pytest.UsageError(f"pytest-roadmap: {exc}") from None
    config.stash[RUN_PROTOCOL] = PROTOCOLS[settings.protocol]
    if plan is not None:
        config.stash[CAPS] = cap_lines(
            settings,
            capped_settings(settings, plan.safeguards),
            settings.workers,
            plan.safeguards,
            plan.source,
        )
        settings = capped_settings(settings, plan.safeguards)
    ceiling = concurrency_ceiling(settings.workers, plan.safeguards if plan else None)
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        if not settings.tasks_dir.is_dir():
            raise pytest.UsageError(
                f"pytest-roadmap: tasks folder {settings.tasks_dir} does not exist "
                "(set --roadmap-tasks or the ini key roadmap_tasks)"
            )
        config.args = [str(settings.tasks_dir)]
    if not is_controller(config):
        config.stash[RUNTIME] = Runtime(
            settings=settings,
            api_url=info["roadmap_api"],
            store_url=info["roadmap_store"],
            run_id=info["roadmap_run"],
            instance=info["roadmap_instance"],
            worker=info["workerid"],
            workers=settings.workers,
            plan=plan,
            concurrency=ceiling,
            completed=frozenset(info.get("roadmap_completed", ())),
            parent=os.getppid(),
            undo_sigterm=handle_sigterm(),
        )
        config.pluginmanager.register(ExecutorPlugin(config.stash[RUNTIME]), "roadmap-executor")
        return
    completed = _completed_in_tracker(config, settings)
    # Read before this run rewrites it.
    config.stash[HISTORY] = read_history(settings.report_dir / "report.json")
    if config.option.collectonly:
        # Enough to order and list the tasks; nothing that talks to the API.
        config.stash[RUNTIME] = Runtime(
            settings, settings.api, "", "", "main", 1, plan=plan, completed=completed
        )
        return
    _start_controller(config, settings, plan)
    runtime = config.stash[RUNTIME]
    runtime.completed = completed
    runtime.undo_sigterm = handle_sigterm()
    if settings.deadline is not None and runtime.store is not None:
        info = deadline_info(
            settings.deadline,
            now=runtime.recorder.record.started if runtime.recorder else time.time(),
            age=process_age(),
            history=config.stash[HISTORY],
            expected_latency=settings.expected_latency,
        )
        runtime.store.put(info_key(runtime.instance), info.dumps())


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


def _batch_plan(config: pytest.Config, settings: Settings) -> BatchPlan | None:
    if settings.batches is None:
        if config.option.roadmap_batch:
            raise RoadmapError("--roadmap-batch needs a batch file: --roadmap-batches PATH")
        return None
    path = settings.batches
    shown = (
        str(path.relative_to(config.rootpath))
        if path.is_relative_to(config.rootpath)
        else str(path)
    )
    plan = load_batches(path, shown)
    if config.option.roadmap_batch:
        plan = plan.named(config.option.roadmap_batch)
    if is_controller(config) and settings.tasks_dir.is_dir():
        try:
            known = load_tasks(settings.tasks_dir, config.rootpath)
        except RoadmapError:
            return plan  # the broken task file is reported by collection, with its name
        plan.check_tasks(t.id for t in known)
        config.stash[LEFT_OUT] = sum(1 for t in known if plan.batch_of(t.id) is None)
    return plan


LEFT_OUT = pytest.StashKey[int]()
CAPS = pytest.StashKey[list[str]]()  # header lines: what the batch file's safeguards lowered


def _open_run_store(settings: Settings, run_dir: Path, run_id: str) -> Store:
    """The run's coordination store, created here before any worker opens it.

    The default is an SQLite file private to the run (concurrent first opens of a WAL
    database fail with "database is locked", so the controller makes it first). A Redis
    URL is shared by every run given the same run id: CI shards, remote workers.
    """
    url = settings.store or f"sqlite://{(run_dir / 'store.db').as_posix()}"
    if url.startswith(("redis://", "rediss://")):
        from pytest_roadmap.store.redis import with_run_id

        url = with_run_id(url, run_id)
    try:
        return open_store(url, create=True)
    except (RoadmapError, StoreError) as exc:
        raise pytest.UsageError(f"pytest-roadmap: {exc}") from None


def _start_controller(config: pytest.Config, settings: Settings, plan: BatchPlan | None) -> None:
    run_dir = Path(tempfile.mkdtemp(prefix="pytest-roadmap-"))
    run_id = settings.run_id or uuid.uuid4().hex[:12]
    store = _open_run_store(settings, run_dir, run_id)
    ceiling = concurrency_ceiling(settings.workers, plan.safeguards if plan else None)
    store.gate_set_limit(GATE_KEY, ceiling)
    for batch in plan.batches if plan else ():
        if batch.max_concurrency is not None:
            store.gate_set_limit(batch_gate_key(batch), min(batch.max_concurrency, ceiling))
    sandbox = None
    api_url = settings.api
    if settings.sandbox:
        from pytest_roadmap.sandbox import SandboxServer

        sandbox = SandboxServer().start()
        api_url = sandbox.url + PROTOCOLS[settings.protocol].sandbox_base
    runtime = Runtime(
        settings=settings,
        api_url=api_url,
        store_url=store.url,
        run_id=run_id,
        instance=uuid.uuid4().hex[:12],
        worker="main",
        workers=settings.workers,
        store=store,
        run_dir=run_dir,
        sandbox=sandbox,
        plan=plan,
        runs_tasks=not _distributing(config),
        concurrency=ceiling,
    )
    runtime.recorder = RunRecorder(
        RunRecord(
            api=shown_url(api_url),
            sandbox=settings.sandbox,
            model=settings.model,
            workers=settings.workers,
            rate_limit=settings.rate_limit,
            started=time.time(),
            run_id=runtime.run_id,
            protocol=settings.protocol,
            token_rate=settings.token_rate,
            price_in=settings.price_in,
            price_out=settings.price_out,
        )
    )
    runtime.keeper = ProgressKeeper(
        runtime.recorder,
        tracker=None if settings.sandbox else settings.tracker,
        store=store,
        instance=runtime.instance,
        monitoring=plan.monitoring if plan else None,
        source=plan.source if plan else "",
    )
    config.stash[RUNTIME] = runtime
    config.pluginmanager.register(ControllerPlugin(runtime), "roadmap-recorder")
    if runtime.runs_tasks:
        config.pluginmanager.register(ExecutorPlugin(runtime), "roadmap-executor")
    else:
        # Only for tasks whose worker died: their final outcome is known here alone.
        runtime.sequencer = Sequencer(store, plan)
    if config.pluginmanager.hasplugin("xdist"):
        from pytest_roadmap.distributed import ControllerHooks

        config.pluginmanager.register(ControllerHooks(runtime), "roadmap-controller")


def pytest_unconfigure(config: pytest.Config) -> None:
    runtime = runtime_of(config)
    if runtime is None:
        return
    if runtime.undo_sigterm is not None:
        runtime.undo_sigterm()
    if runtime.monitor is not None:
        runtime.monitor.stop()
    if runtime.outputs is not None:
        runtime.outputs.close()
    if runtime.keeper is not None:
        runtime.keeper.close_tracker()
    if runtime.safeguards_ is not None:
        runtime.safeguards_.close()
    if runtime.store is not None:
        runtime.store.close()
    if runtime.sandbox is not None:
        runtime.sandbox.stop()
    if runtime.run_dir is not None:
        shutil.rmtree(runtime.run_dir, ignore_errors=True)
    del config.stash[RUNTIME]


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    runtime = runtime_of(config)
    if runtime is None or not is_controller(config):
        return None
    lines = [
        header_line(runtime.settings, runtime.api_url, runtime.workers, not runtime.runs_tasks)
    ]
    capped: list[str] = config.stash.get(CAPS, [])
    lines += capped
    if runtime.settings.store and runtime.store is not None:
        shown = getattr(runtime.store, "shown_url", runtime.settings.store)
        lines.append(f"roadmap: store={shown} run={runtime.run_id}")
    return lines


def pytest_sessionstart(session: pytest.Session) -> None:
    runtime = runtime_of(session.config)
    if runtime is None or runtime.recorder is None or runtime.store is None:
        return
    settings = runtime.settings
    terminal = session.config.pluginmanager.get_plugin("terminalreporter")
    say = (lambda line: _status(terminal, line)) if terminal else (lambda line: None)
    caps = runtime.plan.safeguards if runtime.plan else None
    track = runtime.plan.monitoring.track_metrics if runtime.plan else True
    if runtime.keeper is not None:
        runtime.keeper.say = say
    runtime.monitor = Monitor(
        store=runtime.store,
        recorder=runtime.recorder,
        interval=settings.health_interval,
        adaptive=(
            adaptive_limit(runtime.concurrency, settings.health_interval, caps)
            if settings.adaptive == "seed"
            else None
        ),
        pacer=runtime.pacer(),
        expected=lambda: runtime.expected,
        write=say if track else _without_status(say),
        holder=f"{runtime.instance}:monitor",
    )
    runtime.monitor.start()


STATUS = "roadmap: running "  # how the monitor's live status line starts


def _without_status(say: Callable[[str], None]) -> Callable[[str], None]:
    """The batch file's `trackMetrics: false`: no live status line; changes still print."""

    def write(line: str) -> None:
        if not line.startswith(STATUS):
            say(line)

    return write


def _status(terminal: Any, line: str) -> None:
    # xdist's progress letters leave the cursor mid-line; a status line gets its own line.
    writer = getattr(terminal, "_tw", None)
    if writer is not None and int(getattr(writer, "width_of_current_line", 0)):
        terminal.write("\n")
    terminal.write_line(line)


# --- collection ------------------------------------------------------------------------


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    # Without --roadmap the tasks folder does not exist for pytest: no task, no API call.
    if config.option.roadmap:
        return None
    try:
        tasks_dir = _tasks_dir(config)
    except RoadmapError:
        return None
    return True if collection_path == tasks_dir else None


def _holds_tasks(path: Path, config: pytest.Config) -> bool:
    """`path` is in the tasks folder or was named on the command line (it or a folder
    above it below the rootdir)."""
    runtime = runtime_of(config)
    tasks_dir = runtime.settings.tasks_dir if runtime else _tasks_dir(config)
    if path.is_relative_to(tasks_dir):
        return True
    return config.args_source == pytest.Config.ArgsSource.ARGS and any(
        path == Path(arg.split("::")[0]).resolve()
        or (
            Path(arg.split("::")[0]).resolve().is_dir()
            and path.is_relative_to(Path(arg.split("::")[0]).resolve())
            and not config.rootpath.is_relative_to(Path(arg.split("::")[0]).resolve())
        )
        for arg in config.args
    )


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> TaskFile | None:
    config = parent.config
    if file_path.suffix != ".toml" or not config.option.roadmap:
        return None
    if _holds_tasks(file_path, config):
        return TaskFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    # pytest's folders skip a FIFO or a device named *.toml without a word; adding it
    # as a task file makes its loading fail with a line that names it.
    report = yield
    config = collector.config
    if (
        isinstance(collector, pytest.Directory)
        and report.passed
        and config.option.roadmap
        and _holds_tasks(collector.path, config)
    ):
        report.result.extend(odd_task_files(collector))
    return report


def is_roadmap_item(item: pytest.Item) -> bool:
    return isinstance(item, TaskItem) or CLIENT_FIXTURE in getattr(item, "fixturenames", ())


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> Generator[None, None, None]:
    _check_dependencies(config, items)
    yield  # -k and -m deselect here
    _order_and_mark(config, items)


ALL_TASKS = pytest.StashKey[dict[str, Any]]()  # every collected task by id, before -k

# From this many task items on, the heap left by collection is frozen (see below).
FREEZE_FROM = 1000


def pytest_collection_finish(session: pytest.Session) -> None:
    # Collected items live until the session ends, yet every full garbage collection walks
    # them again: at 10,000 tasks pytest's five gc.collect() calls at exit alone took 0.7 s
    # of a 3.2 s `--co` (docs/benchmarks.md). gc.freeze() takes them out of the collector's
    # walks; nothing of theirs would be collected before exit anyway. An xdist worker is a
    # process of the run's own, so it always freezes: at -n 8 on 2 cores the workers took
    # 1.9 s to exit, garbage-collecting at once, and 0.1 s frozen. Elsewhere the process may
    # outlive the session (pytester runs sessions in-process), so only large runs freeze.
    config = session.config
    runtime = runtime_of(config)
    if runtime is None:
        return
    if hasattr(config, "workerinput") or len(session.items) >= FREEZE_FROM:
        gc.freeze()


def _check_dependencies(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Dependency problems are collection errors, judged over every collected task."""
    runtime = runtime_of(config)
    if runtime is None:
        return
    tasks = [item.task for item in items if isinstance(item, TaskItem)]
    # Before -k and -m: a dependency left out of the selection is still known by its id.
    config.stash[ALL_TASKS] = {task.id: task for task in tasks}
    for problem in dependency_problems(tasks, runtime.plan):
        report = pytest.CollectReport(
            nodeid=problem.split(":")[0], outcome="failed", longrepr=problem, result=[]
        )
        config.hook.pytest_collectreport(report=report)


def _order_and_mark(config: pytest.Config, items: list[pytest.Item]) -> None:
    """After -k and -m: batch mode's selection, the run order, markers and the queue."""
    runtime = runtime_of(config)
    if runtime is None:
        return
    settings = runtime.settings
    plan = runtime.plan
    if plan is not None:
        outside = [i for i in items if is_roadmap_item(i) and not _in_plan(i, plan)]
        if outside:
            config.hook.pytest_deselected(items=outside)
            items[:] = [i for i in items if i not in outside]
    task_items = {i.task.id: i for i in items if isinstance(i, TaskItem)}
    ordered = run_order([i.task for i in task_items.values()], plan)
    # Task items take the run order among the places task items held; others stay put.
    places = [n for n, i in enumerate(items) if isinstance(i, TaskItem)]
    for place, in_order in zip(places, ordered, strict=True):
        items[place] = task_items[in_order.id]
    completed = runtime.completed if config.option.roadmap_resume else frozenset()
    resumed: list[str] = []
    marks = _Marks(settings)
    queued = 0
    for item in items:
        if not is_roadmap_item(item):
            continue
        if isinstance(item, TaskItem) and item.task.tracker_key in completed:
            resumed.append(item.task.id)
            item.add_marker(marks.resumed)
            continue
        task = item.task if isinstance(item, TaskItem) else None
        if item.get_closest_marker("flaky") is None:
            reruns = task.retries if task and task.retries is not None else settings.reruns
            item.add_marker(marks.flaky(reruns))
        if item.get_closest_marker("timeout") is None:
            seconds = task.timeout if task and task.timeout else settings.timeout
            item.add_marker(marks.timeout(seconds + (TIMEOUT_GRACE if task else 0.0)))
        queued += 1
        if settings.max_queue and queued > settings.max_queue:
            item.add_marker(marks.queue_full)
    if is_controller(config):
        runtime.selected = [item for item in items if is_roadmap_item(item)]
        runtime.expected = len(runtime.selected)
    if runtime.runs_tasks and runtime.store_url:
        complete, unmet = _outside_dependencies(config, task_items)
        runtime.sequencer = Sequencer(
            runtime.safeguards().store,
            plan,
            stop_on_failure=config.option.roadmap_stop_on_failure,
            shards=settings.shards,
            shard_wait=settings.shard_wait,
            complete=complete,
            outside=unmet,
        )
        runtime.sequencer.register(task_items, shard=runtime.instance)
        for task_id in resumed:  # done in an earlier run: its dependants may go ahead
            runtime.sequencer.mark_done(task_id, PASSED)
        sent = [t for t in ordered if not task_items[t.id].get_closest_marker("skip")]
        runtime.deadline = Deadline.from_store(
            runtime.safeguards().store,
            runtime.instance,
            sent,
            workers=runtime.concurrency,
            rate=settings.rate_limit,
            shards=settings.shards,
        )


def _outside_dependencies(
    config: pytest.Config, selected: Mapping[str, TaskItem]
) -> tuple[set[str], dict[str, str]]:
    """Dependencies of selected tasks that this run did not select: those the tracker marks
    complete (met), and for the others, why their dependants are skipped and how to run
    them. Another shard may still select them; the sequencer asks the store first."""
    runtime = config.stash[RUNTIME]
    every = config.stash.get(ALL_TASKS, {})
    complete: set[str] = set()
    outside: dict[str, str] = {}
    tracker = runtime.settings.tracker.name
    for item in selected.values():
        for dep in item.task.depends_on:
            if dep in selected or dep in complete or dep in outside or dep not in every:
                continue
            task = every[dep]
            if task.tracker_key in runtime.completed:
                complete.add(dep)
                continue
            plan = runtime.plan
            if plan is not None and plan.batch_of(dep) is None:
                how = f"add it to a batch of {plan.source}"
            else:
                how = f'select it too (e.g. -k "{item.task.id} or {dep}")'
            outside[dep] = (
                f"dependency {dep!r} was not selected in this run and {tracker} does not mark "
                f"it complete: {how}, or run it first"
            )
    return complete, outside


class _Marks:
    """The markers the plugin puts on task items, each made once: with 10,000 tasks,
    building a marker per item was a third of the collection time."""

    def __init__(self, settings: Settings) -> None:
        self.resumed = pytest.mark.skip(
            reason=f"already complete in {settings.tracker.name} (--roadmap-resume)"
        )
        self.queue_full = pytest.mark.skip(
            reason=f"queue full (max {settings.max_queue}): raise --roadmap-max-queue "
            "or select fewer tasks with -k"
        )
        self._flaky: dict[int, pytest.MarkDecorator] = {}
        self._timeout: dict[float, pytest.MarkDecorator] = {}

    def flaky(self, reruns: int) -> pytest.MarkDecorator:
        if reruns not in self._flaky:
            self._flaky[reruns] = pytest.mark.flaky(reruns=reruns, condition=is_retryable)
        return self._flaky[reruns]

    def timeout(self, seconds: float) -> pytest.MarkDecorator:
        if seconds not in self._timeout:
            self._timeout[seconds] = pytest.mark.timeout(seconds, func_only=True)
        return self._timeout[seconds]


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


def _in_plan(item: pytest.Item, plan: BatchPlan) -> bool:
    return isinstance(item, TaskItem) and plan.batch_of(item.task.id) is not None


# --- running ---------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    runtime = runtime_of(item.config)
    if runtime is None or not is_roadmap_item(item) or item.get_closest_marker("skip"):
        return
    runtime.current = item.nodeid
    state = runtime.state(item)
    guards = runtime.safeguards()
    failed_before = max(0, int(getattr(item, "execution_count", 1)) - 1)
    batch = None
    if isinstance(item, TaskItem) and runtime.sequencer is not None:
        batch = runtime.sequencer.batch_of(item.task.id)
        if failed_before == 0:
            # Batch barriers and dependencies: wait here, where no slot is held yet.
            try:
                with store_failures_are_transient():
                    reason = runtime.sequencer.wait_turn(item.task)
            except ShardsMissing as exc:
                # Fails in the call phase, like an unhealthy API: one line, no traceback.
                state.unhealthy = str(exc)
                return
            if reason is not None:
                pytest.skip(reason)
    deadline = runtime.deadline
    if deadline is not None and isinstance(item, TaskItem):
        if failed_before == 0 and (why := deadline.check(item.task)) is not None:
            pytest.skip(why)
        delay = guards.backoff.wait(failed_before) if failed_before else 0.0
        if failed_before and (why := deadline.check_retry(item.task, delay)) is not None:
            state.unhealthy = f"not retried: {why}"  # fails in the call, as unhealthy does
            return
    guards.enter_batch(batch)
    try:
        state.unhealthy = guards.before_attempt(failed_before, state.last_error, state.refusals)
    except QuotaExhausted as stopped:
        pytest.skip(str(stopped))
    if state.unhealthy is None:
        between = runtime.plan.between_tasks if runtime.plan else 0.0
        state.slot = guards.acquire_slot(batch, between)
        if isinstance(item, TaskItem):
            # Here rather than in the call: a long wait for the token budget must not count
            # against the attempt's timeout.
            state.reserved = guards.reserve_tokens(item.task)
    elif not isinstance(item, TaskItem):
        raise TaskFailure(state.unhealthy, transient=False)


def run_task(item: TaskItem) -> dict[str, Any]:
    """The call phase of a task file's item: one chat request under the safeguards."""
    runtime = runtime_of(item.config)
    if runtime is None:  # pragma: no cover - items exist only with --roadmap
        raise pytest.UsageError("roadmap tasks run only with --roadmap")
    state = runtime.state(item)
    if state.unhealthy is not None:
        # Health already had its full wait; another attempt would only wait again.
        raise TaskFailure(state.unhealthy, transient=False)
    try:
        attempt = int(getattr(item, "execution_count", 1))
        return runtime.safeguards().chat(item.task, attempt, state.reserved)
    except QuotaExhausted as stopped:
        pytest.skip(str(stopped))
    finally:
        _release(state)


def _release(state: AttemptState) -> None:
    if state.slot is not None:
        state.slot.release()
        state.slot = None


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    runtime = runtime_of(item.config)
    if runtime is not None and item.nodeid in runtime.states:
        _release(runtime.states[item.nodeid])


def _error_line(runtime: Runtime, excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    error = excinfo.value
    if isinstance(error, TaskFailure):
        text = error.reason
    elif type(error).__name__ == "Failed" and "Timeout" in str(error):
        text = f"attempt timed out ({str(error).splitlines()[0].strip()})"
    else:
        first = str(error).strip().splitlines()
        text = f"{type(error).__name__}: {first[0]}" if first else type(error).__name__
    return runtime.redact(" ".join(text.split()))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    runtime = runtime_of(item.config)
    if runtime is None or not is_roadmap_item(item):
        return report
    batch = (
        runtime.plan.batch_of(item.name) if runtime.plan and isinstance(item, TaskItem) else None
    )
    if call.when == "teardown" or (call.when == "setup" and report.passed):
        if call.when == "setup":  # tell the controller about the task before it runs
            report.roadmap = {  # type: ignore[attr-defined]
                "task": _task_wire(item),
                "phase": "setup",
                "batch": batch.name if batch else None,
            }
        return report
    state = runtime.state(item)
    attempt = int(getattr(item, "execution_count", 1))
    info: dict[str, Any] = {
        "batch": batch.name if batch else None,
        "task": _task_wire(item),
        "phase": call.when,
        "attempt": attempt,
        "worker": runtime.worker,
        "started": call.start,
        "finished": call.stop,
        "error": None,
        "overload": False,
    }
    if report.skipped and isinstance(report.longrepr, tuple):
        info["error"] = runtime.redact(str(report.longrepr[2]).removeprefix("Skipped: "))
    elif call.excinfo is not None and report.failed:
        state.last_error = call.excinfo.value
        info["error"] = _error_line(runtime, call.excinfo)
        failure = call.excinfo.value
        info["overload"] = getattr(failure, "overload", False) or "Timeout" in str(failure)
        if isinstance(failure, TaskFailure) and failure.refused:
            info["refused"] = True
            _refused(runtime, item, state, call.stop, info)
    if not info.get("refused"):
        state.refusals, state.refused_since = 0, None
    if report.passed and isinstance(item, TaskItem):
        # Saved in outputs/: an answer that quotes the token must not carry it there.
        info["answer"] = runtime.secrets.mask_all(item.answer)
        info["usage"] = usage_of(item.answer)
    report.roadmap = info  # type: ignore[attr-defined]
    task = item.task if isinstance(item, TaskItem) else None
    # junitxml reads the teardown report's properties, which come from the item.
    refused = bool(info.get("refused"))
    refusals = _refusal_count(item, refused)
    item.user_properties[:] = [
        *[(k, v) for k, v in item.user_properties if k not in JUNIT_PROPERTIES],
        ("attempts", attempt + refusals - refused),  # every try, as report.json counts them
        ("refusals", refusals),
        ("worker", runtime.worker),
        ("dogfooding", (task.dogfooding if task else None) or ""),
        ("month", task.month if task else ""),
        ("week", task.week if task else ""),
        ("batch", batch.name if batch else ""),
        *usage_properties(info.get("usage"), runtime.settings.price_in, runtime.settings.price_out),
    ]
    report.user_properties = list(item.user_properties)
    return report


def _refused(
    runtime: Runtime, item: pytest.Item, state: AttemptState, at: float, info: dict[str, Any]
) -> None:
    """The API refused this attempt for load: it did not run the task, so it spends none of
    the task's retries, unless the API has been refusing it for longer than the longest wait.

    pytest-rerunfailures counts attempts in `item.execution_count` and decides whether to run
    again from it once this attempt's reports are made; taking this one back keeps the count
    of real attempts.
    """
    state.refusals += 1
    if state.refused_since is None:
        state.refused_since = at
    waited = at - state.refused_since
    limit = runtime.settings.max_wait
    if waited <= limit:
        item.execution_count = max(0, int(getattr(item, "execution_count", 1)) - 1)  # type: ignore[attr-defined]
    else:
        info["error"] = (
            f"the API kept refusing for load for {waited:.0f} s (more than --roadmap-max-wait "
            f"{limit:g} s): {info['error']}"
        )


REFUSALS = pytest.StashKey[int]()


def _refusal_count(item: pytest.Item, refused: bool) -> int:
    """The task's refusals so far, kept on the item across its attempts."""
    count = item.stash.get(REFUSALS, 0) + (1 if refused else 0)
    item.stash[REFUSALS] = count
    return count


def _task_wire(item: pytest.Item) -> dict[str, Any]:
    if isinstance(item, TaskItem):
        return task_to_wire(item.task)
    return python_task_wire(item.name, str(item.path.name))


class ExecutorPlugin:
    """Hooks of the process that runs tasks (a worker, or the only process)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # A task's final outcome releases its dependants and, last of all, its batch.
        info = getattr(report, "roadmap", None)
        sequencer = self.runtime.sequencer
        if info is None or sequencer is None or "attempt" not in info:
            return
        final = (report.when == "call" and report.outcome in (PASSED, FAILED, SKIPPED)) or (
            report.when == "setup" and report.outcome in (FAILED, SKIPPED)
        )
        if final:
            sequencer.mark_done(info["task"]["id"], report.outcome)
            deadline = self.runtime.deadline
            if deadline is not None:
                deadline.ended(info["task"]["id"])


class ControllerPlugin:
    """Hooks only the controller has: it hears every report, from workers or in-process."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record_report(self.runtime, report)

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        # Ctrl-C, SIGTERM, or xdist stopping (-x, a worker interrupted): before the reports
        # are written, the workers are told to send nothing more.
        if self.runtime.keeper is not None:
            self.runtime.keeper.interrupted(interruption(excinfo.value))


def record_report(runtime: Runtime | None, report: pytest.TestReport) -> None:
    if runtime is None or runtime.recorder is None:
        return
    recorder = runtime.recorder
    info = getattr(report, "roadmap", None)
    if info is None:
        if report.when not in ("setup", "call", "teardown") and report.outcome in (FAILED, RERUN):
            # xdist's report for a task whose worker crashed mid-attempt.
            node = getattr(report, "node", None)
            worker = node.gateway.id if node is not None else "?"
            recorder.crashed(report.nodeid, worker, f"worker {worker} crashed", time.time())
            task_id = report.nodeid.rsplit("::", 1)[-1]
            if runtime.sequencer is not None and report.outcome == FAILED:
                runtime.sequencer.mark_done(task_id, FAILED)
        return
    keeper = runtime.keeper
    if info.get("phase") == "setup" and "attempt" not in info:
        recorder.task_seen(report.nodeid, info["task"], info.get("batch"))
        if keeper is not None:
            keeper.started(max(0, runtime.expected - len(recorder.record.results)))
        return
    outcome: str = report.outcome
    if outcome in (PASSED, FAILED, RERUN, SKIPPED):
        result = recorder.attempt(report.nodeid, info, outcome)
        if outcome == PASSED:
            if runtime.outputs is None:
                from pytest_roadmap.report import OutputWriter

                runtime.outputs = OutputWriter(runtime.settings.report_dir)
            runtime.outputs.add(result)
        if outcome != RERUN and keeper is not None:
            keeper.ended(result)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    runtime = runtime_of(session.config)
    if runtime is None or runtime.recorder is None:
        return
    if runtime.monitor is not None:
        runtime.monitor.stop()
        runtime.monitor = None
    record = runtime.recorder.record
    record.finished = time.time()
    if runtime.store is not None:
        with contextlib.suppress(StoreError):  # a store gone mid-run must not cost the reports
            record.health_probes = runtime.store.incr(PROBES_KEY, 0)
            record.requests = runtime.store.incr(REQUESTS_KEY, 0)
            for status in (429, 503):
                count = runtime.store.incr(f"{REFUSED_KEY}:{status}", 0)
                if count:
                    record.refusals[status] = count
            record.stopped = record.stopped or runtime.pacer().read().stop or None
    if record.stopped:
        # Tasks were skipped because the API's quota is gone: the run did not do its work.
        session.exitstatus = pytest.ExitCode.INTERRUPTED
    if runtime.keeper is not None:
        runtime.keeper.settle(*_selection(runtime, session.config))
    record.prediction = _plan(session.config, runtime, [r.task for r in record.results]).to_dict()
    # Written here, before xdist tears its workers down (up to 10 s for a hung one after an
    # interruption, when CI may be about to kill the job); the summary prints what it said.
    if record.results:
        runtime.end_lines = _write_outputs(runtime, record)
    if len(record.results) >= FREEZE_FROM:
        # An xdist controller collects no items, so it freezes here, once the run's
        # results are in, for pytest's exit-time collections (see pytest_collection_finish).
        gc.freeze()


def _selection(
    runtime: Runtime, config: pytest.Config
) -> tuple[list[str], Callable[[str], dict[str, Any] | None], set[str]]:
    """The node ids of the selected tasks, how to describe one that never reported, and
    the ones running (their first attempt is reported only once it ends)."""
    if not runtime.collected:  # no xdist: this process collected them
        items = {item.nodeid: item for item in runtime.selected}
        running = {runtime.current} if runtime.current else set()
        return list(items), lambda nodeid: _task_wire(items[nodeid]), running
    running = runtime.scheduler.running() if runtime.scheduler is not None else set()
    wire = wires_from_task_files(runtime.settings.tasks_dir, config.rootpath)
    return runtime.collected, wire, running


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    runtime = runtime_of(config)
    if runtime is not None and PLAN_WORKERS in config.stash:
        terminalreporter.write_sep("=", "roadmap plan")
        tasks = [i.task for i in runtime.selected if isinstance(i, TaskItem)]
        for line in _plan(config, runtime, tasks).lines():
            terminalreporter.write_line(runtime.redact(line))
    if runtime is None or runtime.recorder is None:
        return
    record = runtime.recorder.record
    if not record.results:
        return
    terminalreporter.write_sep("=", "roadmap summary")
    plan = runtime.plan
    names = [b.name for b in plan.batches] if plan else []
    for line in summary_lines(record, names, config.stash.get(LEFT_OUT, 0)):
        terminalreporter.write_line(runtime.redact(line))
    for line in runtime.end_lines:
        terminalreporter.write_line(runtime.redact(line))


def _plan(config: pytest.Config, runtime: Runtime, tasks: list[Any]) -> Any:
    """The plan of these tasks, as --roadmap-plan prints it and report.json records it."""
    workers = config.stash.get(PLAN_WORKERS, None)
    distributed = bool(workers) if workers is not None else not runtime.runs_tasks
    return plan_run(
        collection_order(tasks),
        runtime.settings,
        workers=workers or runtime.workers,
        distributed=distributed,
        batches=runtime.plan,
        history=config.stash.get(HISTORY, None),
        completed=runtime.completed if config.option.roadmap_resume else None,
    )


def _write_outputs(runtime: Runtime, record: RunRecord) -> list[str]:
    """Write the report folder and (never on the sandbox) the tracker; say what happened."""
    # Imported here, at the end of the run, and only by the process that writes them.
    from pytest_roadmap import report
    from pytest_roadmap.tracker import ProgressTracker

    # Each output on its own: one that fails (a full disk, an outputs/ link out of the
    # folder, a broken tracker) is one line here and costs none of the others.
    lines: list[str] = []
    written = runtime.outputs.close() if runtime.outputs is not None else None
    runtime.outputs = None
    folder = runtime.settings.report_dir
    recorded, writer_error = (
        runtime.keeper.close_tracker() if runtime.keeper is not None else (set(), None)
    )
    try:
        done = report.write_reports(record, folder, written)
    except Exception as exc:  # no traceback at the end of a run, whatever went wrong
        lines.append(f"roadmap: report not written: {_error_words(exc)}")
    else:
        if done.files:
            more = f" (+{len(done.outputs)} task outputs)" if done.outputs else ""
            names = ", ".join(done.reports) or "no report"
            lines.append(f"report: {names} in {folder}{more}")
        lines += [f"roadmap: {problem}" for problem in done.problems]
    if record.sandbox:
        lines.append("tracker: not updated (results came from the sandbox)")
        return lines
    try:
        # What the writer recorded during the run is not recorded twice.
        ProgressTracker(runtime.settings.tracker).record_run(record, recorded)
        lines.append(f"tracker: updated {runtime.settings.tracker}")
    except Exception as exc:
        lines.append(f"roadmap: tracker not updated: {_error_words(exc)}")
    if writer_error is not None and lines[-1].startswith("tracker: updated"):
        lines.append(f"roadmap: the tracker was not updated during the run: {writer_error}")
    if record.interrupted and recorded is not None:
        left = record.count(INTERRUPTED) + record.count(NOT_RUN)
        if left:
            lines.append(
                f"roadmap: run interrupted ({record.interrupted}): {left} tasks left; "
                "--roadmap-resume runs only those the tracker does not mark complete"
            )
    return lines


def _error_words(exc: Exception) -> str:
    """A user error's own line; anything else with its kind, as it is not expected."""
    if isinstance(exc, RoadmapError | OSError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


# --- the fixture -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def roadmap_client(request: pytest.FixtureRequest) -> Any:
    """The API client for Python tasks: every request passes the run's safeguards."""
    runtime = runtime_of(request.config)
    if runtime is None:
        pytest.fail("the roadmap_client fixture needs a roadmap run: pytest --roadmap", False)
    return runtime.safeguards().client
