"""Structure checks: the code parses as its language; the answer is JSON valid under a
JSON Schema. Nothing here runs the answer."""

from __future__ import annotations

import ast
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

# tomli, as tasks.py reads task files with it (the same parser, compiled).
import tomli

from pytest_roadmap.checks.base import CODE, Answer, Context, Where, one_line, shown_part
from pytest_roadmap.checks.verdict import FAILED, PASSED, CheckResult, excerpt
from pytest_roadmap.errors import shown


def _python(text: str) -> str | None:
    try:
        ast.parse(text)
    except SyntaxError as exc:
        where = f"line {exc.lineno}" + (f", column {exc.offset}" if exc.offset else "")
        return f"{exc.msg} ({where})"
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, absurd nesting
        return f"{type(exc).__name__}: {exc}"
    return None


def _json(text: str) -> str | None:
    try:
        json.loads(text)
    except ValueError as exc:
        return str(exc)
    except RecursionError:
        return "nested too deeply"
    return None


def _toml(text: str) -> str | None:
    try:
        tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        return str(exc)
    except RecursionError:
        return "nested too deeply"
    return None


# Each language's parser: the problem in words, or None when the text parses.
PARSERS: dict[str, Callable[[str], str | None]] = {
    "python": _python,
    "json": _json,
    "toml": _toml,
}


@dataclass(frozen=True)
class Parses:
    """The code parses as the language it names (`python`, `json`, `toml`)."""

    kind: ClassVar[str] = "parses"
    language: str
    part: str = CODE

    @classmethod
    def read(cls, table: Mapping[str, Any], where: Where, part: str | None) -> Parses:
        language = table["parses"]
        if language not in PARSERS:
            raise where.error(
                f"'parses' must be one of {', '.join(PARSERS)}, got {shown(language)} "
                "(other languages: a 'command' check that runs their parser)"
            )
        return cls(str(language), part or CODE)

    @property
    def label(self) -> str:
        return f"parses as {self.language}"

    def judge(self, answer: Answer, context: Context) -> CheckResult:
        started = time.perf_counter()
        text = answer.part(self.part)
        problem = (
            f"{shown_part(self.part)} is empty"
            if not text.strip()
            else PARSERS[self.language](text)
        )
        seconds = time.perf_counter() - started
        if problem is None:
            return CheckResult(self.kind, self.label, PASSED, seconds=seconds)
        detail = f"{problem}; {shown_part(self.part)} begins:\n{excerpt(text)}"
        return CheckResult(self.kind, self.label, FAILED, detail, seconds)


@dataclass(frozen=True)
class JsonSchema:
    """The answer is JSON, valid under a JSON Schema given inline or in a file beside the
    task file (the `jsonschema` library judges it, draft from the schema's `$schema`)."""

    kind: ClassVar[str] = "json_schema"
    schema: Mapping[str, Any] = field(hash=False)
    source: str  # the file it came from, or "inline"
    part: str = CODE

    @classmethod
    def read(cls, table: Mapping[str, Any], where: Where, part: str | None) -> JsonSchema:
        given = table["json_schema"]
        if isinstance(given, dict):
            schema, source = given, "inline"
        else:
            path = where.file(given, "json_schema")
            try:
                schema = json.loads(where.text(path, "json_schema"))
            except ValueError as exc:
                raise where.error(f"'json_schema': {given} is not JSON: {exc}") from None
            source = str(given)
        if not isinstance(schema, (dict, bool)):
            raise where.error(f"'json_schema' must be a JSON Schema object, got {shown(schema)}")
        import jsonschema  # only a run whose tasks use it pays for the import

        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise where.error(
                f"'json_schema' ({source}) is not a valid schema: {one_line(exc.message, 120)}"
            ) from None
        return cls(schema, source, part or CODE)

    @property
    def label(self) -> str:
        return f"json_schema {self.source}"

    def judge(self, answer: Answer, context: Context) -> CheckResult:
        import jsonschema

        started = time.perf_counter()
        text = answer.part(self.part)
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as exc:
            detail = f"{shown_part(self.part)} is not JSON ({exc}); it begins:\n{excerpt(text)}"
            return CheckResult(self.kind, self.label, FAILED, detail, time.perf_counter() - started)
        validator = jsonschema.validators.validator_for(self.schema)(self.schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(document))
        seconds = time.perf_counter() - started
        if error is None:
            return CheckResult(self.kind, self.label, PASSED, seconds=seconds)
        at = "/".join(str(p) for p in error.absolute_path) or "the top level"
        where = f"at {at}: {one_line(error.message, 200)}"
        detail = f"{where}; {shown_part(self.part)} begins:\n{excerpt(text)}"
        return CheckResult(self.kind, self.label, FAILED, detail, seconds)
