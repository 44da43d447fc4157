"""`GET /api/v5/prometheus/stats`: the node's metrics in the Prometheus text format.

The registry is built on the first scrape from the node (so it sees the parts
the node built after the admin app was created) and kept for the next ones.
The event loop lag comes from `node.loop_lag` when the node runs a
`LoopLagMonitor`; otherwise this module starts one of its own on the first
scrape (a timer on the loop that dies with it).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine import __version__
from engine.admin.nodeview import NodeView
from engine.metrics import CONTENT_TYPE, LoopLagMonitor, node_registry, render


def routes(node: NodeView) -> list[Route]:
    state: dict[str, Any] = {}

    def lag_monitor() -> LoopLagMonitor | None:
        owned = getattr(node, "loop_lag", None)
        if isinstance(owned, LoopLagMonitor):
            return owned
        fallback = state.get("lag")
        if fallback is None:
            fallback = state["lag"] = LoopLagMonitor()
            fallback.start()  # scrapes run on the node's loop
        return fallback

    async def stats(request: Request) -> Response:
        registry = state.get("registry")
        if registry is None:
            registry = state["registry"] = node_registry(node, lag_monitor, __version__)
        return Response(render(registry), media_type=CONTENT_TYPE)

    return [Route("/api/v5/prometheus/stats", stats, methods=["GET"])]
