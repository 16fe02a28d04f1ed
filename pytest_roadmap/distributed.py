"""Controller <-> worker plumbing, registered only on an xdist controller."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytest_roadmap.safeguards import GATE_KEY

if TYPE_CHECKING:
    from pytest_roadmap.plugin import Runtime


class ControllerHooks:
    """Hands workers the run's coordinates and cleans up after a worker dies."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["roadmap_store"] = self.runtime.store_url
        node.workerinput["roadmap_api"] = self.runtime.api_url
        node.workerinput["roadmap_run"] = self.runtime.run_id

    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        # A crashed worker's slot goes back at once instead of at lease expiry.
        store = self.runtime.store
        if store is not None:
            store.gate_reclaim(GATE_KEY, node.workerinput["workerid"])

    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        self.runtime.expected = max(self.runtime.expected, len(ids))
