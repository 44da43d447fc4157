"""The admin API application: routes from each endpoint module, HTTP Basic on everything."""

from __future__ import annotations

import logging
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine import __version__
from engine.admin import config_api, gateway_api, metrics_api, rules_api
from engine.admin.common import (
    ApiError,
    basic_credentials,
    error_response,
    json_response,
)

log = logging.getLogger("ocppgw.admin")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "BAD_REQUEST")
    return error_response(ApiError(exc.status_code, code, str(exc.detail)))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("admin API %s %s failed", request.method, request.url.path)
    return error_response(ApiError(500, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}"))


class _Authenticated:
    """Every request needs the dashboard user or an API key; nothing is served without."""

    def __init__(self, app: Any, node: Any) -> None:
        self.app = app
        self.node = node

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        creds = basic_credentials(request)
        if creds is None or not self.node.admin_credentials.check(*creds):
            message = "authentication required" if creds is None else "bad username or password"
            await error_response(ApiError(401, "BAD_USERNAME_OR_PWD", message))(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(node: Any) -> Any:
    async def status(request: Request) -> Response:
        return json_response({"node": node.settings.node.name, "status": "running", "version": __version__})

    routes = [Route("/api/v5/status", status)]
    for module in (gateway_api, rules_api, config_api, metrics_api):
        routes.extend(module.routes(node))
    app = Starlette(routes=routes, exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _unexpected})
    return _Authenticated(app, node)
