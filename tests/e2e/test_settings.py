"""Settings: command line over environment over ini over default, and every bad value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pytest_roadmap.sandbox import max_in_window
from tests.support.project import Roadmap, task_toml


@pytest.fixture
def one_task(roadmap: Roadmap) -> Roadmap:
    roadmap.tasks("month1", task_toml("a"))
    return roadmap


def _header(roadmap: Roadmap, *args: str) -> str:
    result = roadmap.run("--co", *args) if "--co" in args else roadmap.run(*args)
    lines = [line for line in result.outlines if line.startswith("roadmap: api=")]
    assert lines, result.stdout.str()
    return lines[0]


def test_defaults_of_the_original_system(one_task: Roadmap) -> None:
    result = one_task.pytester.runpytest(*one_task.plugins, "--roadmap", "-n", "0")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "roadmap: api=http://127.0.0.1:* (sandbox) model=custom:default "
            "workers=0 (in-process, one task at a time) rate=10/s "
            "timeout=30s"
        ]
    )
    result.stdout.fnmatch_lines(["roadmap (sandbox): 1 task: 1 completed*"])
    result.stdout.fnmatch_lines(["tracker: not updated (results came from the sandbox)"])
    assert not (one_task.pytester.path / "ROADMAP_PROGRESS.json").exists()


def test_precedence_cli_env_ini(one_task: Roadmap, monkeypatch: pytest.MonkeyPatch) -> None:
    one_task.pytester.makeini(
        "[pytest]\nroadmap_rate_limit = 7\nroadmap_model = from-ini\nroadmap_timeout = 12\n"
    )
    # ini only (the test helper passes --roadmap-rate-limit 500, which beats the ini's 7)
    header = _header(one_task)
    assert "model=from-ini" in header and "rate=500/s" in header and "timeout=12s" in header
    result = one_task.pytester.runpytest(
        "-p", "no:cacheprovider", "--roadmap", "-n", "0", "--roadmap-api", one_task.sandbox.url
    )
    assert "rate=7/s" in result.stdout.str()
    # environment beats ini; TASK_TIMEOUT keeps milliseconds
    monkeypatch.setenv("CUSTOM_MODEL", "from-env")
    monkeypatch.setenv("TASK_TIMEOUT", "1500")
    monkeypatch.setenv("RATE_LIMIT", "9")
    header = one_task.pytester.runpytest(
        "-p", "no:cacheprovider", "--roadmap", "-n", "0", "--roadmap-api", one_task.sandbox.url
    ).stdout.str()
    assert (
        "model=from-env workers=0 (in-process, one task at a time) rate=9/s timeout=1.5s" in header
    )
    # command line beats environment
    header = _header(one_task, "--roadmap-model", "from-cli", "--roadmap-timeout", "4")
    assert "model=from-cli" in header and "timeout=4s" in header


def test_env_api_is_used(one_task: Roadmap, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEAST_MODE_API", one_task.sandbox.url)
    result = one_task.pytester.runpytest("-p", "no:cacheprovider", "--roadmap", "-n", "0")
    result.assert_outcomes(passed=1)
    assert len(one_task.chats()) == 1
    assert "(sandbox)" not in result.stdout.str()


BAD = [
    (
        ["--roadmap-rate-limit", "abc"],
        {},
        "invalid rate limit 'abc' from option --roadmap-rate-limit:"
        " must be a number of requests per second from 0.01 to 1000000, or with its unit,"
        " such as 5/s or 300/min",
    ),
    # A unit after a slash: per second or per minute, nothing else, and in range once
    # converted (0.3 a minute is 0.005 a second).
    (["--roadmap-rate-limit", "500/h"], {}, "invalid rate limit '500/h' from option*300/min"),
    ([], {"RATE_LIMIT": "0.3/min"}, "invalid rate limit '0.3/min' from environment*0.01 to*"),
    ([], {"RATE_LIMIT": "500 /min"}, "invalid rate limit '500 /min' from environment*"),
    ([], {"RATE_LIMIT": "/min"}, "invalid rate limit '/min' from environment*"),
    (
        ["--roadmap-token-rate", "100/h"],
        {},
        "invalid token rate '100/h' from option --roadmap-token-rate: must be a number of tokens"
        " per minute from 1 to 100000000, or with its unit, such as 90000/min or 1500/s",
    ),
    (["--roadmap-rate-limit", "0"], {}, "invalid rate limit '0' from option --roadmap-rate-limit*"),
    ([], {"RATE_LIMIT": "-5"}, "invalid rate limit '-5' from environment variable RATE_LIMIT*"),
    (
        [],
        {"TASK_TIMEOUT": "soon"},
        "invalid task timeout 'soon' from environment variable "
        "TASK_TIMEOUT: must be a number of seconds from 0.1 to 86400 (TASK_TIMEOUT: "
        "milliseconds, from 100 to 86400000)",
    ),
    (
        [],
        {"MAX_CONCURRENCY": "-1"},
        "invalid concurrency '-1' from environment variable "
        "MAX_CONCURRENCY: must be an integer from 0 to 64 (0: no worker processes, tasks run "
        "one at a time)",
    ),
    # -n obeys the same rule as MAX_CONCURRENCY (it was an OverflowError traceback, a silent
    # single worker for -1, and 100 workers while MAX_CONCURRENCY=100 was refused).
    (
        ["-n", "-1"],
        {},
        "invalid worker count '-1' from option -n: must be an integer from 0 to 64*",
    ),
    (
        ["-n", "100"],
        {},
        "invalid worker count '100' from option -n: must be an integer from 0 to 64*",
    ),
    (
        ["-n", "99999999999999999999"],
        {},
        "invalid worker count '99999999999999999999' from option -n*",
    ),
    (
        [],
        {"BEAST_MODE_API": "localhost:3000"},
        "invalid API URL 'localhost:3000' from "
        "environment variable BEAST_MODE_API: must be an http:// or https:// URL, or 'sandbox'",
    ),
    (["--roadmap-burst", "0"], {}, "invalid burst '0' from option --roadmap-burst*"),
    (["--roadmap-health-path", "health"], {}, "invalid health path 'health'*starting with /"),
    (["--roadmap-health-interval", "-1"], {}, "invalid health interval '-1'*"),
    (["--roadmap-health-wait", "x"], {}, "invalid health wait 'x'*"),
    (["--roadmap-retry-delay", "-3"], {}, "invalid retry delay '-3'*milliseconds*"),
    (["--roadmap-backoff", "0.5"], {}, "invalid backoff factor '0.5'*from 1 to 100"),
    (["--roadmap-max-delay", "nan"], {}, "invalid maximum retry delay 'nan'*"),
    (["--roadmap-max-queue", "-1"], {}, "invalid queue limit '-1'*"),
    (["--roadmap-model", " "], {}, "invalid model ' '*"),
    ([], {"RATE_LIMIT": "1e400"}, "invalid rate limit '1e400' from environment variable*"),
    ([], {"MAX_CONCURRENCY": "100000"}, "invalid concurrency '100000'*from 0 to 64*"),
    ([], {"MAX_CONCURRENCY": "two"}, "invalid concurrency 'two'*"),
    (["--roadmap-timeout", "1e9"], {}, "invalid task timeout '1e9' from option*"),
    (["--roadmap-max-queue", "1.5"], {}, "invalid queue limit '1.5'*"),
    ([], {"ROADMAP_SHARDS": "0"}, "invalid shards '0' from environment variable*1 to 1000"),
    (["--roadmap-shard-wait", "-1"], {}, "invalid shard wait '-1'*from 0 to 86400"),
    (["--roadmap-api", "ftp://x.example"], {}, "invalid API URL 'ftp://x.example'*"),
    # Tiny values: 1e-300 requests/s overflowed the limiter's interval; a tiny timeout,
    # health interval (a status line per tick) or retry cap means nothing a person wants.
    ([], {"RATE_LIMIT": "1e-300"}, "invalid rate limit '1e-300' from environment*0.01 to*"),
    ([], {"RATE_LIMIT": "0.001"}, "invalid rate limit '0.001' from environment*0.01 to*"),
    (["--roadmap-timeout", "0.01"], {}, "invalid task timeout '0.01'*from 0.1 to 86400*"),
    ([], {"TASK_TIMEOUT": "50"}, "invalid task timeout '50' from environment*from 100 to*"),
    (["--roadmap-health-interval", "1e-9"], {}, "invalid health interval '1e-9'*0.1 to 3600"),
    (["--roadmap-max-delay", "0.0001"], {}, "invalid maximum retry delay '0.0001'*1 to 3600000"),
    # Only what a person types: ASCII digits, no underscores, no padding.
    ([], {"RATE_LIMIT": "\uff15"}, "invalid rate limit '\uff15' from environment variable*"),
    ([], {"RATE_LIMIT": "1_0"}, "invalid rate limit '1_0' from environment variable*"),
    ([], {"RATE_LIMIT": " 5"}, "invalid rate limit ' 5' from environment variable*"),
    (["--roadmap-burst", "2 "], {}, "invalid burst '2 ' from option --roadmap-burst*"),
    (["--roadmap-max-queue", "\uff11\uff10"], {}, "invalid queue limit '\uff11\uff10'*"),
    (["--roadmap-backoff", "2e0"], {}, "invalid backoff factor '2e0'*"),
    ([], {"ROADMAP_SHARDS": "1_0"}, "invalid shards '1_0' from environment variable*"),
    (["--roadmap-ca-bundle", "missing.pem"], {}, "invalid CA bundle 'missing.pem'*PEM file"),
    (
        [],
        {"BEAST_MODE_TOKEN": "two words"},
        "invalid token from environment variable BEAST_MODE_TOKEN*",
    ),
]


@pytest.mark.parametrize(
    ("args", "env", "line"), BAD, ids=[b[2].split("'")[0] + str(i) for i, b in enumerate(BAD)]
)
def test_bad_setting_is_one_usage_error_line(
    one_task: Roadmap,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    line: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    extra = [] if "BEAST_MODE_API" in env else ["--roadmap-api", one_task.sandbox.url]
    result = one_task.pytester.runpytest(
        "-p", "no:cacheprovider", "--roadmap", "-p", "xdist", *extra, *args
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: pytest-roadmap: {line}"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()
    assert one_task.sandbox.log() == []


@pytest.mark.parametrize(
    ("env", "shown"), [("0.5", "rate=0.5/s"), (".5", "rate=0.5/s"), ("12.", "rate=12/s")]
)
def test_plain_decimals_are_numbers(
    one_task: Roadmap, monkeypatch: pytest.MonkeyPatch, env: str, shown: str
) -> None:
    monkeypatch.setenv("RATE_LIMIT", env)
    result = one_task.pytester.runpytest(
        "-p", "no:cacheprovider", "--roadmap", "--co", "--roadmap-api", one_task.sandbox.url
    )
    assert result.ret == pytest.ExitCode.OK
    assert shown in result.stdout.str()


@pytest.mark.parametrize(
    ("source", "value", "shown"),
    [
        ("option", "500/min", "rate=8.33333/s"),
        ("option", "5/s", "rate=5/s"),
        ("env", "600/min", "rate=10/s"),
        ("env", "90/minute", "rate=1.5/s"),
        ("ini", "120/m", "rate=2/s"),
        ("ini", "3/sec", "rate=3/s"),
    ],
)
def test_a_rate_limit_may_be_given_per_minute(
    one_task: Roadmap, monkeypatch: pytest.MonkeyPatch, source: str, value: str, shown: str
) -> None:
    args = ["--roadmap-rate-limit", value] if source == "option" else []
    if source == "env":
        monkeypatch.setenv("RATE_LIMIT", value)
    if source == "ini":
        one_task.pytester.makeini(f"[pytest]\nroadmap_rate_limit = {value}\n")
    result = one_task.pytester.runpytest(
        "-p", "no:cacheprovider", "--roadmap", "--co", "--roadmap-api", one_task.sandbox.url, *args
    )
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
    assert shown in result.stdout.str()


@pytest.mark.parametrize(
    ("value", "shown"), [("50/s", "tokens=3000/min"), ("900/min", "tokens=900/min")]
)
def test_a_token_rate_may_be_given_per_second(one_task: Roadmap, value: str, shown: str) -> None:
    result = one_task.run("--co", "--roadmap-protocol", "openai", "--roadmap-token-rate", value)
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
    assert shown in result.stdout.str()


@pytest.mark.slow
def test_a_rate_limit_per_minute_paces_the_run(one_task: Roadmap) -> None:
    one_task.tasks("month1", *(task_toml(f"t{i}") for i in range(8)))
    result = one_task.run("-n", "2", "--roadmap-rate-limit", "240/min")
    result.assert_outcomes(passed=8)
    # 240 a minute is 4 a second: the server never saw more in any second, probes included.
    entries = one_task.sandbox.log()
    assert max_in_window(entries, 1.0) <= 4
    arrivals = sorted(e["arrived"] for e in entries)
    assert arrivals[-1] - arrivals[0] >= (len(arrivals) - 1) / 4 * 0.95


def test_bad_ini_value_names_the_ini_key(one_task: Roadmap) -> None:
    one_task.pytester.makeini("[pytest]\nroadmap_backoff = fast\n")
    result = one_task.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*invalid backoff factor 'fast' from ini key roadmap_backoff*"])


# -- one place per setting (settings.py) -------------------------------------------------


def test_every_settings_field_comes_from_one_spec_or_is_derived() -> None:
    from dataclasses import fields

    from pytest_roadmap import settings

    names = {f.name for f in fields(settings.Settings)}
    assert set(settings.FIELD_SPECS) | set(settings.DERIVED) == names
    assert not set(settings.FIELD_SPECS) & set(settings.DERIVED)
    defined = [v for v in vars(settings).values() if isinstance(v, settings.Spec)]
    # Only CONCURRENCY is read by hand (for `workers`); every other spec fills its field.
    assert [s for s in defined if s not in settings.FIELD_SPECS.values()] == [settings.CONCURRENCY]
    for spec in settings.SPECS:
        assert spec.allowed and (spec.help or not (spec.option or spec.ini)), spec.name
    assert settings.RERUNS not in settings.SPECS  # pytest-rerunfailures registers --reruns


def test_defaults_are_the_settings_values(tmp_path: Path) -> None:
    from pytest_roadmap import settings

    resolved = settings.resolve_settings(
        settings.Sources({}, {}, {}, tmp_path, tmp_path), workers=2
    )
    for name, spec in settings.FIELD_SPECS.items():
        if spec.path:
            expected = tmp_path / spec.default if spec.default else None
            assert getattr(resolved, name) == expected, name
        elif name != "health_path":  # the protocol's own when not set
            assert getattr(resolved, name) == spec.default, name
    assert resolved.retry_delay == 2.0 and resolved.max_delay == 30.0  # seconds


def test_importing_settings_stays_cheap() -> None:
    # The entry point imports it to register options: no HTTP client, no database.
    code = (
        "import sys, pytest_roadmap.settings as s; "
        "print(sorted(m for m in ('requests', 'sqlite3', 'urllib3', 'redis') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
