"""`GET /api/v5/nodes`, `/nodes/{node}` and `/stats` (EMQX's paths and fields), cluster-wide.

The admin API asks the cluster room (`node.cluster`, engine/cluster/), never another node
directly; with no cluster (or no other node running) it answers from this node alone. A node
that does not answer within `cluster.request_timeout` is listed `stopped` by /nodes and named
in `unavailable_nodes` by /stats.
"""

from __future__ import annotations

import resource
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine import __version__
from engine.admin.common import ApiError, bad_request, json_response
from engine.admin.nodeview import NodeView
from engine.admin.cluster_calls import ask_each, cluster_of

def _connections(node: NodeView) -> int:
    ctx = node.ocpp
    return len(ctx.sessions) if ctx is not None else 0


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def local_info(node: NodeView) -> dict[str, Any]:
    started = getattr(node, "started_at", 0.0) or time.time()
    connections = _connections(node)
    return {
        "node": node.settings.node.name, "node_status": "running", "role": "core", "version": __version__,
        "uptime": int((time.time() - started) * 1000), "connections": connections,
        "live_connections": connections, "max_fds": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "memory_used": _rss(), "otp_release": None,
    }


def local_stats(node: NodeView) -> dict[str, Any]:
    n = _connections(node)
    return {"node": node.settings.node.name, "connections.count": n, "live_connections.count": n,
            "sessions.count": n, "channels.count": n}


class NodesApi:
    def __init__(self, node: NodeView) -> None:
        self.node = node

    async def _everyone(self, op: str, local: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        cluster = cluster_of(self.node)
        answers = {self.node.settings.node.name: local}
        if cluster is None:
            return answers, []
        found, silent = await ask_each(cluster, cluster.peers(), op, {})
        answers.update(found)
        return answers, silent

    async def nodes(self, request: Request) -> Response:
        return json_response(await self._all_nodes())

    async def _all_nodes(self) -> list[dict[str, Any]]:
        answers, _ = await self._everyone("node", local_info(self.node))
        cluster = cluster_of(self.node)
        known = cluster.nodes() if cluster is not None else {}
        listed = []
        for name in sorted(set(known) | set(answers)):
            if name in answers:
                listed.append(answers[name])
            else:  # stopped, or did not answer in time
                record = known[name]
                listed.append({"node": name, "node_status": "stopped", "role": "core",
                               "version": record.get("version"), "uptime": 0, "connections": 0,
                               "live_connections": 0, "otp_release": None})
        return listed

    async def one_node(self, request: Request) -> Response:
        name = request.path_params["node"]
        for info in await self._all_nodes():
            if info["node"] == name:
                return json_response(info)
        raise ApiError(404, "NOT_FOUND", f"node {name[:100]!r} not found")

    async def stats(self, request: Request) -> Response:
        aggregate = request.query_params.get("aggregate", "false")
        if aggregate not in ("true", "false"):
            raise bad_request("aggregate: expected true or false")
        answers, silent = await self._everyone("stats", local_stats(self.node))
        if aggregate == "false":
            return json_response([answers[n] for n in sorted(answers)])
        total: dict[str, Any] = {}
        for stats in answers.values():
            for key, value in stats.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    total[key] = total.get(key, 0) + value
        if silent:
            total["unavailable_nodes"] = silent
        return json_response(total)


def serve_cluster(node: NodeView) -> None:
    """Answer the requests other nodes' admin APIs send here (before the node joins the cluster)."""
    from engine.admin.clients_remote import serve_clients

    cluster = cluster_of(node)
    if cluster is None:
        return

    async def info(args: dict[str, Any]) -> dict[str, Any]:
        return local_info(node)

    async def stats(args: dict[str, Any]) -> dict[str, Any]:
        return local_stats(node)

    cluster.serve("node", info)
    cluster.serve("stats", stats)
    serve_clients(node, cluster)


def routes(node: NodeView) -> list[Route]:
    api = NodesApi(node)
    return [
        Route("/api/v5/nodes", api.nodes, methods=["GET"]),
        Route("/api/v5/nodes/{node}", api.one_node, methods=["GET"]),
        Route("/api/v5/stats", api.stats, methods=["GET"]),
    ]
