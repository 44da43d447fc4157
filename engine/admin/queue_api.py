"""What waits for a charge point, cluster-wide: `GET` and `DELETE
/api/v5/gateways/ocpp/clients/{clientid}/queue`.

GET lists, from every running node (this one and those that answer), the CALLs in flight and
queued in the charge point's session and those in an offline queue (engine/ocpp/offline.py), each
with its `node` and `state` (`inflight`, `queued`, `offline`), in the order they go out. A charge
point connected nowhere with nothing queued anywhere is 404, as EMQX's client endpoints answer an
unknown client id; a connected one with nothing waiting is 200 with no data. DELETE drops all of
it but a CALL in flight (each `$events/message_dropped`, reason `deleted`, counted) and answers
204 (404 as GET).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.admin.cluster_calls import ask_each, cluster_of
from engine.admin.common import ApiError, bad_request, json_response
from engine.admin.gateway_api import PREFIX
from engine.admin.nodeview import NodeView
from engine.ocpp.offline import MAX_CID, delete_here, waiting_here


def _not_found(cid: str) -> ApiError:
    return ApiError(404, "RESOURCE_NOT_FOUND", f"client {cid!r} not found (not connected, nothing queued)")


class QueueApi:
    def __init__(self, node: NodeView) -> None:
        self.node = node

    def _offline(self) -> Any:
        offline = getattr(self.node, "offline", None)
        return offline.queue if offline is not None else None

    def _cid(self, request: Request) -> str:
        cid = str(request.path_params["clientid"])
        if not 0 < len(cid) <= MAX_CID:
            raise bad_request(f"clientid: at most {MAX_CID} characters")
        return cid

    async def _everywhere(self, op: str, cid: str) -> tuple[dict[str, Any], list[str]]:
        cluster = cluster_of(self.node)
        peers = cluster.peers() if cluster is not None else []
        if cluster is None or not peers:
            return {}, []
        return await ask_each(cluster, peers, op, {"clientid": cid})

    async def show(self, request: Request) -> Response:
        cid = self._cid(request)
        ctx = self.node.ocpp
        if ctx is None:
            raise _not_found(cid)
        here = waiting_here(ctx, self._offline(), cid)
        answers, silent = await self._everywhere("offline_view", cid)
        views = [here, *(v for v in answers.values() if isinstance(v, dict))]
        data = [row for view in views for row in view.get("data", [])]
        connected = any(view.get("connected") for view in views)
        if not data and not connected:
            raise _not_found(cid)
        order = {"inflight": 0, "queued": 1, "offline": 2}
        data.sort(key=lambda row: (order.get(row.get("state"), 3), row.get("publish_at") or 0))
        return json_response({"data": data, "meta": {"count": len(data), "connected": connected,
                                                     "silent_nodes": silent}})

    async def delete(self, request: Request) -> Response:
        cid = self._cid(request)
        ctx = self.node.ocpp
        if ctx is None:
            raise _not_found(cid)
        connected = ctx.sessions.get(cid) is not None
        count = delete_here(ctx, self._offline(), cid)
        answers, _ = await self._everywhere("offline_delete", cid)
        count += sum(n for n in answers.values() if isinstance(n, int))
        if not count and not connected:
            located, _ = await self._everywhere("locate", cid)
            if not any(located.values()):
                raise _not_found(cid)
        return Response(status_code=204)


def routes(node: NodeView) -> list[Route]:
    api = QueueApi(node)
    return [
        Route(f"{PREFIX}/clients/{{clientid}}/queue", api.show, methods=["GET"]),
        Route(f"{PREFIX}/clients/{{clientid}}/queue", api.delete, methods=["DELETE"]),
    ]
