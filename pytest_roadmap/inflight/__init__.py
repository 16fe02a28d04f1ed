"""Requests in flight beyond one per worker process (`--roadmap-inflight K`).

Each worker (or the only process) keeps up to K of its tasks' requests in flight: an
`AheadPool` (pool.py) starts the first attempt of each of the next items the process holds on
one of K threads, with the very gates of an attempt's setup, and each item's setup and call
then wait for its attempt. pytest keeps the items: one report each, in its order, retries
through pytest-rerunfailures, the item's timeout, -k, --lf, JUnit. The pool knows nothing of
pytest; hooks.py is the pytest side: which items a process holds next (xdist's queue of the
worker, or the session's items), and the pool's life in the session.
"""

from __future__ import annotations

from pytest_roadmap.inflight.pool import AheadPool, Prefetch

__all__ = ["AheadPool", "Prefetch"]
