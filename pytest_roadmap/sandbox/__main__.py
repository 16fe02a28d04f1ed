"""`python -m pytest_roadmap.sandbox`: the `roadmap-sandbox` command."""

from __future__ import annotations

from pytest_roadmap.sandbox.cli import main

raise SystemExit(main())
