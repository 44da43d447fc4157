"""The OCPP gateway's admin endpoints, on EMQX's paths: the connected charge points (list,
look up, kick, send a CALL) and the users of the built-in authenticator. The gateway itself,
its listeners and its authenticator are in emqx_gateway.py, listeners_api.py and authn_api.py.

Decisions where EMQX leaves room or has no counterpart:

- Times (`connected_at`, `created_at`, `started_at`) are rendered as EMQX renders
  them, RFC 3339 with milliseconds, here always in UTC (`2024-05-01T10:00:00.123+00:00`).
  The `gte_connected_at`/`lte_connected_at` filters take RFC 3339 or epoch milliseconds.
- The call API's `timeout` is a duration as in the config (`"5s"`, `"500ms"`, `"1m"`) or
  a number of seconds.
- A client that is not connected is a 404 for GET, DELETE and the call endpoint
  (EMQX answers 204 to a DELETE of an unknown client; we say it was not there).
- `POST .../clients/{cid}/call` checks the payload against the request schema when
  downstream checking applies to that charge point (`message_format_checking` of its
  listener or the gateway is `all` or `dnstream_only`, the charge point is not in
  `lenient_clients`): exactly the check a CALL from the broker gets in
  `Session.on_downstream`, which would drop it as a schema violation. Here it is refused
  with a 400 before anything is sent, so the API is no way around the check. An action
  with no schema in the charge point's version is refused the same way.
- With `cluster.enable`, the clients endpoints answer for every node (engine/cluster/): the
  list merges each node's matching charge points sorted by clientid, then pages (a node that
  does not answer in `cluster.request_timeout` is named in `meta.unavailable_nodes`); GET,
  DELETE and call of a charge point on another node are carried to it, 503 naming a node
  that does not answer. With no other node running, nothing goes over the broker.
- 504 means no answer came in time: the API's `timeout`, the gateway's
  `dnstream.awaiting_timeout`, or the charge point disconnected while the CALL waited.
  A CALL still queued when the API's own timeout fires stays in the queue and is sent
  in its turn (the session has no way to withdraw it).
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from starlette.requests import Request
from starlette.responses import Response
from starlette.datastructures import QueryParams
from starlette.routing import Route

from engine.admin import fleet
from engine.admin.common import (
    ApiError,
    bad_request,
    check_fields,
    json_body,
    json_response,
    page_args,
    paged,
)
from engine.admin.cluster_calls import ask_each, cluster_of
from engine.admin.nodeview import NodeView
from engine.admin.users_sync import change_users
from engine.cluster import NodeUnreachable, RemoteError
from engine.auth import KEEP, MAX_USER_ID, AuthStoreError, UserExists, UserNotFound, check_security_profile
from engine.config.types import ConfigValueError, Duration
from engine.ocpp.handshake import connection_profile
from engine.ocpp.schemas import UnknownAction
from engine.ocpp.downstream import InvalidCommand, QueueFull
from engine.ocpp.session import Session

if TYPE_CHECKING:
    from engine.auth import UserStore
    from engine.ocpp.context import GatewayContext

GATEWAY = "ocpp"
PREFIX = f"/api/v5/gateways/{GATEWAY}"
MAX_CALL_TIMEOUT = 86_400.0  # seconds; beyond any sane wait, and timers stay representable


# --- helpers ------------------------------------------------------------------------------


def rfc3339(ms: float) -> str:
    """Epoch milliseconds as RFC 3339 in UTC with milliseconds, as EMQX renders times."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def _parse_time(name: str, text: str) -> float:
    """A query parameter that is a time: epoch milliseconds or RFC 3339; epoch ms back."""
    try:
        return float(int(text))
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise bad_request(f"{name}: expected epoch milliseconds or an RFC 3339 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp() * 1000


def _seconds(name: str, value: float | str | None) -> float | None:
    """A time the API takes: a duration string as in the config ("5s", "500ms", "1m"), or a number
    of seconds (as this API took it before)."""
    if not isinstance(value, str):
        return value
    try:
        return float(Duration.parse(value))
    except ConfigValueError:
        raise bad_request(f'{name}: expected a duration such as "5s", "500ms" or "1m", or a number of '
                          f"seconds, not {value[:40]!r}") from None


def _client_not_found(cid: str) -> ApiError:
    return ApiError(404, "RESOURCE_NOT_FOUND", f"client {cid!r} not found (not connected to this node)")


def _user_not_found(user_id: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"user {user_id!r} not found")


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


# --- the gateway and its listeners ----------------------------------------------------------


class GatewayApi:
    def __init__(self, node: NodeView) -> None:
        self.node = node

    def _sessions(self) -> list[Session]:
        ctx = self.node.ocpp
        if ctx is None:
            return []
        # the registry holds the listener's Sessions; it is typed by the little it needs of them
        return [cast(Session, s) for s in list(ctx.sessions.values()) if not s.closed]

    def _session(self, cid: str) -> Session:
        ctx = self.node.ocpp
        session = ctx.sessions.get(cid) if ctx is not None else None
        if session is None or session.closed:
            raise _client_not_found(cid)
        return cast(Session, session)

    def _context(self) -> GatewayContext:
        """The OCPP context, asked for once a charge point was found connected to it."""
        ctx = self.node.ocpp
        assert ctx is not None
        return ctx

    # --- clients --------------------------------------------------------------------------

    def _client_info(self, session: Session) -> dict[str, Any]:
        info = dict(session.info())
        connected_at = info.get("connected_at")
        info["node"] = self.node.settings.node.name
        info["connected"] = True
        if isinstance(connected_at, (int, float)):
            info["connected_at"] = rfc3339(connected_at)
            info["created_at"] = info["connected_at"]  # a session lives as long as its connection
        if isinstance(info.get("keepalive"), float):
            info["keepalive"] = _number(info["keepalive"])
        info.setdefault("is_bridge", False)
        info.setdefault("clean_start", True)
        info.setdefault("expiry_interval", 0)
        info.setdefault("inflight_max", 1)  # one CALL in flight per charge point
        info["inflight"] = info.get("inflight_cnt", 0)  # the dashboard's names (issue 16)
        info["queued"] = info.get("mqueue_len", 0)
        info.update(fleet.fleet_fields(session))
        ctx = self.node.ocpp
        if ctx is not None:
            info.setdefault("mqueue_max", ctx.settings.dnstream.max_mqueue_len)
        running_listener = self.node.listeners.get(session.listener)
        if running_listener is not None:  # the OCPP security profile of the connection, its client certificate
            app = running_listener.app
            cert = app.certificates.of(session)
            info["security_profile"] = connection_profile(app.settings, cert is not None)
            if cert is not None:
                info["certificate"] = cert.as_dict()
        return info

    async def clients(self, request: Request) -> Response:
        page, limit = page_args(request)
        cluster = cluster_of(self.node)
        peers = cluster.peers() if cluster is not None else []
        if cluster is None or not peers:
            sessions, count = self._matching(request.query_params, page, limit)
            return json_response({
                "data": [self._client_info(s) for s in sessions],
                "meta": {"page": page, "limit": limit, "count": count, "hasnext": page * limit < count},
            })
        query = [list(item) for item in request.query_params.multi_items() if item[0] not in ("page", "limit")]
        rows, count = self.matching_rows(query, page * limit)  # a bad filter is a 400 before anyone is asked
        answers, silent = await ask_each(cluster, peers, "clients", {"query": query, "first": page * limit})
        for answer in answers.values():
            rows.extend(answer["data"])
            count += answer["count"]
        rows.sort(key=lambda row: row["clientid"])
        start = (page - 1) * limit
        meta: dict[str, Any] = {"page": page, "limit": limit, "count": count, "hasnext": page * limit < count}
        if silent:
            meta["unavailable_nodes"] = silent
        return json_response({"data": rows[start : start + limit], "meta": meta})

    def matching_rows(self, query: list[list[str]], first: int) -> tuple[list[dict[str, Any]], int]:
        """The first `first` charge points here that match `query` (rendered), and how many match."""
        sessions, count = self._matching(QueryParams([(k, v) for k, v in query]), 1, first)
        return [self._client_info(s) for s in sessions], count

    def _matching(self, q: QueryParams, page: int, limit: int) -> tuple[list[Any], int]:
        """fleet.matching with dashboard.max_filter_length (read per request: a reload applies at once);
        a filter over it is counted in admin_requests_refused{reason="filter_too_long"}."""
        try:
            return fleet.matching(self.node.ocpp, q, _parse_time, page, limit,
                                  self.node.settings.dashboard.max_filter_length)
        except fleet.FilterTooLong:
            stats = getattr(self.node, "admin_stats", None)
            if stats is not None:
                stats.refuse("filter_too_long")
            raise

    async def _elsewhere(self, cid: str, op: str, args: dict[str, Any], timeout: float | None = None) -> Any:
        """`op` carried to the node that holds `cid`: its answer, or the error it answered."""
        cluster = cluster_of(self.node)
        peers = cluster.peers() if cluster is not None else []
        if cluster is None or not peers:
            raise _client_not_found(cid)
        found, silent = await ask_each(cluster, peers, "locate", {"clientid": cid})
        holders = [name for name, here in found.items() if here]
        if not holders:
            if silent:
                raise ApiError(503, "SERVICE_UNAVAILABLE", f"client {cid!r} is on no node that answered; "
                               f"node {', '.join(silent)} did not answer within cluster.request_timeout")
            raise ApiError(404, "RESOURCE_NOT_FOUND", f"client {cid!r} not found (not connected to any node)")
        try:
            return await cluster.request(holders[0], op, args, timeout)
        except NodeUnreachable as exc:
            raise ApiError(503, "SERVICE_UNAVAILABLE", str(exc)) from None
        except RemoteError as exc:
            raise ApiError(exc.status, exc.code, exc.message) from None

    def _held_here(self, cid: str) -> bool:
        ctx = self.node.ocpp
        session = ctx.sessions.get(cid) if ctx is not None else None
        return session is not None and not session.closed

    async def client(self, request: Request) -> Response:
        cid = request.path_params["clientid"]
        if self._held_here(cid):
            return json_response(self._client_info(self._session(cid)))
        return json_response(await self._elsewhere(cid, "client", {"clientid": cid}))

    async def kick(self, request: Request) -> Response:
        cid = request.path_params["clientid"]
        if self._held_here(cid):
            self._session(cid).close("kicked", 1000)
        else:
            await self._elsewhere(cid, "kick", {"clientid": cid})
        return Response(status_code=204)

    def _check_call_payload(self, session: Session, action: str, payload: dict[str, Any]) -> None:
        """Refuse what `Session.on_downstream` would drop as a schema violation."""
        ctx = self._context()
        registry = ctx.registry
        if registry is None:
            return
        running_listener = self.node.listeners.get(session.listener)
        mode = running_listener.app.checking if running_listener is not None else None
        if not ctx.checks_dnstream(session.cid, mode):
            return
        try:
            violation = registry.check(session.proto_ver, action, "request", payload)
        except UnknownAction:
            raise ApiError(400, "BAD_REQUEST", f"action: no request schema for {action!r} in {session.proto_ver}") from None
        if violation is not None:
            raise ApiError(400, "BAD_REQUEST", f"payload: does not match the {action} request schema of "
                           f"{session.proto_ver} ({violation.code}): {violation.description}")

    async def call(self, request: Request) -> Response:
        cid = request.path_params["clientid"]
        body = check_fields(await json_body(request), {"action": str}, {"payload": dict, "timeout": (float, str)})
        action: str = body["action"]
        if not action:
            raise bad_request("action: must not be empty")
        payload = body.get("payload", {})
        timeout = _seconds("timeout", body.get("timeout"))
        if timeout is not None and not (0 < timeout <= MAX_CALL_TIMEOUT and math.isfinite(timeout)):
            raise bad_request(f"timeout: must be greater than 0 and at most {MAX_CALL_TIMEOUT:g} seconds")
        if not self._held_here(cid):
            cluster_timeout = float(self.node.settings.cluster.request_timeout)
            wait = (timeout if timeout is not None else float(self.node.settings.gateway.ocpp.dnstream.awaiting_timeout))
            return json_response(await self._elsewhere(
                cid, "call", {"clientid": cid, "action": action, "payload": payload, "timeout": timeout},
                wait + cluster_timeout))
        reply = await self.call_here(cid, action, payload, timeout)
        return json_response(reply)

    async def call_here(self, cid: str, action: str, payload: dict[str, Any], timeout: float | None) -> Any:
        """A CALL to a charge point connected to this node: its answer, or an ApiError."""
        session = self._session(cid)
        self._check_call_payload(session, action, payload)
        if timeout is None:
            timeout = float(self._context().settings.dnstream.awaiting_timeout)
        try:
            future = session.call(action, payload)
        except QueueFull as exc:
            raise ApiError(409, "QUEUE_FULL", str(exc)) from None
        except InvalidCommand as exc:  # cannot be encoded, or over the listener's websocket.max_frame_size
            raise bad_request(f"payload: {exc}") from None
        try:
            return await asyncio.wait_for(future, timeout)
        except InvalidCommand as exc:  # found when its turn came (a command queued behind others)
            raise bad_request(f"payload: {exc}") from None
        except TimeoutError:
            dropped = future.done() and not future.cancelled() and future.exception() is not None
            reason = str(future.exception()) if dropped else ""
            if reason == "client_disconnected":
                message = f"{cid} disconnected before answering the {action} CALL"
            elif dropped:
                awaiting = self._context().settings.dnstream.awaiting_timeout
                message = f"{cid} did not answer the {action} CALL within dnstream.awaiting_timeout ({awaiting})"
            else:
                message = f"{cid} did not answer the {action} CALL within {timeout:g}s"
            raise ApiError(504, "TIMEOUT", message) from None

    # --- users of the built-in authenticator ---------------------------------------------------

    def _store(self) -> UserStore:
        store = self.node.user_store
        if store is None:
            raise ApiError(404, "NOT_FOUND", "the built-in authenticator is not available (gateway.ocpp.enable = false)")
        return store

    async def users(self, request: Request) -> Response:
        store = self._store()
        page, limit = page_args(request)
        like = request.query_params.get("like_user_id") or None
        superuser = request.query_params.get("is_superuser")
        if superuser is None:
            found = store.list(page, limit, like)
            start = (page - 1) * limit
            return json_response({
                "data": [u.as_dict() for u in found.items],
                "meta": {"page": page, "limit": limit, "count": found.total, "hasnext": start + limit < found.total},
            })
        if superuser not in ("true", "false"):
            raise bad_request("is_superuser: expected true or false")
        everyone = store.list(1, max(len(store), 1), like).items
        wanted = [u.as_dict() for u in everyone if u.is_superuser == (superuser == "true")]
        return json_response(paged(wanted, page, limit))

    async def add_user(self, request: Request) -> Response:
        store = self._store()
        body = check_fields(await json_body(request), {"user_id": str},
                            {"password": str, "is_superuser": bool, "security_profile": int})
        user_id, password, profile = body["user_id"], body.get("password"), body.get("security_profile")
        _check_user_id(user_id)
        _check_profile(profile)
        if password is None and profile != 3:
            raise bad_request("password: required (only a user with security_profile 3 may have none: "
                              "its client certificate is its login)")
        if password is not None and not password:
            raise bad_request("password: must not be empty")
        try:
            user, nodes = await change_users(self.node, store, store.add, user_id, password,
                                             body.get("is_superuser", False), profile)
        except UserExists:
            raise ApiError(409, "ALREADY_EXISTS", f"user {user_id!r} already exists") from None
        except ValueError as exc:  # the id, profile and emptiness are checked above: what is left is the password
            raise bad_request(f"password: {exc}") from None
        except AuthStoreError as exc:
            raise ApiError(500, "INTERNAL_ERROR", str(exc)) from None
        return json_response({**user.as_dict(), **({"nodes": nodes} if nodes else {})}, 201)

    async def user(self, request: Request) -> Response:
        store = self._store()
        user_id = request.path_params["user_id"]
        try:
            return json_response(store.get(user_id).as_dict())
        except UserNotFound:
            raise _user_not_found(user_id) from None

    async def update_user(self, request: Request) -> Response:
        store = self._store()
        user_id = request.path_params["user_id"]
        body = check_fields(await json_body(request), {},
                            {"password": str, "is_superuser": bool, "security_profile": (int, type(None))})
        password = body.get("password")
        if password is not None and not password:
            raise bad_request("password: must not be empty")
        profile = body.get("security_profile", KEEP)  # null: no requirement any more
        if profile is not KEEP:
            _check_profile(profile)
        if not user_id or len(user_id) > MAX_USER_ID:
            raise _user_not_found(user_id)
        try:
            user, nodes = await change_users(self.node, store, store.update, user_id, password,
                                             body.get("is_superuser"), profile)
        except UserNotFound:
            raise _user_not_found(user_id) from None
        except ValueError as exc:
            name = "password" if password is not None else "security_profile"
            raise bad_request(f"{name}: {exc}") from None
        except AuthStoreError as exc:
            raise ApiError(500, "INTERNAL_ERROR", str(exc)) from None
        return json_response({**user.as_dict(), **({"nodes": nodes} if nodes else {})})

    async def delete_user(self, request: Request) -> Response:
        store = self._store()
        user_id = request.path_params["user_id"]
        if not user_id or len(user_id) > MAX_USER_ID:
            raise _user_not_found(user_id)
        try:
            await change_users(self.node, store, store.delete, user_id)  # rewrites and fsyncs the file
        except UserNotFound:
            raise _user_not_found(user_id) from None
        except AuthStoreError as exc:
            raise ApiError(500, "INTERNAL_ERROR", str(exc)) from None
        return Response(status_code=204)


def _check_user_id(user_id: str) -> None:
    if not user_id:
        raise bad_request("user_id: must not be empty")
    if len(user_id) > MAX_USER_ID:
        raise bad_request(f"user_id: longer than {MAX_USER_ID} characters")


def _check_profile(profile: Any) -> None:
    try:
        check_security_profile(profile)
    except ValueError as exc:
        raise bad_request(str(exc)) from None


def routes(node: NodeView) -> list[Route]:
    api = GatewayApi(node)
    users = f"{PREFIX}/authentication/users"
    return [
        Route(f"{PREFIX}/clients", api.clients, methods=["GET"]),
        Route(f"{PREFIX}/clients/{{clientid}}", api.client, methods=["GET"]),
        Route(f"{PREFIX}/clients/{{clientid}}", api.kick, methods=["DELETE"]),
        Route(f"{PREFIX}/clients/{{clientid}}/call", api.call, methods=["POST"]),
        Route(users, api.users, methods=["GET"]),
        Route(users, api.add_user, methods=["POST"]),
        Route(f"{users}/{{user_id:path}}", api.user, methods=["GET"]),
        Route(f"{users}/{{user_id:path}}", api.update_user, methods=["PUT"]),
        Route(f"{users}/{{user_id:path}}", api.delete_user, methods=["DELETE"]),
    ]
