"""pytest-roadmap: run a roadmap of code-generation API tasks as pytest items."""

from __future__ import annotations

__version__ = "0.1.0"
