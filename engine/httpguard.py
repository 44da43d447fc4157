"""uvicorn's HTTP protocol with the limits a public port needs before any request is parsed.

- A request head (request line and headers) must arrive within `timeout`
  from the connection (or from the previous response on a kept-alive
  connection), and an upgraded connection must finish its handshake within
  the same time: silent sockets and slowloris heads are closed, so they cannot
  hold file descriptors for ever.
- The URL is capped at `max_request_line` bytes (answer 414) and the request
  head at `max_request_line + max_header_size` bytes (431), counted as the
  bytes arrive and before the parser sees more: uvicorn grows the URL by
  concatenation and httptools the header values, which is quadratic.
- A connection accepted into the last descriptors of the open-file limit is
  closed at once (`engine.fds.near_limit`).

Subclasses say where a refusal is counted (`count`) and may read their limits
live (`head_limits`); `guarded` makes one with fixed limits and a counter.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from http import HTTPStatus

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from engine import fds
from engine.log import Throttle


LINGER = 2.0  # seconds a refused connection's further input is read and discarded before it is closed
LOG_EVERY = 10.0  # seconds between two identical lines of the HTTP layer (a flood of bad requests: one line)


class OncePerPeriod(logging.Filter):
    """Lets a message through once per `every` seconds; the next one that passes says how many were held back."""

    def __init__(self, every: float) -> None:
        super().__init__()
        self._lines = Throttle(every)  # per message text

    def filter(self, record: logging.LogRecord) -> bool:
        held = self._lines.allow(str(record.msg))
        if held is None:
            return False
        if held:
            record.msg = f"{record.msg} ({held} more since the last such line)"
        return True


# uvicorn's HTTP protocol logs one WARNING per bad request ("Invalid HTTP request received."): ours
# says it once per LOG_EVERY; its level is above uvicorn's TRACE, which uvicorn checks per connection
http_log = logging.getLogger("ocppgw.http")
http_log.setLevel(logging.INFO)
http_log.addFilter(OncePerPeriod(LOG_EVERY))


@dataclass(frozen=True)
class HeadLimits:
    timeout: float = 15.0
    max_request_line: int = 8192
    max_header_size: int = 16384
    fd_reserve: int = fds.ACCEPT_RESERVE


def simple_response(status: int, message: str) -> bytes:
    body = message.encode() + b"\n"
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class GuardedHttpProtocol(HttpToolsProtocol):
    limits = HeadLimits()
    refusals: Counter[str] = Counter()  # replaced per server by `guarded`

    # per connection
    _head_timer: asyncio.TimerHandle | None = None
    _in_head = True  # reading a request head (from the connection or the end of the previous request)
    _head_bytes = 0
    _url_bytes = 0
    _refused = False

    def head_limits(self) -> HeadLimits:
        return self.limits

    def count(self, reason: str) -> None:
        """A refusal: handshake_timeout, uri_too_long, headers_too_large, bad_request."""
        self.refusals[reason] += 1

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.logger = http_log
        super().connection_made(transport)
        limits = self.head_limits()
        self._limits = limits
        if fds.near_limit(transport, limits.fd_reserve):
            transport.abort()
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self.disarm()
        timeout = self._limits.timeout
        if timeout > 0:
            self._head_timer = self.loop.call_later(timeout, self._head_timed_out)

    def disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        transport = self.transport
        if transport.is_closing():
            return
        protocol = transport.get_protocol()
        if protocol is self:
            if not self._in_head:
                return  # a request is being answered: its app decides how long that takes
        elif getattr(protocol, "handshake_complete", True):
            return  # upgraded in time
        self.count("handshake_timeout")
        transport.abort()  # nothing to say to a peer that said nothing in time

    def _refuse(self, status: int, reason: str, message: str) -> None:
        """Answer and close. The peer may still be sending (the rest of a huge URL): closing a socket
        with unread input resets it, and the reset can destroy our answer before the peer reads it.
        So half-close, discard what still comes (unparsed), and close for good at EOF or after LINGER."""
        self._refused = True
        self.disarm()
        self.count(reason)
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(simple_response(status, message))
        if transport.can_write_eof():
            transport.write_eof()
            self._head_timer = self.loop.call_later(LINGER, transport.abort)
        else:
            transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            limits = self._limits
            room = limits.max_request_line + limits.max_header_size - self._head_bytes
            self._head_bytes += len(data)
            if len(data) > room:
                # let the parser see what fits (to tell a long URL from long headers), then refuse
                if room > 0:
                    super().data_received(data[:room])
                if self._refused or self.transport.is_closing():
                    return
                if not self._in_head:  # the head ended inside what fitted: the rest is its body (or more)
                    self.data_received(data[room:])
                    return
                # a URL over its cap was refused (414) by on_url while the parser read the part that fits
                self._refuse(431, "headers_too_large", f"the request headers are larger than {limits.max_header_size} bytes")
                return
        super().data_received(data)

    # what the parser may still call for the rest of a chunk after a refusal: nothing more is answered

    def send_400_response(self, msg: str) -> None:
        if not self._refused:
            self._refused = True  # and nothing more is parsed
            self.disarm()
            self.count("bad_request")
            super().send_400_response(msg)

    def handle_websocket_upgrade(self) -> None:
        if not self._refused:
            super().handle_websocket_upgrade()

    # parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._url_bytes = 0

    def on_url(self, url: bytes) -> None:
        if self._refused:
            return
        self._url_bytes += len(url)
        if self._url_bytes > self._limits.max_request_line:
            self._refuse(414, "uri_too_long", f"the request line is longer than {self._limits.max_request_line} bytes")
            return
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._refused:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_head = False
        if not (self.parser.should_upgrade() and self._should_upgrade()):
            self.disarm()  # a plain request: read in full; the upgrade keeps the timer until it is done
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        if self._refused:
            return
        super().on_message_complete()
        if not self.parser.should_upgrade():
            self._in_head = True  # what comes next is the next request's head
            self._head_bytes = 0

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self._refused:
            self._arm()  # the next request's head is due within the timeout too


def guarded(limits: HeadLimits) -> type[GuardedHttpProtocol]:
    """A protocol class with these limits and a counter of its own (`refusals`)."""
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"limits": limits, "refusals": Counter()})
