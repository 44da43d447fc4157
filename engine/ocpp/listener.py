"""OCPP listeners: uvicorn (websockets-sansio) serving the handshake and the session loop.

The handshake decides before the upgrade (`engine.ocpp.handshake`: path → charge point id,
limits, subprotocol, TLS client certificate, HTTP Basic login). A refusal is an HTTP answer
(400/401/403/404/429/503) and leaves nothing behind. An accepted connection gets a `Session`,
listed in the context's registry (which takes over an older one); its frames are fed to it as
they arrive (`engine.ocpp.transport`).
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from typing import Any

import uvicorn

from engine.config.schema import ListenerSettings, WssListenerSettings
from engine.ocpp import events, handshake, tls
from engine.ocpp.accept import ListenerHooks, acceptor_factory
from engine.ocpp.certs import CertificateWatch, ClientCertificate, shared_warnings
from engine.ocpp.context import GatewayContext
from engine.ocpp.handshake import Admission, Authenticator, RateLimit, Refusal
from engine.ocpp.session import Session
from engine.ocpp.transport import OcppHttpProtocol, OcppProtocol, PendingHandshakes
from engine.serve import BindError, bind_socket, start_server

__all__ = ["ListenerError", "OcppApp", "OcppListener", "Refusal", "server_tls_context"]  # Refusal: from handshake

log = logging.getLogger("ocppgw.listener")

class ListenerError(Exception):
    """A listener that cannot start; the message names the key and the reason."""


class OcppApp:
    """The ASGI application of one listener."""

    def __init__(self, ctx: GatewayContext, name: str, kind: str, settings: ListenerSettings,
                 authenticator: Authenticator | None) -> None:
        self.ctx = ctx
        self.name = name
        self.kind = kind
        self.authenticator = authenticator
        self.connections = 0
        self.admitting = 0  # handshakes let through whose session does not exist yet
        # the client certificates of its sessions (engine.ocpp.certs); expiry warnings shared by the node's listeners
        self.certificates = CertificateWatch(shared_warnings(ctx))
        self.apply(settings)

    def apply(self, settings: ListenerSettings) -> None:
        self.settings = settings
        self.rate = RateLimit(settings.max_conn_rate)
        self.prefix = handshake.endpoint_prefix(settings)

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
            self.ctx.publish_event("client_connack", events.client_connack(
                cid, username, peer, proto, refusal.reason_code, refusal.message))

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
        transport.request = transport.response = None  # type: ignore[assignment]  # the handshake's headers: not needed any more
        session = Session(
            self.ctx, transport, cid=cid, proto_ver=proto, username=username, peer=peer,
            sockname=tuple(scope.get("server") or ("", 0)), mountpoint=self.mountpoint, listener=self,
        )
        self.ctx.sessions.add(session)  # closes the one it takes over
        transport.session = session
        self.connections += 1
        admission = transport.admission
        assert admission is not None  # set by handshake()
        admission.end()
        transport.admission = None
        metrics = self.ctx.metrics
        metrics.connections += 1
        metrics.connections_total += 1
        metrics.by_proto[proto] += 1
        self.ctx.publish_event("client_connack", events.client_connack(cid, username, peer, proto, "success"))
        session.start()
        try:
            cert = scope.get("ocppgw_cert")
            if cert is not None:
                self.watch_certificate(session, cert)
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
            self.certificates.disconnected(session)
            self.connections -= 1
            metrics.connections -= 1
            metrics.by_proto[proto] -= 1

    def watch_certificate(self, session: Session, cert: ClientCertificate) -> None:
        """Keep a session's client certificate (API, metrics) and warn of its expiry
        ($events/certificate_expiring, at connect and daily)."""

        def window() -> float:
            settings = self.settings
            return float(settings.ssl_options.cert_expiry_warning) if isinstance(settings, WssListenerSettings) else 0.0

        def warn(expiring: ClientCertificate) -> None:
            self.ctx.publish_event("certificate_expiring", events.certificate_expiring(
                session.cid, session.username, expiring.as_dict(), expiring.days_left(time.time())))

        self.certificates.connected(session, session.cid, cert, window, warn)

    def cid_of(self, path: str) -> str:
        """The charge point id a path names ("" for a path outside the endpoint)."""
        return handshake.cid_of(self.prefix, path)

    def check_path(self, path: str) -> str:
        """The charge point id of a request's path, or a `Refusal` (404, 400)."""
        return handshake.check_path(self.prefix, path)

    def admit(self, path: str, client: Any = None) -> Admission:
        """The checks on the path and on the listener's capacity, in the order they answer:
        `OcppHttpProtocol` makes them before any WebSocket machinery exists. A `Refusal`, or the
        place and the token the handshake holds until it ends. The per-client limits (bans,
        per-source and per-cid rates: `engine.ocpp.admission`) come before the listener-wide ones,
        so that one client cannot spend everybody's `max_conn_rate`."""
        cid = self.check_path(path)
        auth = self.ctx.settings.authentication if self.ctx_authn_required() else None
        denial = self.ctx.guards.admit(self.full_name, self.settings, auth, cid, client)
        if denial is not None:
            raise Refusal(denial.status, denial.message, denial.reason, denial.headers)
        return handshake.admit(self)

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
        peercert = scope["extensions"]["ocppgw"]["peercert"]
        handshake.check_certificate(self.settings, peercert, cid)
        cert = ClientCertificate.from_peercert(peercert)
        scope["ocppgw_cert"] = cert
        username, password = handshake.basic_credentials(scope["headers"])
        scope["ocppgw_username"] = username
        if self.checks_profiles():
            assert self.authenticator is not None  # checks_profiles
            actual = handshake.connection_profile(self.settings, cert is not None)
            required = self.authenticator.security_profile(cid, *([username] if username else []))
            handshake.check_security_profile(cid, required, actual)
            # security profile 3: a verified certificate whose CN is the charge point id is its login
            certificate_login = actual == 3 and cert is not None and cert.common_name == cid and \
                self.authenticator.security_profile(cid) == 3
            if certificate_login:  # its username is the certificate's CN, not Basic credentials nobody checked
                username = scope["ocppgw_username"] = cid
        else:
            certificate_login = False
        if self.ctx_authn_required() and not certificate_login:
            auth_settings = self.ctx.settings.authentication
            assert self.authenticator is not None  # ctx_authn_required

            def login_failed() -> None:
                self.ctx.guards.login_failed(scope.get("client"), self.settings, auth_settings)

            await handshake.check_login(cid, username, password, auth_settings, self.authenticator, login_failed)
        denial = self.ctx.guards.logged_in(cid)  # the refusal if this login is one too many (flapping_detect)
        if denial is not None:
            peer = tuple(scope.get("client") or ("", 0))
            self.ctx.publish_event("client_flapping", events.client_flapping(
                cid, username, peer[0], self.ctx.guards.flapping_settings))
            raise Refusal(denial.status, denial.message, denial.reason, denial.headers)
        return cid, proto, echo, username

    def checks_profiles(self) -> bool:
        """Whether the users' security profiles apply: whenever the built-in authenticator is on,
        whatever this listener's enable_authn (a listener without logins is a lower profile too)."""
        return self.ctx.settings.authentication.enable and self.authenticator is not None

    def ctx_authn_required(self) -> bool:
        return handshake.authn_required(self.ctx.settings.authentication, self.settings, self.authenticator)

    def pick_subprotocol(self, offered: list[str]) -> tuple[str, bool]:
        return handshake.pick_subprotocol(self.settings.websocket, offered)


def server_tls_context(settings: WssListenerSettings, key: str) -> ssl.SSLContext:
    try:
        return tls.wss_context(settings)
    except tls.TlsSetupError as exc:
        raise ListenerError(f"{key}.ssl_options{exc}") from None


class OcppListener:
    """One listener: a bound socket, a uvicorn server on it, the sessions it accepted."""

    def __init__(self, ctx: GatewayContext, name: str, kind: str, settings: ListenerSettings,
                 authenticator: Authenticator | None) -> None:
        self.app = OcppApp(ctx, name, kind, settings, authenticator)
        self.key = f"gateway.ocpp.listeners.{kind}.{name}"
        self.server: uvicorn.Server | None = None
        self.sock: socket.socket | None = None
        self.pending = PendingHandshakes()  # accepted, not upgraded yet (metrics: listener_pending_handshakes)

    @property
    def settings(self) -> ListenerSettings:
        return self.app.settings

    async def start(self) -> None:
        s = self.settings
        ssl_ctx = server_tls_context(s, self.key) if isinstance(s, WssListenerSettings) else None
        try:
            sock = bind_socket(s.bind, f"{self.key}.bind", reuseaddr=s.tcp_options.reuseaddr)
        except BindError as exc:
            raise ListenerError(str(exc)) from None
        tls.tune_listening(sock, s.tcp_options)
        # PROXY header, access rules and TLS come before HTTP: the accept path (engine.ocpp.accept)
        hooks = ListenerHooks(self.app, ssl_ctx, self.pending)
        http = acceptor_factory(hooks, OcppHttpProtocol.for_app(self.app, self.pending))
        self.server = await start_server(
            self.app, sock, http=http, ws=OcppProtocol, backlog=s.tcp_options.backlog, **_websocket_options(s),
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
