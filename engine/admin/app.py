"""The admin API application: routes from each endpoint module, HTTP Basic on everything."""

from __future__ import annotations

import logging
import math

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine import __version__
from engine.admin import trace_api
from engine.admin import authn_api, config_api, emqx_gateway, gateway_api, listeners_api, metrics_api, rules_api
from engine.admin import monitor_api, schemas_api
from engine.admin.common import (
    ApiError,
    basic_credentials,
    error_response,
    json_response,
)
from engine.admin.credentials import HashingBusy
from engine.admin.lockout import LoginGuard
from engine.admin.nodeview import NodeView
from engine.config.types import Size

log = logging.getLogger("ocppgw.admin")
SCRAPE_PATH = "/api/v5/prometheus/stats"


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
    """Every request needs the dashboard user or an API key; nothing else is served without (the
    one exception: the Prometheus scrape when prometheus.enable_basic_auth = false). A source
    address locked out by failed logins is answered 429 first; a body above
    dashboard.max_request_body is refused with 413 before it is read (Content-Length) or as soon
    as it grows past the limit (counted while it streams in)."""

    def __init__(self, app: ASGIApp, node: NodeView) -> None:
        self.app = app
        self.node = node
        self.guard = LoginGuard()
        node.admin_stats = self.guard.stats  # the metrics collector reads it from the node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._open_scrape(scope):  # prometheus.enable_basic_auth = false: the scrape needs no login
            await self.app(scope, receive, send)
            return
        refusal = await self._refusal(scope)
        if refusal is not None:
            await error_response(refusal)(scope, receive, send)
            return
        await self.app(scope, self._limited(scope, receive), send)

    def _open_scrape(self, scope: Scope) -> bool:
        return (scope.get("path") == SCRAPE_PATH and scope.get("method") in ("GET", "HEAD")
                and not self.node.settings.prometheus.enable_basic_auth)

    async def _refusal(self, scope: Scope) -> ApiError | None:
        d = self.node.settings.dashboard
        stats = self.guard.stats
        client = scope.get("client")
        source = client[0] if client else "unknown"
        locked = self.guard.locked_for(source)
        if locked:
            stats.refuse("login_locked")
            return ApiError(429, "LOGIN_LOCKED", f"too many failed logins from {source}: locked out for "
                            f"another {math.ceil(locked)} s (dashboard.unsuccessful_login_lock_duration)",
                            headers={"retry-after": str(math.ceil(locked))})
        request = Request(scope)
        creds = basic_credentials(request)
        if creds is None:
            return ApiError(401, "BAD_USERNAME_OR_PWD", "authentication required")
        credentials = self.node.admin_credentials
        assert credentials is not None  # set before the app is made
        try:
            ok = await credentials.verify(*creds)
        except HashingBusy:
            stats.refuse("hashing_busy")
            return ApiError(429, "TOO_MANY_REQUESTS", "too many logins are being checked: try again shortly",
                            headers={"retry-after": "1"})
        if not ok:
            self.guard.failed(source, d)
            return ApiError(401, "BAD_USERNAME_OR_PWD", "bad username or password")
        self.guard.succeeded(source)
        length = request.headers.get("content-length")
        limit = d.max_request_body
        if length is not None:
            if not length.strip().isdigit():
                return ApiError(400, "BAD_REQUEST", "Content-Length is not a number")
            if int(length) > limit:
                stats.refuse("body_too_large")
                return _too_large(limit)
        return None

    def _limited(self, scope: Scope, receive: Receive) -> Receive:
        limit = self.node.settings.dashboard.max_request_body
        stats = self.guard.stats
        seen = 0

        async def receive_limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    stats.refuse("body_too_large")
                    raise _too_large(limit)
            return message

        return receive_limited


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "PAYLOAD_TOO_LARGE", f"the request body is larger than {Size(limit)} "
                    "(dashboard.max_request_body)")


def create_app(node: NodeView) -> ASGIApp:
    async def status(request: Request) -> Response:
        return json_response({"node": node.settings.node.name, "status": "running", "version": __version__})

    routes = [Route("/api/v5/status", status)]
    for module in (emqx_gateway, listeners_api, authn_api, gateway_api, rules_api, config_api, metrics_api):
        routes.extend(module.routes(node))
    for module in (monitor_api, schemas_api):  # the dashboard's data (issue 16)
        routes.extend(module.routes(node))
    routes.extend(trace_api.routes(node))  # the trace API and the live frame stream
    app = Starlette(routes=routes, exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _unexpected})
    return _Authenticated(app, node)
