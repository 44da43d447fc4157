"""The gateway's authenticator on EMQX's path `/gateways/ocpp/authentication`: GET (200 with it,
204 when there is none, as EMQX), POST (create: 201; 400 if there is one, as EMQX), PUT (replace:
200; 404 if there is none), DELETE (204: charge points then connect without a login).

The authenticator is EMQX's `password_based` + `built_in_database` (body: mechanism, backend,
user_id_type, password_hash_algorithm {...}, enable, and this gateway's own keys). A change is
written to the admin API's overlay and hot-applied like `PUT /configs`; the users
(`.../authentication/users`) are kept across a DELETE and a new POST. After a change, the node
warns about each listener it opened to anybody on the network without a login, as at start.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.admin.common import ApiError, bad_request, json_body, json_response
from engine.admin.config_api import Refused, change_overlay
from engine.admin.gateway_conf import dig, file_tree, object_body, place, public, replacing
from engine.admin.nodeview import NodeView


PATH = "/api/v5/gateways/ocpp/authentication"
KEY = ("gateway", "ocpp", "authentication")
IGNORED = frozenset({"id"})  # shown by EMQX's API for an authenticator, not part of its config


def authn_entry(body: Any, written: dict[str, Any]) -> dict[str, Any]:
    """An authenticator body as the overlay entry that replaces the conf file's."""
    body = object_body(body, "authentication")
    for key in ("mechanism", "backend"):
        if key not in body:
            raise bad_request(f"authentication.{key}: required (password_based / built_in_database)")
    settings = {k: v for k, v in body.items() if k not in IGNORED}
    return replacing(dig(written, *KEY), settings)


class AuthnApi:
    def __init__(self, node: NodeView) -> None:
        self.node = node

    def _exists(self) -> bool:
        return self.node.settings.gateway.ocpp.authentication.enable

    def _doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = public(self.node.settings.gateway.ocpp.authentication)
        return doc

    async def _change(self, edit: Any) -> Response | None:
        try:
            await change_overlay(self.node, edit)
        except Refused as exc:
            return json_response({"code": "BAD_REQUEST", "message": "; ".join(exc.errors), "errors": exc.errors}, 400)
        return None

    async def get(self, request: Request) -> Response:
        if not self._exists():
            return Response(status_code=204)
        return json_response(self._doc())

    async def create(self, request: Request) -> Response:
        body = await json_body(request)
        authn_entry(body, {})  # the body's shape, before waiting for the change lock

        def edit(overlay: dict[str, Any]) -> None:
            if self._exists():
                raise bad_request("the authentication already exists on ocpp (PUT changes it)")
            place(overlay, KEY, authn_entry(body, file_tree(self.node)))

        refusal = await self._change(edit)
        return refusal or json_response(self._doc(), 201)

    async def update(self, request: Request) -> Response:
        body = await json_body(request)
        authn_entry(body, {})

        def edit(overlay: dict[str, Any]) -> None:
            if not self._exists():
                raise ApiError(404, "RESOURCE_NOT_FOUND", "the authentication not found on ocpp (POST creates it)")
            place(overlay, KEY, authn_entry(body, file_tree(self.node)))

        refusal = await self._change(edit)
        return refusal or json_response(self._doc())

    async def delete(self, request: Request) -> Response:
        def edit(overlay: dict[str, Any]) -> None:
            if not self._exists():
                raise ApiError(404, "RESOURCE_NOT_FOUND", "the authentication not found on ocpp")
            place(overlay, KEY, None)  # null: the conf file's block is removed too

        refusal = await self._change(edit)
        return refusal or Response(status_code=204)


def routes(node: NodeView) -> list[Route]:
    api = AuthnApi(node)
    return [
        Route(PATH, api.get, methods=["GET"]),
        Route(PATH, api.create, methods=["POST"]),
        Route(PATH, api.update, methods=["PUT"]),
        Route(PATH, api.delete, methods=["DELETE"]),
    ]
