"""OCPP listeners: uvicorn (websockets-sansio) serving the handshake and the session loop.

The handshake decides before the upgrade: path → charge point id, limits,
subprotocol, TLS client certificate, HTTP Basic login. A refusal is an HTTP
answer (400/401/403/404/503) and leaves nothing behind. An accepted
connection gets a `Session`; its frames are fed to it as they arrive.

The refusals that need nothing but the path (bad path or charge point id,
max_connections, max_conn_rate) are answered by `OcppHttpProtocol` as soon as
the request's headers are parsed, before uvicorn builds the WebSocket protocol
and the ASGI task: in a connect storm most handshakes are such refusals, and a
limiter that costs as much as an accepted connection protects nothing.

`OcppProtocol` extends uvicorn's sans-I/O WebSocket protocol with two things
ASGI does not carry: the TLS peer certificate, and a synchronous send, so a
bus handler can write a frame in order without a task per message.
"""

from __future__ import annotations

import base64
import binascii
import logging
import socket
import ssl
import time
import urllib.parse
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from engine import fds
from engine.config.schema import ListenerSettings, WssListenerSettings
from engine.httpguard import GuardedHttpProtocol, HeadLimits
from engine.ocpp.admission import guards
from engine.ocpp.context import GatewayContext
from engine.ocpp.session import Session
from engine.serve import BindError, bind_socket, start_server

log = logging.getLogger("ocppgw.listener")

# highest first: the gateway picks the highest version both sides speak
PROTOCOL_PREFERENCE = ("ocpp2.1", "ocpp2.0.1", "ocpp1.6")
MAX_CID_LENGTH = 256
_TLS_VERSIONS = {"tlsv1.2": ssl.TLSVersion.TLSv1_2, "tlsv1.3": ssl.TLSVersion.TLSv1_3}


class ListenerError(Exception):
    """A listener that cannot start; the message names the key and the reason."""


class PendingHandshakes:
    """The connections of one listener that have not been upgraded (nor turned down) yet. Each holds
    a file descriptor: beyond `pending_cap` of them, a new one is closed as it is accepted."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


def pending_cap(settings: ListenerSettings) -> int:
    """How many accepted connections may wait for their upgrade at once: max_connections, and the
    handshakes that max_conn_rate lets through within websocket.idle_timeout (a connect storm of
    real charge points is answered, 503 if need be; more could not all be served in time anyway)."""
    timeout = float(settings.websocket.idle_timeout) or 60.0
    return settings.max_connections + int(settings.max_conn_rate * timeout)


class OcppProtocol(WebSocketsSansIOProtocol):
    ping_timed_out = False
    session: Any = None  # once set, frames go straight to it instead of through the ASGI queue
    admission: Admission | None = None  # set by OcppHttpProtocol, ended by the handshake
    head_guard: GuardedHttpProtocol | None = None  # its timer closes us if the handshake takes too long

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete and self.head_guard is not None:
            self.head_guard.disarm()  # accepted or turned down in time
            self.head_guard = None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.admission is not None:  # gone before the handshake ran
            self.admission.end()

    def send_receive_event_to_app(self) -> None:
        session = self.session
        if session is None or self.close_sent:
            super().send_receive_event_to_app()
            return
        # the hot path: no asyncio.Queue, no pause/resume of reading per frame
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.curr_msg_data_type == "text":
            try:
                text = data.decode()
            except UnicodeDecodeError:
                self.conn.send_close(1007, "invalid UTF-8")
                self.handle_parser_exception()
                return
            session.on_text(text)
        else:
            session.on_binary(data)

    def keepalive_timeout(self) -> None:
        self.ping_timed_out = True
        super().keepalive_timeout()

    def disconnect_reason(self, code: int) -> str:
        """Why the connection ended, as $events/client_disconnected says it."""
        if self.ping_timed_out:
            return "keepalive_timeout"
        if self.conn.close_rcvd is None and not self.close_sent:
            return "sock_closed"  # no close frame either way: the TCP connection just went
        if code in (1000, 1001, 1005):
            return "normal"
        return "protocol_error"

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"]["ocppgw"] = {
                "peercert": self.transport.get_extra_info("peercert"),
                "transport": self,
            }

    def send_text(self, text: str) -> None:
        if self.close_sent or self.transport.is_closing() or not self.handshake_complete:
            return
        self.conn.send_text(text.encode())
        self.transport.write(b"".join(self.conn.data_to_send()))

    def close(self, code: int, reason: str) -> None:
        """Send the close frame now (what uvicorn does for an ASGI websocket.close), so that a
        shutdown right after still sends our code and not its own 1012."""
        if self.close_sent or self.transport.is_closing() or not self.handshake_complete:
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason[:120])
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)


class OcppHttpProtocol(GuardedHttpProtocol):
    """uvicorn's HTTP protocol with the request-head limits of `GuardedHttpProtocol` (read live from the
    listener's `websocket` settings); an upgrade request the listener turns down on its path or its
    capacity gets its HTTP answer here and the connection is closed. `ocpp_app` and `pending` are set
    on a subclass per listener (`for_app`)."""

    ocpp_app: OcppApp
    pending: PendingHandshakes
    _counted = False  # in `pending`
    _limits_for: tuple[Any, HeadLimits] | None = None  # (settings, their limits), per listener class

    @classmethod
    def for_app(cls, app: OcppApp, pending: PendingHandshakes | None = None) -> type[OcppHttpProtocol]:
        return type(cls.__name__, (cls,), {"ocpp_app": app, "pending": pending or PendingHandshakes()})

    def head_limits(self) -> HeadLimits:
        settings = self.ocpp_app.settings
        cached = type(self)._limits_for
        if cached is None or cached[0] is not settings:
            ws = settings.websocket
            limits = HeadLimits(timeout=float(ws.idle_timeout), max_request_line=int(ws.max_request_line_length),
                                max_header_size=int(ws.max_header_size), fd_reserve=fds.ACCEPT_RESERVE)
            cached = type(self)._limits_for = (settings, limits)
        return cached[1]

    def count(self, reason: str) -> None:
        self.ocpp_app.ctx.metrics.refused[reason] += 1

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if transport.is_closing():
            return
        app = self.ocpp_app
        self._counted = True
        self.pending.count += 1
        if self.pending.count > pending_cap(app.settings):
            # closed at accept, as EMQX does at max_connections: reading a request would cost more
            self.count("max_connections")
            transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._uncount()
        super().connection_lost(exc)

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self.pending.count -= 1

    def handle_websocket_upgrade(self) -> None:
        if self._refused:  # the parser went on after a 414/431 in the same chunk
            return
        self._uncount()  # from here on the handshake's Admission holds the place
        app = self.ocpp_app
        raw_path = self.url.partition(b"?")[0]
        try:
            if self.scope.get("http_version") != "1.1":
                raise Refusal(400, "a WebSocket upgrade needs HTTP/1.1", "protocol_error")
            # strict: "%ff" and "%fe" must not both become U+FFFD, the same charge point id
            path = urllib.parse.unquote(raw_path.decode("ascii", "surrogateescape"), errors="strict")
        except UnicodeDecodeError:
            refusal = Refusal(400, "the charge point id is not valid UTF-8 once percent-decoded",
                              "client_identifier_not_valid")
            path = urllib.parse.unquote(raw_path.decode("ascii", "surrogateescape"))
            self._turn_down(refusal, path)
            return
        except Refusal as refusal:
            self._turn_down(refusal, urllib.parse.unquote(raw_path.decode("ascii", "surrogateescape")))
            return
        try:
            admission = app.admit(path, self.client)
        except Refusal as refusal:
            self._turn_down(refusal, path)
            return
        super().handle_websocket_upgrade()  # the WebSocket protocol takes over; its ASGI task runs later
        protocol = self.transport.get_protocol()
        if isinstance(protocol, OcppProtocol) and not self.transport.is_closing():
            protocol.admission = admission
            protocol.head_guard = self
        else:  # uvicorn or websockets turned the request down itself (a bad Sec-WebSocket-Key, say)
            admission.end()

    def _turn_down(self, refusal: Refusal, path: str) -> None:
        self.disarm()
        app = self.ocpp_app
        app.refused(refusal, app.cid_of(path), None, "", self.client)
        self.transport.write(refusal.http_response())
        self.transport.close()


class Refusal(Exception):
    def __init__(self, status: int, message: str, reason_code: str | None, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason_code = reason_code  # for $events/client_connack; None: not an OCPP client at all
        self.headers = headers or []

    @property
    def body(self) -> bytes:
        return self.message.encode() + b"\n"

    def http_response(self) -> bytes:
        """The whole HTTP answer, for a refusal made before uvicorn's WebSocket protocol exists."""
        body = self.body
        head = [f"HTTP/1.1 {self.status} {HTTPStatus(self.status).phrase}".encode(),
                b"content-type: text/plain; charset=utf-8", b"content-length: %d" % len(body), b"connection: close"]
        head += [name + b": " + value for name, value in self.headers]
        return b"\r\n".join(head) + b"\r\n\r\n" + body


class RateLimit:
    """Token bucket: `rate` new connections per second, bursts up to `rate`. A token is reserved when
    a handshake is let through and taken when the handshake runs (or given back if it never does),
    so that the bucket counts connections at the moment they are made, whatever the loop's backlog
    between the two; reserved tokens are not offered to anyone else."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.reserved = 0  # never more than tokens
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def reserve(self) -> bool:
        self._refill()
        if self.tokens - self.reserved >= 1:
            self.reserved += 1
            return True
        return False

    def take_reserved(self) -> None:
        self._refill()
        self.tokens -= 1
        self.reserved -= 1

    def release(self) -> None:
        self.reserved -= 1


class Admission:
    """One handshake let through: a place under max_connections and a token of max_conn_rate, held
    from `OcppApp.admit` until its session exists or the handshake ends (`end`, idempotent)."""

    __slots__ = ("app", "bucket", "token", "held")

    def __init__(self, app: OcppApp) -> None:
        self.app = app
        self.bucket = app.rate  # a reload may replace the app's bucket meanwhile
        self.token = True
        self.held = True
        app.admitting += 1

    def take_token(self) -> None:
        if self.token:
            self.token = False
            self.bucket.take_reserved()

    def end(self) -> None:
        if self.held:
            self.held = False
            self.app.admitting -= 1
        if self.token:
            self.token = False
            self.bucket.release()


class OcppApp:
    """The ASGI application of one listener."""

    def __init__(self, ctx: GatewayContext, name: str, kind: str, settings: ListenerSettings, authenticator: Any) -> None:
        self.ctx = ctx
        self.name = name
        self.kind = kind
        self.authenticator = authenticator
        self.connections = 0
        self.admitting = 0  # handshakes let through whose session does not exist yet
        self.apply(settings)

    def apply(self, settings: ListenerSettings) -> None:
        self.settings = settings
        self.rate = RateLimit(settings.max_conn_rate)
        self.prefix = settings.websocket.path.rstrip("/") + "/"

    @property
    def mountpoint(self) -> str:
        m = self.settings.mountpoint
        return self.ctx.settings.mountpoint if m is None else m

    @property
    def full_name(self) -> str:
        return f"ocpp:{self.kind}:{self.name}"

    @property
    def checking(self) -> str | None:
        return self.settings.message_format_checking

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await self.websocket(scope, receive, send)
        elif scope["type"] == "http":
            body = b"this is an OCPP-J endpoint: connect with a WebSocket to <path>/<charge point id>\n"
            await send({"type": "http.response.start", "status": 426,
                        "headers": [(b"content-type", b"text/plain"), (b"upgrade", b"websocket")]})
            await send({"type": "http.response.body", "body": body})

    def refused(self, refusal: Refusal, cid: str, username: str | None, proto: str, client: Any) -> None:
        """Count a refused handshake and announce it ($events/client_connack) if it was an OCPP one."""
        self.ctx.metrics.refused[refusal.reason_code or "not_found"] += 1
        if refusal.reason_code:
            peer = tuple(client or ("", 0))
            self.ctx.publish_event("client_connack", {
                "clientid": cid, "username": username, "peername": f"{peer[0]}:{peer[1]}", "peerhost": peer[0],
                "proto_name": "OCPP", "proto_ver": proto, "reason_code": refusal.reason_code,
                "description": refusal.message,
            })

    async def websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        transport: OcppProtocol = scope["extensions"]["ocppgw"]["transport"]
        try:
            await self.serve(scope, receive, send, transport)
        finally:
            if transport.admission is not None:
                transport.admission.end()
                transport.admission = None

    async def serve(self, scope: dict[str, Any], receive: Any, send: Any, transport: OcppProtocol) -> None:
        await receive()  # websocket.connect
        peer = tuple(scope.get("client") or ("", 0))
        try:
            cid, proto, echo, username = await self.handshake(scope, transport)
        except Refusal as refusal:
            self.refused(refusal, scope.get("ocppgw_cid", ""), scope.get("ocppgw_username"),
                         scope.get("ocppgw_proto", ""), peer)
            await send({"type": "websocket.http.response.start", "status": refusal.status,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")] + refusal.headers})
            await send({"type": "websocket.http.response.body", "body": refusal.body})
            # uvicorn's sans-I/O protocol does not count a denial response as the end of the handshake
            # and would log "ASGI callable returned without completing handshake" at ERROR for every
            # refusal (an open upstream bug, Kludex/uvicorn#3138)
            transport.handshake_complete = True
            return
        del scope["extensions"]["ocppgw"]  # it referred back to the transport
        await send({"type": "websocket.accept", "subprotocol": proto if echo else None})
        transport.request = transport.response = None  # the handshake's headers: not needed any more
        old = self.ctx.sessions.get(cid)
        if old is not None:
            log.info("charge point %s connected again: the old connection is taken over", cid)
            old.close("takenover", 1000)
        session = Session(
            self.ctx, transport, cid=cid, proto_ver=proto, username=username, peer=peer,
            sockname=tuple(scope.get("server") or ("", 0)), mountpoint=self.mountpoint, listener=self,
        )
        self.ctx.sessions[cid] = session
        transport.session = session
        self.connections += 1
        transport.admission.end()
        transport.admission = None
        metrics = self.ctx.metrics
        metrics.connections += 1
        metrics.connections_total += 1
        metrics.by_proto[proto] += 1
        self.ctx.publish_event("client_connack", {
            "clientid": cid, "username": username, "peername": f"{peer[0]}:{peer[1]}", "peerhost": peer[0],
            "proto_name": "OCPP", "proto_ver": proto, "reason_code": "success",
        })
        session.start()
        try:
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.receive":
                    text = message.get("text")
                    if text is not None:
                        session.on_text(text)
                    else:
                        session.on_binary(message.get("bytes") or b"")
                elif kind == "websocket.disconnect":
                    session.close(transport.disconnect_reason(message.get("code", 1005)))
                    break
        finally:
            transport.session = None
            session.close("normal")
            self.connections -= 1
            metrics.connections -= 1
            metrics.by_proto[proto] -= 1

    def cid_of(self, path: str) -> str:
        """The charge point id a path names ("" for a path outside the endpoint)."""
        return path[len(self.prefix):] if path.startswith(self.prefix) else ""

    def check_path(self, path: str) -> str:
        """The charge point id of a request's path, or a `Refusal` (404, 400)."""
        if not path.startswith(self.prefix):
            raise Refusal(404, f"no OCPP endpoint at {path!r}; connect to {self.prefix}<charge point id>", None)
        cid = path[len(self.prefix):]
        if not cid:
            raise Refusal(400, "the charge point id (the last part of the path) is empty", "client_identifier_not_valid")
        if any(ch in cid for ch in "/+#") or len(cid) > MAX_CID_LENGTH or not cid.isprintable():
            raise Refusal(400, f"the charge point id must be printable, at most {MAX_CID_LENGTH} characters, "
                          "without '/', '+' or '#'", "client_identifier_not_valid")
        if "\ufffd" in cid:  # what a lenient percent-decoding makes of bytes that are not UTF-8
            raise Refusal(400, "the charge point id is not valid UTF-8 once percent-decoded",
                          "client_identifier_not_valid")
        return cid

    def admit(self, path: str, client: Any = None) -> Admission:
        """The checks on the path and on the listener's capacity, in the order they answer:
        `OcppHttpProtocol` makes them before any WebSocket machinery exists. A `Refusal`, or the
        place and the token the handshake holds until it ends. The per-client limits (bans,
        per-source and per-cid rates: `engine.ocpp.admission`) come before the listener-wide ones,
        so that one client cannot spend everybody's `max_conn_rate`."""
        cid = self.check_path(path)
        auth = self.ctx.settings.authentication if self.ctx_authn_required() else None
        denial = guards(self.ctx).admit(self.full_name, self.settings, auth, cid, client)
        if denial is not None:
            raise Refusal(denial.status, denial.message, denial.reason, denial.headers)
        if self.connections + self.admitting >= self.settings.max_connections:
            raise Refusal(503, "the listener is at max_connections", "server_unavailable")
        if not self.rate.reserve():
            raise Refusal(503, "too many new connections per second (max_conn_rate)", "server_unavailable")
        return Admission(self)

    async def handshake(self, scope: dict[str, Any], transport: OcppProtocol) -> tuple[str, str, bool, str | None]:
        """(cid, subprotocol, echo the subprotocol?, username) or a `Refusal`. The capacity was
        checked already (`admit`); the path is checked again as uvicorn's WebSocket protocol read it."""
        scope["ocppgw_cid"] = self.cid_of(scope["path"])
        if transport.admission is None:  # served without OcppHttpProtocol
            transport.admission = self.admit(scope["path"], scope.get("client"))
        cid = self.check_path(scope["path"])
        transport.admission.take_token()  # refused or not from here on, this handshake spent a token
        proto, echo = self.pick_subprotocol(scope.get("subprotocols") or [])
        scope["ocppgw_proto"] = proto
        if isinstance(self.settings, WssListenerSettings) and self.settings.ssl_options.cn_must_match_cid:
            cn = _common_name(scope["extensions"]["ocppgw"]["peercert"])
            if cn is None:
                raise Refusal(403, "a client certificate is required", "not_authorized")
            if cn != cid:
                raise Refusal(403, "the client certificate's CN does not match the charge point id", "not_authorized")
        username, password = _basic_credentials(scope)
        scope["ocppgw_username"] = username
        authn = self.ctx_authn_required()
        if authn:
            challenge = [(b"www-authenticate", b'Basic realm="ocpp-gateway"')]
            if username is None:
                raise Refusal(401, "HTTP Basic credentials are required", "not_authorized", challenge)
            auth_settings = self.ctx.settings.authentication
            # user_id_type = clientid: the charge point id is the login, whatever the Basic username says
            login = cid if auth_settings.user_id_type == "clientid" else username
            if login != cid and not auth_settings.allow_username_mismatch:
                guards(self.ctx).login_failed(scope.get("client"), self.settings, auth_settings)
                raise Refusal(401, "the username must be the charge point id", "bad_username_or_password", challenge)
            if not await self.authenticator.authenticate(login, password):
                guards(self.ctx).login_failed(scope.get("client"), self.settings, auth_settings)
                raise Refusal(401, "bad username or password", "bad_username_or_password", challenge)
        flapping = guards(self.ctx).logged_in(cid)  # the flapping_detect settings if this login is one too many
        if flapping is not None:
            peer = tuple(scope.get("client") or ("", 0))
            self.ctx.publish_event("client_flapping", {
                "clientid": cid, "username": username, "peerhost": peer[0], "max_count": flapping.max_count,
                "window_time": float(flapping.window_time), "ban_time": float(flapping.ban_time),
                "until": int((time.time() + flapping.ban_time) * 1000),
            })
            raise Refusal(429, f"the charge point id is banned for {flapping.ban_time:g}s: it logged in more than "
                          f"{flapping.max_count} times within {flapping.window_time:g}s (flapping_detect)",
                          "banned", [(b"retry-after", b"%d" % max(1, round(flapping.ban_time)))])
        return cid, proto, echo, username

    def ctx_authn_required(self) -> bool:
        return self.ctx.settings.authentication.enable and self.settings.enable_authn and self.authenticator is not None

    def pick_subprotocol(self, offered: list[str]) -> tuple[str, bool]:
        supported = self.settings.websocket.supported_subprotocols
        if not offered:
            if self.settings.websocket.fail_if_no_subprotocol:
                raise Refusal(400, "no Sec-WebSocket-Protocol offered; supported: " + ", ".join(supported),
                              "unsupported_protocol_version")
            return "ocpp1.6", False  # echoing one the client did not offer breaks strict clients
        for proto in PROTOCOL_PREFERENCE:
            if proto in supported and proto in offered:
                return proto, True
        raise Refusal(400, f"none of the offered subprotocols ({', '.join(offered)[:200]}) is supported; "
                      "supported: " + ", ".join(supported), "unsupported_protocol_version")


def _basic_credentials(scope: dict[str, Any]) -> tuple[str | None, str | None]:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() != b"basic":
                return None, None
            try:
                decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None, None
            user, sep, password = decoded.partition(":")
            return (user, password) if sep else (None, None)
    return None, None


def _common_name(peercert: dict[str, Any] | None) -> str | None:
    if not peercert:
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


def server_tls_context(settings: WssListenerSettings, key: str) -> ssl.SSLContext:
    s = settings.ssl_options
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(s.certfile, s.keyfile, s.password or None)
        if s.cacertfile:
            ctx.load_verify_locations(s.cacertfile)
    except (OSError, ssl.SSLError) as exc:
        raise ListenerError(f"{key}.ssl_options: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}") from None
    if s.verify == "verify_peer":
        ctx.verify_mode = ssl.CERT_REQUIRED if s.fail_if_no_peer_cert else ssl.CERT_OPTIONAL
    versions = [_TLS_VERSIONS[v] for v in s.versions]
    ctx.minimum_version = min(versions)
    ctx.maximum_version = max(versions)
    return ctx


class OcppListener:
    """One listener: a bound socket, a uvicorn server on it, the sessions it accepted."""

    def __init__(self, ctx: GatewayContext, name: str, kind: str, settings: ListenerSettings, authenticator: Any) -> None:
        self.app = OcppApp(ctx, name, kind, settings, authenticator)
        self.key = f"gateway.ocpp.listeners.{kind}.{name}"
        self.server: Any = None
        self.sock: socket.socket | None = None
        self.pending = PendingHandshakes()  # accepted, not upgraded yet (metrics: listener_pending_handshakes)

    @property
    def settings(self) -> ListenerSettings:
        return self.app.settings

    async def start(self) -> None:
        s = self.settings
        try:
            sock = bind_socket(s.bind, f"{self.key}.bind")
        except BindError as exc:
            raise ListenerError(str(exc)) from None
        ssl_ctx = server_tls_context(s, self.key) if isinstance(s, WssListenerSettings) else None
        self.server = await start_server(
            self.app, sock, ssl=ssl_ctx, http=OcppHttpProtocol.for_app(self.app, self.pending), ws=OcppProtocol,
            **_websocket_options(s),
        )
        self.sock = sock
        log.info("OCPP listener %s on %s://%s%s", self.app.full_name, self.app.kind, s.bind, s.websocket.path)

    def apply(self, settings: ListenerSettings) -> None:
        """A reload's settings, bind and TLS unchanged: the handshake's checks apply at once; frame
        size, pings and compression to the connections made from now on (uvicorn reads them from its
        config when a connection starts), while connected charge points keep what they have."""
        self.app.apply(settings)
        if self.server is not None:
            for key, value in _websocket_options(settings).items():
                setattr(self.server.config, key, value)

    def stop_accepting(self) -> None:
        if self.server:
            for server in self.server.servers:
                server.close()

    async def stop(self) -> None:
        self.stop_accepting()
        for session in [x for x in self.app.ctx.sessions.values() if x.listener == self.app.full_name]:
            session.close("shutdown", 1001)
        if self.server:
            await self.server.shutdown()
        if self.sock:
            self.sock.close()
        log.info("OCPP listener %s stopped", self.app.full_name)


def _websocket_options(s: ListenerSettings) -> dict[str, Any]:
    ping = s.websocket.ping_interval or None
    return {"ws_max_size": int(s.websocket.max_frame_size), "ws_ping_interval": ping, "ws_ping_timeout": ping,
            "ws_per_message_deflate": s.websocket.compress}
