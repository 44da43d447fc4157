"""What an OCPP listener does with a connection before HTTP: the accept path.

`Acceptor` is the protocol the listening socket hands each new connection to. In order:

1. the fd reserve (`engine.fds.near_limit`) and the TCP options (`tcp_options`);
2. with `proxy_protocol = true`, the PROXY protocol header (`engine.ocpp.proxy_protocol`), due
   within `proxy_protocol_timeout`; its source address is the client's from then on (the
   transport answers it as its peer name, so the per-source limits, the clients API, the events
   and the logs all see it). A connection without a valid header in time is closed, counted
   (`proxy_protocol_error`, `proxy_protocol_timeout`) and logged once per period;
3. `access_rules` on the client's address: a denied one is closed at once (`access_denied`);
4. on a wss listener, the TLS handshake (asyncio's `SSLProtocol`), due within
   `ssl_options.handshake_timeout` (closed and counted beyond: `tls_handshake_timeout`);
5. uvicorn's HTTP protocol (`engine.ocpp.transport.OcppHttpProtocol`) takes over.

Settings are read live from the listener's application at each accept, so a reload applies
to the connections accepted after it. While it waits for its PROXY header the connection counts
as one of the listener's pending handshakes (`PendingHandshakes`); the HTTP protocol counts it
again from its start to its upgrade; the TLS handshake in between is bounded by its timeout.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from asyncio import sslproto
from collections.abc import Callable
from typing import Any

from engine import fds
from engine.log import Throttle
from engine.ocpp import proxy_protocol
from engine.ocpp.access import AccessRules
from engine.ocpp.tls import tune_connection

log = logging.getLogger("ocppgw.listener")
LOG_EVERY = 10.0  # seconds between two lines about refused connections of one kind


class AddressedSocket:
    """The accepted socket, with the PROXY header's client as its peer name."""

    def __init__(self, sock: Any, peer: tuple[str, int]) -> None:
        self._sock = sock
        self._peer = peer

    def getpeername(self) -> tuple[str, int]:
        return self._peer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class AddressedTransport:
    """A transport that names the PROXY header's client as its peer; everything else is the real
    one's (looked up once per name, then kept: `write` is on the hot path)."""

    def __init__(self, transport: Any, peer: tuple[str, int]) -> None:
        self._real = transport
        self._peer = peer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peer
        if name == "socket":
            sock = self._real.get_extra_info("socket")
            return None if sock is None else AddressedSocket(sock, self._peer)
        return self._real.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._real, name)
        if callable(value):
            setattr(self, name, value)  # a bound method of the real transport
        return value


class ListenerHooks:
    """What the accept path reads from its listener: live settings, the TLS context, the counters."""

    app: Any  # OcppApp: .settings, .ctx.metrics.refused, .full_name
    ssl_context: ssl.SSLContext | None
    pending: Any  # PendingHandshakes
    access: tuple[Any, AccessRules] | None = None  # (the access_rules list, their parsed form)

    def __init__(self, app: Any, ssl_context: ssl.SSLContext | None, pending: Any) -> None:
        self.app = app
        self.ssl_context = ssl_context
        self.pending = pending
        self.throttle = Throttle(LOG_EVERY)

    def access_rules(self) -> AccessRules:
        texts = self.app.settings.access_rules
        if self.access is None or self.access[0] is not texts:
            self.access = (texts, AccessRules(texts))
        return self.access[1]

    def handshake_done(self, waiter: asyncio.Future[Any]) -> None:
        """A TLS handshake ended: one over ssl_options.handshake_timeout is counted (tls_handshake_timeout);
        a failed one closed the connection already, and is not logged (a scanner's noise)."""
        if waiter.cancelled():
            return
        exc = waiter.exception()
        if isinstance(exc, ConnectionAbortedError) and "handshake is taking longer" in str(exc):
            self.app.ctx.metrics.refused["tls_handshake_timeout"] += 1

    def refuse(self, reason: str, peer: Any, detail: str) -> None:
        self.app.ctx.metrics.refused[reason] += 1
        held = self.throttle.allow(reason)
        if held is not None:
            more = f" ({held} more since the last such line)" if held else ""
            log.warning("listener %s: connection from %s closed: %s%s", self.app.full_name,
                        _show(peer), detail, more)


def _show(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"[{peer[0]}]:{peer[1]}" if ":" in str(peer[0]) else f"{peer[0]}:{peer[1]}"
    return str(peer)


class Acceptor(asyncio.Protocol):
    """One accepted connection until HTTP takes over (see the module's docstring)."""

    hooks: ListenerHooks
    make_http: Callable[[], asyncio.Protocol]

    _transport: asyncio.Transport | None = None
    _timer: asyncio.TimerHandle | None = None
    _buffer = b""
    _counted = False

    def __init__(self, hooks: ListenerHooks, make_http: Callable[[], asyncio.Protocol]) -> None:
        self.hooks = hooks
        self.make_http = make_http

    def connection_made(self, transport: Any) -> None:  # uvloop's transports are not asyncio.Transport
        self._transport = transport
        if fds.near_limit(transport, fds.ACCEPT_RESERVE):
            transport.abort()
            return
        settings = self.hooks.app.settings
        tune_connection(transport.get_extra_info("socket"), settings.tcp_options)
        self._counted = True
        self.hooks.pending.count += 1
        self._peer = transport.get_extra_info("peername")
        if settings.proxy_protocol:
            timeout = float(settings.proxy_protocol_timeout)
            if timeout > 0:
                self._timer = asyncio.get_running_loop().call_later(timeout, self._timed_out)
            return
        self._admit(b"", None)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._buffer += data
        try:
            header = proxy_protocol.parse(self._buffer)
        except proxy_protocol.ProxyHeaderError as exc:
            self._close("proxy_protocol_error", f"bad PROXY protocol header: {exc}")
            return
        if header is None:
            return
        self._disarm()
        rest, self._buffer = self._buffer[header.length:], b""
        self._admit(rest, header.source)

    def eof_received(self) -> bool | None:
        self._close("proxy_protocol_error", "closed by the peer before a whole PROXY protocol header")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._uncount()

    def _timed_out(self) -> None:
        self._timer = None
        self._close("proxy_protocol_timeout", "no PROXY protocol header within proxy_protocol_timeout")

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self.hooks.pending.count -= 1

    def _close(self, reason: str, detail: str) -> None:
        self._disarm()
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self.hooks.refuse(reason, self._peer, detail)
        transport.abort()

    def _admit(self, rest: bytes, source: tuple[str, int] | None) -> None:
        real = self._transport
        assert real is not None
        peer = source or self._peer
        if not self.hooks.access_rules().allows(str(peer[0]) if isinstance(peer, tuple) else ""):
            self._close("access_denied", "denied by access_rules")
            return
        self._uncount()
        transport: Any = real if source is None else AddressedTransport(real, source)
        http = self.make_http()
        context = self.hooks.ssl_context
        if context is None:
            real.set_protocol(http)
            http.connection_made(transport)
            if rest:
                http.data_received(rest)
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        waiter.add_done_callback(self.hooks.handshake_done)
        timeout = float(getattr(self.hooks.app.settings, "ssl_options").handshake_timeout) or None
        tls = sslproto.SSLProtocol(loop, http, context, waiter, server_side=True,
                                   ssl_handshake_timeout=timeout)  # type: ignore[arg-type]  # a float works
        real.set_protocol(tls)
        tls.connection_made(transport)
        while rest:
            buffer = tls.get_buffer(len(rest))
            n = min(len(buffer), len(rest))
            buffer[:n] = rest[:n]
            tls.buffer_updated(n)
            rest = rest[n:]


def acceptor_factory(hooks: ListenerHooks, make_http: Callable[..., asyncio.Protocol]) -> Callable[..., Acceptor]:
    """What uvicorn takes as its `http` protocol class: called with uvicorn's keyword arguments for
    each connection, it returns an `Acceptor` that builds the HTTP protocol with them at hand-off."""

    def factory(**kwargs: Any) -> Acceptor:
        return Acceptor(hooks, lambda: make_http(**kwargs))

    factory.refusals = getattr(make_http, "refusals", None)  # type: ignore[attr-defined]  # engine.metrics reads it
    return factory


__all__ = ["Acceptor", "AddressedTransport", "ListenerHooks", "acceptor_factory"]
