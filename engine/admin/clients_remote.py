"""What other nodes' admin APIs ask of this node's charge points (with `cluster.enable`): the
list, where a charge point is, its details, a kick, a CALL. Each handler checks what it is
sent as hostile input and answers as the local endpoint would (an ApiError travels back as
the same status, code and message)."""

from __future__ import annotations

from typing import Any

from engine.admin.common import bad_request
from engine.admin.gateway_api import MAX_CALL_TIMEOUT, GatewayApi
from engine.admin.nodeview import ClusterView, NodeView


def _text(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or len(value) > 1024:
        raise bad_request(f"{name}: expected a string")
    return value


def serve_clients(node: NodeView, cluster: ClusterView) -> None:
    """What other nodes ask of this one's charge points (engine/admin/nodes_api.py: serve_cluster)."""
    api = GatewayApi(node)

    async def clients(args: dict[str, Any]) -> dict[str, Any]:
        query, first = args.get("query"), args.get("first")
        if (not isinstance(query, list) or not all(isinstance(i, list) and len(i) == 2 and all(isinstance(x, str) for x in i) for i in query)
                or not isinstance(first, int) or first < 1):
            raise bad_request("clients: expected query pairs and first")
        rows, count = api.matching_rows(query, first)
        return {"data": rows, "count": count}

    async def locate(args: dict[str, Any]) -> bool:
        return api._held_here(_text(args, "clientid"))

    async def client(args: dict[str, Any]) -> dict[str, Any]:
        return api._client_info(api._session(_text(args, "clientid")))

    async def kick(args: dict[str, Any]) -> None:
        api._session(_text(args, "clientid")).close("kicked", 1000)

    async def call(args: dict[str, Any]) -> Any:
        payload, timeout = args.get("payload"), args.get("timeout")
        if not isinstance(payload, dict) or not (timeout is None or (
                isinstance(timeout, (int, float)) and 0 < timeout <= MAX_CALL_TIMEOUT)):
            raise bad_request("call: expected a payload object and a timeout in seconds")
        return await api.call_here(_text(args, "clientid"), _text(args, "action"), payload,
                                   None if timeout is None else float(timeout))

    for op, handler in (("clients", clients), ("locate", locate), ("client", client), ("kick", kick), ("call", call)):
        cluster.serve(op, handler)
