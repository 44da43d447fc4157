"""The admin API application: routes from each endpoint module, HTTP Basic or a dashboard session on
everything, and the dashboard's page at `/`."""

from __future__ import annotations

import logging
import math

import orjson

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine import __version__
from engine.admin import (
    authn_api,
    config_api,
    config_check,
    emqx_gateway,
    gateway_api,
    listeners_api,
    metrics_api,
    monitor_api,
    nodes_api,
    queue_api,
    rules_api,
    schemas_api,
    trace_api,
)
from engine.admin.common import (
    ApiError,
    basic_credentials,
    error_response,
    json_response,
)
from engine.admin.credentials import HashingBusy
from engine.admin.dashboard_files import dashboard_response, is_dashboard_path
from engine.admin.lockout import LoginGuard
from engine.admin.session_auth import (
    SessionStore,
    clear_cookie_header,
    cookie_header,
    csrf_refusal,
    session_token,
)
from engine.admin.nodeview import NodeView
from engine.config.types import Size

log = logging.getLogger("ocppgw.admin")
SCRAPE_PATH = "/api/v5/prometheus/stats"
LOGIN_PATH = "/api/v5/login"  # EMQX's
LOGOUT_PATH = "/api/v5/logout"
SESSION_PATH = "/api/v5/session"  # who is logged in (200 either way: the page asks before it shows the login)


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
    """Every request needs the dashboard user or an API key, given as HTTP Basic or as a session
    opened by `POST /api/v5/login` (engine/admin/session_auth.py); nothing else is served without
    (the exceptions: the dashboard's own files, and the Prometheus scrape when
    prometheus.enable_basic_auth = false). A source
    address locked out by failed logins is answered 429 first; a body above
    dashboard.max_request_body is refused with 413 before it is read (Content-Length) or as soon
    as it grows past the limit (counted while it streams in)."""

    def __init__(self, app: ASGIApp, node: NodeView) -> None:
        self.app = app
        self.node = node
        self.guard = LoginGuard()
        self.sessions = SessionStore()
        node.admin_stats = self.guard.stats  # the metrics collector reads it from the node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "")
        if is_dashboard_path(path):
            await dashboard_response(path, method)(scope, receive, send)
            return
        if self._open_scrape(scope):  # prometheus.enable_basic_auth = false: the scrape needs no login
            await self.app(scope, receive, send)
            return
        if method == "POST" and path == LOGIN_PATH:
            await (await self._login(scope, receive))(scope, receive, send)
            return
        if method == "GET" and path == SESSION_PATH:
            await self._whoami(scope)(scope, receive, send)
            return
        refusal = await self._refusal(scope)
        if refusal is not None:
            await error_response(refusal)(scope, receive, send)
            return
        if method == "POST" and path == LOGOUT_PATH:
            await self._logout(scope)(scope, receive, send)
            return
        await self.app(scope, self._limited(scope, receive), send)

    # --- dashboard sessions ----------------------------------------------------------------

    def _locked(self, source: str) -> ApiError | None:
        locked = self.guard.locked_for(source)
        if not locked:
            return None
        self.guard.stats.refuse("login_locked")
        return ApiError(429, "LOGIN_LOCKED", f"too many failed logins from {source}: locked out for "
                        f"another {math.ceil(locked)} s (dashboard.unsuccessful_login_lock_duration)",
                        headers={"retry-after": str(math.ceil(locked))})

    async def _login(self, scope: Scope, receive: Receive) -> Response:
        """`POST /api/v5/login` {username, password}: the token (EMQX's answer), also as the cookie.
        Refused as any request: locked out (429), busy hashing (429), bad credentials (401, counted
        towards the lockout)."""
        source = _source(scope)
        try:
            locked = self._locked(source)
            if locked is not None:
                raise locked
            raw = b""
            limited = self._limited(scope, receive)
            while True:
                message = await limited()
                raw += message.get("body", b"")
                if not message.get("more_body"):
                    break
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise ApiError(400, "BAD_REQUEST", "the body must be JSON: {\"username\": ..., \"password\": ...}") from None
            if not isinstance(body, dict) or not isinstance(body.get("username"), str) \
                    or not isinstance(body.get("password"), str):
                raise ApiError(400, "BAD_REQUEST", "username and password: strings required")
            user, password = body["username"], body["password"]
            credentials = self.node.admin_credentials
            assert credentials is not None  # set before the app is made
            try:
                ok = await credentials.verify(user, password)
            except HashingBusy:
                self.guard.stats.refuse("hashing_busy")
                raise ApiError(429, "TOO_MANY_REQUESTS", "too many logins are being checked: try again shortly",
                               headers={"retry-after": "1"}) from None
            if not ok:
                self.guard.failed(source, self.node.settings.dashboard)
                raise ApiError(401, "BAD_USERNAME_OR_PWD", "bad username or password")
        except ApiError as exc:
            response = error_response(exc)
            if "www-authenticate" in response.headers:  # no browser login box over the page's own
                del response.headers["www-authenticate"]
            return response
        self.guard.succeeded(source)
        token = self.sessions.open(user, credentials)
        response = json_response({"token": token, "username": user, "version": __version__})
        response.headers["set-cookie"] = cookie_header(token, scope.get("scheme") == "https")
        log.info("admin API: %s logged in to the dashboard from %s", user, source)
        return response

    def _session_user(self, request: Request) -> tuple[str, str, bool] | None:
        """(user, token, by cookie?) of a live session of this request."""
        found = session_token(request)
        if found is None:
            return None
        credentials = self.node.admin_credentials
        assert credentials is not None
        user = self.sessions.user(found[0], credentials, float(self.node.settings.dashboard.token_expired_time))
        return None if user is None else (user, *found)

    def _whoami(self, scope: Scope) -> Response:
        session = self._session_user(Request(scope))
        return json_response({"username": session[0] if session else None})

    def _logout(self, scope: Scope) -> Response:
        found = session_token(Request(scope))
        if found is not None:
            self.sessions.close(found[0])
        response = Response(status_code=204)
        response.headers["set-cookie"] = clear_cookie_header(scope.get("scheme") == "https")
        return response

    def _open_scrape(self, scope: Scope) -> bool:
        return (scope.get("path") == SCRAPE_PATH and scope.get("method") in ("GET", "HEAD")
                and not self.node.settings.prometheus.enable_basic_auth)

    async def _refusal(self, scope: Scope) -> ApiError | None:
        d = self.node.settings.dashboard
        stats = self.guard.stats
        source = _source(scope)
        locked = self._locked(source)
        if locked is not None:
            return locked
        request = Request(scope)
        creds = basic_credentials(request)
        if creds is None:
            return self._session_refusal(request) or self._body_refusal(request)
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
        return self._body_refusal(request)

    def _session_refusal(self, request: Request) -> ApiError | None:
        if session_token(request) is None:
            return ApiError(401, "BAD_USERNAME_OR_PWD", "authentication required")
        session = self._session_user(request)
        if session is None:
            self.guard.stats.refuse("session_expired")
            return ApiError(401, "TOKEN_TIME_OUT", "the session has expired or was ended: log in again")
        if session[2]:  # the cookie, which the browser sends by itself: a forged request must not pass
            why = csrf_refusal(request)
            if why is not None:
                self.guard.stats.refuse("csrf")
                return ApiError(403, "FORBIDDEN", why)
        return None

    def _body_refusal(self, request: Request) -> ApiError | None:
        d = self.node.settings.dashboard
        stats = self.guard.stats
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


def _source(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "PAYLOAD_TOO_LARGE", f"the request body is larger than {Size(limit)} "
                    "(dashboard.max_request_body)")


def create_app(node: NodeView) -> ASGIApp:
    async def status(request: Request) -> Response:
        return json_response({"node": node.settings.node.name, "status": "running", "version": __version__})

    routes = [Route("/api/v5/status", status)]
    for module in (emqx_gateway, listeners_api, authn_api, gateway_api, rules_api, config_api, config_check, metrics_api):
        routes.extend(module.routes(node))
    for module in (monitor_api, schemas_api):  # the dashboard's data (issue 16)
        routes.extend(module.routes(node))
    routes.extend(trace_api.routes(node))  # the trace API and the live frame stream
    routes.extend(queue_api.routes(node))  # what waits for a charge point (offline queue, issue 18)
    routes.extend(nodes_api.routes(node))  # nodes and stats, cluster-wide (issue 17)
    app = Starlette(routes=routes, exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _unexpected})
    return _Authenticated(app, node)
