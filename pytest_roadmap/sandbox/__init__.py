"""The sandbox API: a local HTTP server that imitates the BEAST MODE code-generation API,
and under /v1 an OpenAI-compatible chat completions API.

It is the plugin's embedded default API, the peer of the project's own tests and the
server for benchmarks. Its knobs (latency, capacity, rate limit, random failures,
downtime, scripted rules) make it misbehave on purpose, and its request log lets a test
judge a run from the server's side. The server itself uses the standard library only.

One module per part: `paths` (what is served where), `config` (`SandboxConfig`, `Rule`),
`answers` (what a request is answered), `state` (admission, counters, the request log),
`handler` (HTTP), `server` (`SandboxServer`), `analysis` (judging a run from its log),
`remote` (a sandbox in another process, `SandboxSubprocess`) and `cli` (the
`roadmap-sandbox` command, also `python -m pytest_roadmap.sandbox`).
"""

from __future__ import annotations

from pytest_roadmap.sandbox.analysis import (
    achieved_rate,
    max_in_flight,
    max_in_window,
    max_tokens_in_window,
)
from pytest_roadmap.sandbox.answers import SANDBOX_MODEL
from pytest_roadmap.sandbox.cli import DEFAULT_PORT, main
from pytest_roadmap.sandbox.config import RATE_LIMIT_HEADERS, Rule, SandboxConfig
from pytest_roadmap.sandbox.paths import (
    CHAT_PATH,
    HEALTH_PATH,
    OPENAI_BASE,
    OPENAI_CHAT,
    OPENAI_MODELS,
)
from pytest_roadmap.sandbox.remote import (
    SandboxSubprocess,
    configure_remote,
    fetch_log,
    reset_remote,
)
from pytest_roadmap.sandbox.server import SandboxServer
from pytest_roadmap.sandbox.state import go_duration

__all__ = [
    "CHAT_PATH",
    "DEFAULT_PORT",
    "HEALTH_PATH",
    "OPENAI_BASE",
    "OPENAI_CHAT",
    "OPENAI_MODELS",
    "RATE_LIMIT_HEADERS",
    "SANDBOX_MODEL",
    "Rule",
    "SandboxConfig",
    "SandboxServer",
    "SandboxSubprocess",
    "achieved_rate",
    "configure_remote",
    "fetch_log",
    "go_duration",
    "main",
    "max_in_flight",
    "max_in_window",
    "max_tokens_in_window",
    "reset_remote",
]
