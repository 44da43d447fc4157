"""The OCPP gateway's listeners on EMQX's paths: `GET|POST /gateways/ocpp/listeners`,
`GET|PUT|DELETE /gateways/ocpp/listeners/{id}` (id `ocpp:ws:NAME` or `ocpp:wss:NAME`).

A change is written to the admin API's overlay, checked by the same loader as the conf file and
applied like `PUT /configs`: the other listeners and their charge points are not touched. A body
replaces the listener (EMQX's meaning: what it leaves out takes its default, even where the conf
file set it). POST answers 201 with the listener, PUT 200, DELETE 204.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.admin.common import bad_request, json_body, json_response
from engine.admin.config_api import Refused, change_overlay
from engine.admin.gateway_conf import (
    LISTENER_INFO,
    LISTENER_KINDS,
    check_new_name,
    dig,
    file_tree,
    keep_default_listeners,
    listener_doc,
    listener_docs,
    listener_id,
    listener_not_found,
    listener_settings,
    object_body,
    parse_listener_id,
    place,
    plain_settings,
    replacing,
    unmasked,
)
from engine.admin.nodeview import NodeView
from engine.reload import ReloadReport

log = logging.getLogger("ocppgw.admin")

PREFIX = "/api/v5/gateways/ocpp"


def refused_change(exc: Refused) -> Response:
    """A change the loader refused, as EMQX's gateway API answers one: 400 BAD_REQUEST."""
    return json_response({"code": "BAD_REQUEST", "message": "; ".join(exc.errors), "errors": exc.errors}, 400)


def listener_entry(node: NodeView, kind: str, name: str, body: dict[str, Any], written: dict[str, Any]) -> dict[str, Any]:
    """A listener body as the overlay entry that replaces the listener `kind`/`name`."""
    settings = {k: v for k, v in body.items() if k not in LISTENER_INFO}
    current = listener_settings(node, kind, name)
    if current is not None:
        settings = unmasked(settings, plain_settings(current))
        # GET shows the gateway's value where the listener sets none: sent back, it stays unset
        ocpp = node.settings.gateway.ocpp
        for key, inherited in (("mountpoint", ocpp.mountpoint), ("message_format_checking", ocpp.message_format_checking)):
            if getattr(current, key) is None and settings.get(key) == inherited:
                del settings[key]
    return replacing(dig(written, "gateway", "ocpp", "listeners", kind, name), settings)


def not_started(node: NodeView, kind: str, name: str, report: ReloadReport) -> str | None:
    """Why the reload could not start this listener (a bind in use, a TLS file missing), if it could not."""
    full = listener_id(kind, name)
    for line in report.changed:
        if line.startswith(f"listener {full} not started") or line.startswith(f"listener {full} stopped"):
            return line
    return None


class ListenersApi:
    def __init__(self, node: NodeView) -> None:
        self.node = node

    def _found(self, text: str) -> tuple[str, str]:
        kind, name = parse_listener_id(text)
        if listener_settings(self.node, kind, name) is None:
            raise listener_not_found(text)
        return kind, name

    def _answer(self, kind: str, name: str, report: ReloadReport, status: int) -> Response:
        settings = listener_settings(self.node, kind, name)
        assert settings is not None
        doc = listener_doc(self.node, kind, name, settings)
        problem = not_started(self.node, kind, name, report)
        if problem:  # kept in the config (as EMQX keeps it) but not serving: say so
            log.warning("admin API: %s", problem)
            doc["running_error"] = problem
        return json_response(doc, status)

    async def list(self, request: Request) -> Response:
        return json_response(listener_docs(self.node))

    async def get(self, request: Request) -> Response:
        text = request.path_params["listener_id"]
        kind, name = self._found(text)
        settings = listener_settings(self.node, kind, name)
        assert settings is not None
        return json_response(listener_doc(self.node, kind, name, settings))

    async def create(self, request: Request) -> Response:
        body = object_body(await json_body(request))
        for key in ("type", "name", "bind"):
            if key not in body:
                raise bad_request(f"{key}: required")
        kind = body["type"]
        if kind not in LISTENER_KINDS:
            raise bad_request(f"type: expected one of {', '.join(LISTENER_KINDS)}")
        name = check_new_name(body["name"])
        if "id" in body and body["id"] != listener_id(kind, name):
            raise bad_request(f"id: {str(body['id'])[:80]!r} does not match type and name ({listener_id(kind, name)})")

        def absent() -> None:
            if listener_settings(self.node, kind, name) is not None:
                raise bad_request(f"the listener {listener_id(kind, name)} of ocpp already exists")

        return await self._write(kind, name, body, absent, 201)

    async def update(self, request: Request) -> Response:
        text = request.path_params["listener_id"]
        kind, name = parse_listener_id(text)
        body = object_body(await json_body(request))
        for key, expected in (("type", kind), ("name", name), ("id", listener_id(kind, name))):
            if key in body and body[key] != expected:
                raise bad_request(f"{key}: {str(body[key])[:80]!r} does not match the listener {text!r} "
                                  "(a listener is renamed by adding the new one and deleting the old)")

        return await self._write(kind, name, body, lambda: self._found(text), 200)

    async def _write(self, kind: str, name: str, body: dict[str, Any], check: Callable[[], object],
                     status: int) -> Response:
        """Create or replace one listener in the overlay (after `check`, run once the change before
        has been kept) and answer with it as it now runs."""
        def edit(overlay: dict[str, Any]) -> None:
            check()
            written = file_tree(self.node)
            keep_default_listeners(overlay, written, kind)
            place(overlay, ("gateway", "ocpp", "listeners", kind, name), listener_entry(self.node, kind, name, body, written))

        try:
            report = await change_overlay(self.node, edit)
        except Refused as exc:
            return refused_change(exc)
        return self._answer(kind, name, report, status)

    async def delete(self, request: Request) -> Response:
        text = request.path_params["listener_id"]

        def edit(overlay: dict[str, Any]) -> None:
            kind, name = self._found(text)
            keep_default_listeners(overlay, file_tree(self.node), kind)
            place(overlay, ("gateway", "ocpp", "listeners", kind, name), None)  # null: removed

        try:
            await change_overlay(self.node, edit)
        except Refused as exc:
            return refused_change(exc)
        return Response(status_code=204)


def routes(node: NodeView) -> list[Route]:
    api = ListenersApi(node)
    one = f"{PREFIX}/listeners/{{listener_id}}"
    return [
        Route(f"{PREFIX}/listeners", api.list, methods=["GET"]),
        Route(f"{PREFIX}/listeners", api.create, methods=["POST"]),
        Route(one, api.get, methods=["GET"]),
        Route(one, api.update, methods=["PUT"]),
        Route(one, api.delete, methods=["DELETE"]),
    ]

