"""A check written in Python: a function of the project's that receives the answer and
raises AssertionError to fail it. It is the project's own code, run in the worker."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from pytest_roadmap.checks.base import CODE, Answer, Context, Where
from pytest_roadmap.checks.verdict import ERROR, FAILED, PASSED, CheckResult
from pytest_roadmap.errors import shown

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_LOADED: dict[Path, ModuleType] = {}
# Where a module is looked for beside a task file before the import path: the task file's
# folder, then its `checks/` folder (which a roadmap run does not collect as tests).
LOOK_IN = (".", "checks")


def _from_file(path: Path) -> ModuleType:
    """The module of a file of the tasks folder, loaded once per process under a name of
    its own, so that it shadows nothing on the import path."""
    module = _LOADED.get(path)
    if module is None:
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
        name = f"_roadmap_checks_{path.stem}_{digest}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        _LOADED[path] = module
    return module


def _find(module: str, folder: Path) -> tuple[Path | None, str]:
    """The file that holds `module` beside a task file, or None: it is then imported."""
    relative = Path(*module.split("."))
    for sub in LOOK_IN:
        for candidate in (folder / sub / f"{relative}.py", folder / sub / relative / "__init__.py"):
            if candidate.is_file():
                return candidate.resolve(), module
    return None, module


@dataclass(frozen=True)
class Function:
    """`module:function`, called with the text of the answer's `part` (the code unless set)."""

    kind: ClassVar[str] = "function"
    target: str  # "module:function", as the task file says
    path: str | None  # the module's file beside the task file, or None: from the import path
    part: str = CODE

    @classmethod
    def read(cls, table: Mapping[str, Any], where: Where, part: str | None) -> Function:
        target = table["function"]
        module, _, name = target.partition(":") if isinstance(target, str) else ("", "", "")
        if not (_NAME.fullmatch(module) and name.isidentifier()):
            raise where.error(f"'function' must be 'module:function', got {shown(target)}")
        path, _ = _find(module, where.folder)
        check = cls(str(target), None if path is None else str(path), part or CODE)
        try:
            check.load()
        except Exception as exc:
            raise where.error(f"'function' {target}: {_why(exc)}") from None
        return check

    def load(self) -> Callable[[str], object]:
        module_name, _, name = self.target.partition(":")
        if self.path is not None:
            module = _from_file(Path(self.path))
        else:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name is not None and module_name.startswith(exc.name):
                    looked = ", ".join(f"{d}/" for d in LOOK_IN)
                    raise LookupError(
                        f"no module {module_name!r} beside the task file ({looked}) or on "
                        "the import path"
                    ) from None
                raise
        function = getattr(module, name, None)
        if not callable(function):
            raise LookupError(f"{module_name} has no function {name!r}")
        return function  # type: ignore[no-any-return]

    @property
    def label(self) -> str:
        return f"function {self.target}"

    def judge(self, answer: Answer, context: Context) -> CheckResult:
        started = time.perf_counter()
        status, detail = PASSED, ""
        try:
            self.load()(answer.part(self.part))
        except AssertionError as exc:
            status, detail = FAILED, _assertion_words(exc)
        except Exception as exc:  # the check's own bug, not the answer's: an error
            status, detail = ERROR, _why(exc)
        return CheckResult(self.kind, self.label, status, detail, time.perf_counter() - started)


def _why(exc: BaseException) -> str:
    if isinstance(exc, LookupError) and exc.args:
        return str(exc.args[0])
    frames = traceback.extract_tb(exc.__traceback__)
    at = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {exc}{at}"


def _assertion_words(exc: AssertionError) -> str:
    words = str(exc).strip()
    if words:
        return words
    frames = traceback.extract_tb(exc.__traceback__)
    last = frames[-1] if frames else None
    return f"assert failed: {last.line}" if last and last.line else "assertion failed"
