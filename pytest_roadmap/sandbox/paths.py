"""Where the sandbox serves what: both protocols' paths (from protocol.py), and its own
control paths under /_sandbox/.
"""

from __future__ import annotations

from pytest_roadmap.protocol import BEAST, OPENAI, PROTOCOLS

CHAT_PATH = PROTOCOLS[BEAST].chat_path
HEALTH_PATH = PROTOCOLS[BEAST].health_path
API_PREFIX = "/api/"
# The OpenAI protocol, under /v1 as hosted servers serve it.
OPENAI_BASE = PROTOCOLS[OPENAI].sandbox_base
OPENAI_CHAT = OPENAI_BASE + PROTOCOLS[OPENAI].chat_path
OPENAI_MODELS = OPENAI_BASE + PROTOCOLS[OPENAI].health_path
CHAT_PATHS = frozenset({CHAT_PATH, OPENAI_CHAT})
HEALTH_PATHS = frozenset({HEALTH_PATH, OPENAI_MODELS})
# The sandbox's own control API: its settings, its request log, and a reset (of the log,
# the rule counters, the rate window and the quota).
CONTROL_PREFIX = "/_sandbox/"
CONFIG_PATH = CONTROL_PREFIX + "config"
LOG_PATH = CONTROL_PREFIX + "log"
RESET_PATH = CONTROL_PREFIX + "reset"
