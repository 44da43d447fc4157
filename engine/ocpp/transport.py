"""The OCPP listener's transport: uvicorn's HTTP and sans-I/O WebSocket protocols, extended.

`OcppHttpProtocol` answers the refusals that need nothing but the path (bad path or charge point
id, per-client limits, max_connections, max_conn_rate) as soon as the request's headers are
parsed, before uvicorn builds the WebSocket protocol and the ASGI task: in a connect storm most
handshakes are such refusals, and a limiter that costs as much as an accepted connection
protects nothing.

`OcppProtocol` extends uvicorn's sans-I/O WebSocket protocol with two things ASGI does not
carry: the TLS peer certificate, and a synchronous send, so a bus handler can write a frame in
order without a task per message; once its session exists, frames go straight to it.

Both override uvicorn internals (not its public API): pyproject.toml pins the uvicorn range we
test, and tests/test_uvicorn_internals.py names what changed if an upgrade moves them.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any, Protocol

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from engine import fds
from engine.config.schema import ListenerSettings
from engine.httpguard import GuardedHttpProtocol, HeadLimits
from engine.ocpp.context import GatewayContext
from engine.ocpp.handshake import Admission, Refusal, check_origin


class FrameSink(Protocol):
    """Where an upgraded connection's frames go: its session."""

    def on_text(self, text: str) -> None: ...
    def on_binary(self, data: bytes) -> None: ...


class HandshakeGate(Protocol):
    """What the HTTP protocol asks of the listener's application (`OcppApp`) before an upgrade."""

    ctx: GatewayContext
    settings: ListenerSettings

    def admit(self, path: str, client: Any = None) -> Admission: ...
    def refused(self, refusal: Refusal, cid: str, username: str | None, proto: str, client: Any) -> None: ...
    def cid_of(self, path: str) -> str: ...


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
    session: FrameSink | None = None  # once set, frames go straight to it instead of through the ASGI queue
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

    ocpp_app: HandshakeGate
    pending: PendingHandshakes
    _counted = False  # in `pending`
    _limits_for: tuple[Any, HeadLimits] | None = None  # (settings, their limits), per listener class

    @classmethod
    def for_app(cls, app: HandshakeGate, pending: PendingHandshakes | None = None) -> type[OcppHttpProtocol]:
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

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
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
            check_origin(app.settings.websocket, self.headers)
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
