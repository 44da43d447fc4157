"""The WebSocket of a simulated charge point: opening it, and picows's callbacks on it.

`connect(owner, ...)` opens one connection (from the charge point's source
address when it has one, with its TLS context and credentials) and checks the
subprotocol the gateway chose; it counts connects and connect errors in the
fleet's stats. A `Link` is that connection: picows calls it from the event
loop with each frame, which it hands to its owner (`on_frame`). The owner is
anything with the `LinkOwner` shape (the charge point): this module knows
nothing above it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import socket
import ssl
from typing import Any, Protocol

from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)

from engine.simulate.model import resolve
from engine.simulate.stats import Stats

log = logging.getLogger("ocppgw.simulate")

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux: pick the port at connect()
# picows uses aiofastnet's transports when it is installed; on uvloop, uvloop's own are lighter and faster
# (measured: 19 vs 24 KB per idle charge point, 50 vs 59 µs CPU per call)
_HAS_AIOFASTNET_SWITCH = "use_aiofastnet" in inspect.signature(ws_connect).parameters


class LinkOwner(Protocol):
    """What a link reports to: the charge point whose connection it is."""

    cid: str
    loop: asyncio.AbstractEventLoop
    stats: Stats

    def on_connected(self, link: Link) -> None: ...
    def on_frame(self, link: Link, data: bytes) -> None: ...
    def on_disconnected(self, link: Link) -> None: ...


class Link(WSListener):
    """One WebSocket connection of a charge point (picows calls these from the event loop)."""

    def __init__(self, cp: LinkOwner) -> None:
        self.cp = cp
        self.transport: WSTransport | None = None
        self.closing = False  # we started the close: its end is expected
        self.closed: asyncio.Future[None] = cp.loop.create_future()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.cp.on_connected(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        try:
            if kind == WSMsgType.TEXT and frame.fin:
                self.cp.on_frame(self, frame.get_payload_as_bytes())
            elif kind == WSMsgType.CLOSE:
                if not self.closing:  # the gateway closes: answer its close frame (ours crossed it otherwise)
                    transport.send_close(WSCloseCode.OK)
                transport.disconnect()
            elif kind in (WSMsgType.BINARY, WSMsgType.CONTINUATION) or (kind == WSMsgType.TEXT and not frame.fin):
                self.cp.stats.frames_received += 1
                self.cp.stats.protocol_error("bad_frame")
        except Exception:  # a bug of ours must not pass for a network problem
            log.exception("%s: error handling a frame", self.cp.cid)
            self.cp.stats.protocol_error("internal")

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.cp.on_disconnected(self)
        resolve(self.closed, None)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.send(WSMsgType.TEXT, data)

    def close(self) -> None:
        """Start a normal close (1000); the transport goes when the gateway answers, or after 2 s."""
        if self.closing or self.transport is None:
            return
        self.closing = True
        self.transport.send_close(WSCloseCode.OK)
        self.cp.loop.call_later(2.0, self.transport.disconnect)


async def connect(cp: LinkOwner, url: str, *, subprotocol: str, headers: dict[str, str],
                  ssl_context: ssl.SSLContext | None, source: str | None, handshake_timeout: float) -> Link | None:
    """A new connection of `cp` with the subprotocol it asked for, or None (counted in the stats)."""
    extra: dict[str, Any] = {}
    if _HAS_AIOFASTNET_SWITCH and type(cp.loop).__module__.startswith("uvloop"):
        extra["use_aiofastnet"] = False
    try:
        transport, link = await ws_connect(
            lambda: Link(cp), url, extra_headers=headers,
            ssl_context=ssl_context,
            socket_factory=functools.partial(_bound_socket, source) if source else None,
            websocket_handshake_timeout=handshake_timeout, enable_auto_pong=True,
            logger_name="simulate", disconnect_on_exception=False, max_frame_size=16 * 1024 * 1024,
            read_buffer_init_size=2048,  # grows when needed; 16 KB each would be most of a charger's memory
            **extra,
        )
    except (TimeoutError, OSError, WSError) as exc:
        cp.stats.connect_failures += 1
        response = getattr(exc, "response", None)
        cp.stats.connect_errors[f"http {int(response.status)}" if response is not None else type(exc).__name__] += 1
        return None
    assert isinstance(link, Link)
    cp.stats.connects += 1
    offered = transport.response.headers.get("Sec-WebSocket-Protocol")
    if offered != subprotocol:
        cp.stats.protocol_error("subprotocol")
        link.close()
        await link.closed
        return None
    return link


def _bound_socket(source: str, parsed_url: Any) -> socket.socket:
    """picows's socket factory: a TCP socket bound to `source`, its port left to connect()."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    except OSError:
        pass
    try:
        sock.bind((source, 0))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
