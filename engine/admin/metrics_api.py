"""`GET /api/v5/prometheus/stats`: the node's metrics in the Prometheus text format.

The registry is built on the first scrape from the node (so it sees the parts
the node built after the admin app was created) and kept for the next ones.
The event loop lag comes from `node.loop_lag` when the node runs a
`LoopLagMonitor`; otherwise this module starts one of its own on the first
scrape (a timer on the loop that dies with it).

`mode` (EMQX 5.5+): `node` (the default) is this node only; `all_nodes_unaggregated` and
`all_nodes_aggregated` ask every running node of the cluster (engine/admin/metrics_cluster.py),
so with `node.workers` it does not matter which worker answers the scrape.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine import __version__
from engine.admin.cluster_calls import cluster_of
from engine.admin.common import bad_request
from engine.admin.metrics_cluster import MODES, OP, dump, gather, render_cluster
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

    def registry() -> CollectorRegistry:
        found = state.get("registry")
        if found is None:
            found = state["registry"] = node_registry(node, lag_monitor, __version__)
        return found

    async def stats(request: Request) -> Response:
        mode = request.query_params.get("mode", "node")
        if mode not in MODES:
            raise bad_request(f"mode: expected one of {', '.join(MODES)}, not {mode[:40]!r}")
        if mode == "node":
            return Response(render(registry()), media_type=CONTENT_TYPE)
        cluster = cluster_of(node)
        found, missing = await gather(cluster, node.settings.node.name, dump(registry()))
        timeout = float(node.settings.cluster.request_timeout)
        return Response(render_cluster(mode, found, missing, timeout), media_type=CONTENT_TYPE)

    async def serve_stats(args: dict[str, Any]) -> Any:
        return dump(registry())

    cluster = cluster_of(node)
    if cluster is not None:
        cluster.serve(OP, serve_stats)  # another node's scrape with mode=all_nodes_*

    return [Route("/api/v5/prometheus/stats", stats, methods=["GET"])]
