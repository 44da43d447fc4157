"""The gateway itself on EMQX's paths: `GET /gateways` (`?status=`), `GET|PUT /gateways/ocpp`,
`PUT /gateways/ocpp/enable/{true|false}`.

This node has one gateway, OCPP, always loaded: `POST /gateways` (load) and `DELETE /gateways/ocpp`
(unload) are refused with 405 and say what to do instead. `PUT /gateways/ocpp` does what EMQX's
does when it loads the gateway: the gateway's keys are replaced one by one (EMQX's top-level merge),
and the `listeners` and `authentication` in the body are applied too (each listener in the list
replaces the one of its type and name, or is added; listeners not in the list stay). A change that
only a restart applies (`enable`) is kept and answered 200 with `needs_restart`; otherwise 204.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.admin.authn_api import authn_entry
from engine.admin.common import ApiError, bad_request, json_body, json_response
from engine.admin.config_api import Refused, change_overlay
from engine.admin.gateway_api import rfc3339
from engine.admin.gateway_conf import (
    GATEWAY,
    GATEWAY_INFO,
    LISTENER_KINDS,
    check_new_name,
    dig,
    file_tree,
    keep_default_listeners,
    listener_docs,
    listener_id,
    object_body,
    place,
    public,
    replacing,
)
from engine.admin.listeners_api import listener_entry, refused_change
from engine.admin.nodeview import NodeView
from engine.reload import ReloadReport

STATUSES = ("running", "stopped", "unloaded")


def applied(report: ReloadReport) -> Response:
    """EMQX's 204, unless part of the change waits for a restart: then 200 saying which part."""
    if report.needs_restart:
        return json_response({"status": "reloaded", **report.as_dict(),
                              "message": "kept; applies on the next start: " + ", ".join(report.needs_restart)})
    return Response(status_code=204)


class EmqxGatewayApi:
    def __init__(self, node: NodeView) -> None:
        self.node = node
        # The admin API is built as the node starts, right after the OCPP listeners.
        self.started_at = int(time.time() * 1000)

    def _status(self) -> str:
        return "running" if self.node.ocpp is not None and self.node.settings.gateway.ocpp.enable else "stopped"

    def _overview(self) -> dict[str, Any]:
        listeners = listener_docs(self.node)
        current = sum(1 for s in (self.node.ocpp.sessions.values() if self.node.ocpp is not None else ())
                      if not s.closed)
        status = self._status()
        maximum = sum(li["max_connections"] for li in listeners if li["enable"])
        return {
            "name": GATEWAY,
            "status": status,
            "created_at": rfc3339(self.started_at),
            "started_at": rfc3339(self.started_at) if status == "running" else None,
            "current_connections": current,
            "max_connections": maximum,
            "listeners": listeners,
            "node_status": [{"node": self.node.settings.node.name, "status": status,
                             "max_connections": maximum, "current_connections": current}],
        }

    async def gateways(self, request: Request) -> Response:
        wanted = request.query_params.get("status", "all")
        if wanted != "all" and wanted not in STATUSES:
            raise bad_request(f"unknown gateway status in query: {wanted[:40]!r}; values allowed: "
                              + ", ".join(STATUSES))
        overview = self._overview()
        overview["listeners"] = [{k: li[k] for k in ("id", "type", "name", "running")} for li in overview["listeners"]]
        return json_response([overview] if wanted in ("all", overview["status"]) else [])

    async def gateway(self, request: Request) -> Response:
        ocpp = self.node.settings.gateway.ocpp
        overview = self._overview()
        body: dict[str, Any] = {k: overview[k] for k in ("name", "status", "created_at", "started_at")}
        body["enable"] = ocpp.enable
        body["current_connections"] = overview["current_connections"]
        body["max_connections"] = overview["max_connections"]
        settings = public(ocpp)
        settings.pop("listeners", None)
        settings.pop("enable", None)
        body.update(settings)
        body["listeners"] = overview["listeners"]
        return json_response(body)

    async def update(self, request: Request) -> Response:
        body = object_body(await json_body(request))
        if "name" in body and body["name"] != GATEWAY:
            raise bad_request(f"name: this node has the {GATEWAY} gateway only, not {str(body['name'])[:40]!r}")
        listeners = body.get("listeners", [])
        if not isinstance(listeners, list):
            raise bad_request("listeners: expected a list of listeners, each with type and name")
        named: list[tuple[str, str, dict[str, Any]]] = []
        for i, item in enumerate(listeners):
            item = object_body(item, f"listeners[{i}]")
            kind = item.get("type")
            if kind not in LISTENER_KINDS:
                raise bad_request(f"listeners[{i}].type: expected one of {', '.join(LISTENER_KINDS)}")
            try:
                name = check_new_name(item.get("name"))
            except ApiError as exc:
                raise bad_request(f"listeners[{i}].{exc.message}") from None
            if any((kind, name) == (k, n) for k, n, _ in named):
                raise bad_request(f"listeners[{i}]: {listener_id(kind, name)} is in the list twice")
            named.append((kind, name, item))
        authentication = body.get("authentication")
        keys = {k: v for k, v in body.items() if k not in GATEWAY_INFO and k not in ("listeners", "authentication")}

        def edit(overlay: dict[str, Any]) -> None:
            written = file_tree(self.node)
            for key, value in keys.items():
                if isinstance(value, dict):
                    value = replacing(dig(written, "gateway", "ocpp", key), value)
                place(overlay, ("gateway", "ocpp", key), value)
            for kind, name, item in named:
                keep_default_listeners(overlay, written, kind)
                place(overlay, ("gateway", "ocpp", "listeners", kind, name),
                      listener_entry(self.node, kind, name, item, written))
            if authentication is not None:
                place(overlay, ("gateway", "ocpp", "authentication"), authn_entry(authentication, written))

        try:
            report = await change_overlay(self.node, edit)
        except Refused as exc:
            return refused_change(exc)
        return applied(report)

    async def enable(self, request: Request) -> Response:
        text = request.path_params["enable"]
        if text not in ("true", "false"):
            raise bad_request(f"enable: expected true or false, not {text[:40]!r}")

        def edit(overlay: dict[str, Any]) -> None:
            place(overlay, ("gateway", "ocpp", "enable"), text == "true")

        try:
            report = await change_overlay(self.node, edit)
        except Refused as exc:
            return refused_change(exc)
        return applied(report)

    async def load(self, request: Request) -> Response:
        raise ApiError(405, "METHOD_NOT_ALLOWED", "the ocpp gateway is always loaded on this node (the only "
                       "gateway it has): change it with PUT /api/v5/gateways/ocpp")

    async def unload(self, request: Request) -> Response:
        raise ApiError(405, "METHOD_NOT_ALLOWED", "the ocpp gateway cannot be unloaded on this node: "
                       "PUT /api/v5/gateways/ocpp/enable/false turns it off (on the next start)")


def routes(node: NodeView) -> list[Route]:
    api = EmqxGatewayApi(node)
    prefix = f"/api/v5/gateways/{GATEWAY}"
    return [
        Route("/api/v5/gateways", api.gateways, methods=["GET"]),
        Route("/api/v5/gateways", api.load, methods=["POST"]),
        Route(prefix, api.gateway, methods=["GET"]),
        Route(prefix, api.update, methods=["PUT"]),
        Route(prefix, api.unload, methods=["DELETE"]),
        Route(f"{prefix}/enable/{{enable}}", api.enable, methods=["PUT"]),
    ]
