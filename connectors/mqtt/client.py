"""A lean asyncio MQTT client (3.1.1 and 5) for the bridge's hot path.

Measured (docs/benchmarks.md): with paho under aiomqtt, about 60% of the
gateway's CPU went to the MQTT client: a `send` per publish, a task and an
`asyncio.wait` per received message, bookkeeping that walks every pending
call. This client writes everything one loop turn produced in one
`transport.write`, hands received messages to a callback as they are parsed,
and reports acknowledgements through one callback with the sender's token
(futures only for the rare operations: subscribe, unsubscribe, a publish
without a token). It covers what the bridge uses:
CONNECT, PUBLISH at QoS 0/1/2 both ways, SUBSCRIBE (with no-local on v5),
UNSUBSCRIBE, keepalive pings, DISCONNECT.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import Callable
from typing import Any

from connectors.mqtt.properties import (
    PROTOCOL_ERROR,
    TOPIC_ALIAS,
    MalformedPacket,
    TopicAliases,
    connack_max_packet_size,
    parse_publish_properties,
    publish_properties,
    read_varint_checked,
)
from connectors.mqtt.properties import read_varint as _read_varint
from connectors.mqtt.properties import write_varint as _varint

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14

_CONNACK_V4 = {1: "unacceptable protocol version", 2: "identifier rejected", 3: "server unavailable",
               4: "bad user name or password", 5: "not authorized"}
_CONNACK_V5 = {0x80: "unspecified error", 0x84: "unsupported protocol version", 0x85: "client identifier not valid",
               0x86: "bad user name or password", 0x87: "not authorized", 0x88: "server unavailable",
               0x89: "server busy", 0x8A: "banned"}


# MQTT 5 reason codes a broker answers a PUBLISH with (PUBACK, PUBREC) when it refuses it
PUBLISH_REFUSED = {0x80: "unspecified error", 0x83: "implementation specific error", 0x87: "not authorized",
                   0x90: "topic name invalid", 0x91: "packet identifier in use", 0x95: "packet too large",
                   0x97: "quota exceeded", 0x99: "payload format invalid"}


def publish_refusal(code: int) -> str:
    return f"0x{code:02x} {PUBLISH_REFUSED.get(code, 'refused')}"


_NO_TOKEN: Any = object()
MAX_REMAINING_LENGTH = 268_435_455  # four bytes of variable length: the largest packet MQTT can frame
# MQTT 5: the Topic Alias Maximum we announce in CONNECT; the broker may then send a topic once with
# an alias and later only the alias (a few bytes instead of the topic on every message)
TOPIC_ALIAS_MAXIMUM = 64


class MqttError(Exception):
    """The connection failed or broke; pending operations fail with it."""



def _string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(data)) + data


def _packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([(kind << 4) | flags]) + _varint(len(body)) + body


class MqttClient(asyncio.Protocol):
    """One connection. `on_message(topic, payload, qos, retain)` is called for each PUBLISH received;
    with `with_properties`, `on_message(topic, payload, qos, retain, properties)`: the MQTT 5 PUBLISH
    properties under EMQX's names (connectors/mqtt/properties.py), None when there are none."""

    def __init__(self, on_message: Callable[..., None], v5: bool = True, with_properties: bool = False) -> None:
        self.on_message = on_message
        self.v5 = v5
        self.with_properties = with_properties
        self._aliases = TopicAliases(TOPIC_ALIAS_MAXIMUM)  # MQTT 5: those the broker set on this connection
        # a packet from the broker broke MQTT: what was wrong (the connection was closed over it)
        self.protocol_error: str | None = None
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_event_loop()
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._ids = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}  # packet id → ack future
        self._tokens: dict[int, Any] = {}  # packet id → token of a publish acknowledged through on_ack
        # on_ack(token, reason code): 0 or another code below 0x80 = delivered; 0x80 and up = refused
        self.on_ack: Callable[[Any, int], None] = lambda token, code: None
        self._qos2_in: set[int] = set()
        self._connack: asyncio.Future[None] = self._loop.create_future()
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self._keepalive_task: asyncio.Task[None] | None = None
        self._last_rx = 0.0
        self._broken = False
        # why the connection ended, for the bridge to judge what the broker objected to:
        self.disconnect_reason: int | None = None  # MQTT 5 DISCONNECT from the broker: its reason code
        self.timed_out = False  # we gave up on a silent (half-open) connection: not the broker's doing
        # MQTT 5 CONNACK's Maximum Packet Size: the broker drops the connection of a client that sends more
        self.max_packet_size: int | None = None

    # --- connecting ---------------------------------------------------------------------

    @classmethod
    async def connect(
        cls, host: str, port: int, *, client_id: str, on_message: Callable[..., None],
        v5: bool = True, username: str = "", password: str = "", keepalive: int = 60,
        tls: ssl.SSLContext | None = None, timeout: float = 10.0,
        will: tuple[str, bytes, int, bool] | None = None, with_properties: bool = False,
    ) -> MqttClient:
        """`will`: (topic, payload, qos, retain) the broker publishes when the connection ends without
        a DISCONNECT (the process died, or the keepalive ran out)."""
        loop = asyncio.get_running_loop()
        try:
            _, client = await asyncio.wait_for(
                loop.create_connection(lambda: cls(on_message, v5, with_properties), host, port, ssl=tls,
                                       server_hostname=host if tls else None), timeout)
        except (OSError, ssl.SSLError, asyncio.TimeoutError) as exc:
            raise MqttError(f"cannot connect to {host}:{port}: {exc or type(exc).__name__}") from None
        client._send_connect(client_id, username, password, keepalive, will)
        try:
            await asyncio.wait_for(asyncio.shield(client._connack), timeout)
        except asyncio.TimeoutError:
            client.abort()
            raise MqttError(f"no CONNACK from {host}:{port} within {timeout:g}s") from None
        except MqttError:
            client.abort()
            raise
        client._keepalive_task = loop.create_task(client._keepalive(keepalive))
        return client

    def _send_connect(self, client_id: str, username: str, password: str, keepalive: int,
                      will: tuple[str, bytes, int, bool] | None = None) -> None:
        flags = 0x02  # clean session / clean start: the bridge restores its own state
        payload = _string(client_id)
        if will is not None:
            topic, message, qos, retain = will
            flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
            payload += (b"\x00" if self.v5 else b"") + _string(topic) + _string(message)  # v5: no will properties
        if username:
            flags |= 0x80
        if password:
            flags |= 0x40
        if username:
            payload += _string(username)
        if password:
            payload += _string(password)
        header = _string("MQTT") + bytes([5 if self.v5 else 4, flags]) + struct.pack("!H", keepalive)
        if self.v5:
            header += b"\x03\x22" + struct.pack("!H", TOPIC_ALIAS_MAXIMUM)  # properties: Topic Alias Maximum
        self._write(_packet(CONNECT, 0, header + payload))

    # --- operations ---------------------------------------------------------------------

    def _next_id(self) -> int:
        for _ in range(65535):
            self._ids = self._ids % 65535 + 1
            if self._ids not in self._pending and self._ids not in self._tokens:
                return self._ids
        raise MqttError("no free packet identifier (65535 in flight)")

    @property
    def closed_by_us(self) -> bool:
        """The connection ended because we gave up on it (silent, or the broker sent what we cannot
        parse), not because the broker closed it."""
        return self.timed_out or self._broken

    def publish_size(self, topic: str, payload: bytes, qos: int, properties: dict[str, Any] | None = None) -> int:
        """The size in bytes of the PUBLISH packet `publish` would write (to compare with max_packet_size)."""
        props = (len(publish_properties(properties)) if properties else 1) if self.v5 else 0
        length = 2 + len(topic.encode()) + len(payload) + (2 if qos else 0) + props
        return 1 + len(_varint(length)) + length

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                token: Any = None, properties: dict[str, Any] | None = None) -> asyncio.Future[Any] | None:
        """Queue a PUBLISH. For QoS 1/2: with a `token`, `on_ack(token, reason code)` is called when
        the broker answers it (no future: the bridge's hot path); without, a future is returned,
        which fails with MqttError if the broker refuses the message (MQTT 5 reason code >= 0x80).
        `properties` (engine/bus/properties.py) go out with MQTT 5; MQTT 3.1.1 cannot carry them."""
        if self.closed.done():
            raise MqttError("not connected")
        name = topic.encode()
        props = (publish_properties(properties) if properties else b"\x00") if self.v5 else b""
        length = 2 + len(name) + len(payload) + (2 if qos else 0) + len(props)
        if length > MAX_REMAINING_LENGTH or len(name) > 65535:
            raise OverflowError(f"a PUBLISH of {length} bytes (topic {len(name)}) does not fit in an MQTT packet")
        out = self._out
        out.append(bytes((0x30 | (qos << 1) | int(retain),)) + (
            bytes((length,)) if length < 128 else _varint(length)) + len(name).to_bytes(2, "big") + name)
        future = None
        if qos:
            packet_id = self._next_id()
            out.append(packet_id.to_bytes(2, "big"))
            if token is None:
                future = self._pending[packet_id] = self._loop.create_future()
            else:
                self._tokens[packet_id] = token
        if props:
            out.append(props)
        out.append(payload)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return future

    def subscribe(self, topics: list[tuple[str, int]], no_local: bool = True) -> asyncio.Future[list[int]]:
        packet_id = self._next_id()
        body = struct.pack("!H", packet_id) + (b"\x00" if self.v5 else b"")
        for topic, qos in topics:
            options = qos | (0x04 if self.v5 and no_local else 0)
            body += _string(topic) + bytes([options])
        future = self._pending[packet_id] = self._loop.create_future()
        self._write(_packet(SUBSCRIBE, 0x02, body))
        return future

    def unsubscribe(self, topics: list[str]) -> asyncio.Future[Any]:
        packet_id = self._next_id()
        body = struct.pack("!H", packet_id) + (b"\x00" if self.v5 else b"") + b"".join(_string(t) for t in topics)
        future = self._pending[packet_id] = self._loop.create_future()
        self._write(_packet(UNSUBSCRIBE, 0x02, body))
        return future

    async def disconnect(self) -> None:
        if not self.closed.done() and self.transport is not None:
            self._write(_packet(DISCONNECT, 0, b"\x00" if self.v5 else b""))
            self._flush()
            self.transport.close()
            await asyncio.shield(self.closed)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # --- writing ------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self._out))
        self._out.clear()

    # --- protocol callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._last_rx = self._loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        error = MqttError(f"connection lost: {exc}" if exc else "connection closed by the broker")
        for future in (*self._pending.values(), self._connack):
            if not future.done():
                future.set_exception(error)
        if self._connack.done() and not self._connack.cancelled():
            self._connack.exception()  # seen: a lost connection is reported through `closed`
        self._pending.clear()
        self._tokens.clear()  # their owner resends what was not acknowledged
        if self._keepalive_task:
            self._keepalive_task.cancel()
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._broken:
            return  # closing after a protocol error: nothing more is read
        self._last_rx = self._loop.time()
        buf = self._buffer
        buf += data
        pos, end = 0, len(buf)
        while end - pos >= 2:
            # remaining length: 1 to 4 bytes, 7 bits each, low first
            length, multiplier, i, complete = 0, 1, pos + 1, False
            while i < end and i - pos <= 4:
                byte = buf[i]
                i += 1
                length += (byte & 0x7F) * multiplier
                if not byte & 0x80:
                    complete = True
                    break
                multiplier *= 128
            if not complete:
                if i - pos > 4:
                    self._protocol_error("malformed remaining length")
                    return
                break  # the rest of the header is still on its way
            if end - i < length:
                break
            try:
                self._handle(buf[pos] >> 4, buf[pos] & 0x0F, bytes(buf[i : i + length]))
            except (struct.error, IndexError):
                self._protocol_error(f"malformed packet of type {buf[pos] >> 4}")
                return
            except MalformedPacket as exc:
                self._protocol_error(f"malformed packet of type {buf[pos] >> 4}: {exc}", exc.code)
                return
            pos = i + length
        if pos:
            del buf[:pos]

    def _protocol_error(self, why: str, code: int = 0x81) -> None:
        """MQTT 5 §4.13: DISCONNECT with the reason code (Malformed Packet, Protocol Error, ...), then close."""
        self._broken = True
        self.protocol_error = why
        if self.transport is not None:
            if self.v5 and self._connack.done():
                self._write(_packet(DISCONNECT, 0, bytes((code, 0))))
                self._flush()
            self.transport.close()
        if not self._connack.done():
            self._connack.set_exception(MqttError(why))
            self._connack.exception()  # seen here, whether or not connect() is still waiting

    def _handle(self, kind: int, flags: int, body: bytes) -> None:
        if kind == PUBLISH:
            self._on_publish(flags, body)
        elif kind in (PUBACK, PUBCOMP):
            packet_id = struct.unpack_from("!H", body)[0]
            self._published(packet_id, body[2] if len(body) > 2 else 0)  # MQTT 3.1.1: no reason code
        elif kind == PUBREC:
            packet_id = struct.unpack_from("!H", body)[0]
            code = body[2] if len(body) > 2 else 0
            if code >= 0x80:  # refused: the QoS 2 exchange ends here, without PUBREL
                self._published(packet_id, code)
            else:
                self._write(_packet(PUBREL, 0x02, struct.pack("!H", packet_id)))
        elif kind == PUBREL:
            packet_id = struct.unpack_from("!H", body)[0]
            self._qos2_in.discard(packet_id)
            self._write(_packet(PUBCOMP, 0, struct.pack("!H", packet_id)))
        elif kind == SUBACK:
            packet_id = struct.unpack_from("!H", body)[0]
            start = 2
            if self.v5:
                plen, start = _read_varint(body, 2)
                start += plen
            self._resolve(packet_id, list(body[start:]))
        elif kind == UNSUBACK:
            self._resolve(struct.unpack_from("!H", body)[0], None)
        elif kind == CONNACK:
            code = body[1] if len(body) > 1 else 0xFF
            if code == 0:
                if self.v5 and len(body) > 2:
                    self.max_packet_size = connack_max_packet_size(body, 2)
                self._connack.set_result(None)
            else:
                reasons = _CONNACK_V5 if self.v5 else _CONNACK_V4
                self._connack.set_exception(MqttError(f"the broker refused the connection: {reasons.get(code, code)}"))
        elif kind == DISCONNECT:
            self.disconnect_reason = body[0] if body else 0  # MQTT 5 only; 3.1.1 brokers just close
            if self.transport is not None:
                self.transport.close()

    def _published(self, packet_id: int, code: int) -> None:
        token = self._tokens.pop(packet_id, _NO_TOKEN)
        if token is not _NO_TOKEN:
            self.on_ack(token, code)
        elif code >= 0x80:
            future = self._pending.pop(packet_id, None)
            if future is not None and not future.done():
                future.set_exception(MqttError(f"the broker refused the message: {publish_refusal(code)}"))
        else:
            self._resolve(packet_id, None)

    def _resolve(self, packet_id: int, value: Any) -> None:
        future = self._pending.pop(packet_id, None)
        if future is not None and not future.done():
            future.set_result(value)

    def _on_publish(self, flags: int, body: bytes) -> None:
        qos = (flags >> 1) & 0x03
        (tlen,) = struct.unpack_from("!H", body)
        topic = body[2 : 2 + tlen].decode("utf-8", "replace")
        pos = 2 + tlen
        packet_id = 0
        if qos:
            (packet_id,) = struct.unpack_from("!H", body, pos)
            pos += 2
        properties = None
        if self.v5:
            if body[pos] == 0:  # no properties (the common case): nothing more to read or allocate
                pos += 1
            else:
                plen, pos = read_varint_checked(body, pos, len(body))
                end = pos + plen
                if end > len(body):
                    raise MalformedPacket(f"properties of {plen} bytes run past the PUBLISH")
                properties = parse_publish_properties(body, pos, end) or None
                pos = end
                if properties is not None and TOPIC_ALIAS in properties:
                    topic = self._aliases.resolve(properties.pop(TOPIC_ALIAS), topic)
                    properties = properties or None
                    tlen = len(topic)
            if not tlen:
                raise MalformedPacket("a PUBLISH with an empty topic and no topic alias", PROTOCOL_ERROR)
        if qos == 2:
            if packet_id in self._qos2_in:  # a resent QoS 2 message we already delivered
                self._write(_packet(PUBREC, 0, struct.pack("!H", packet_id)))
                return
            self._qos2_in.add(packet_id)
        try:
            if self.with_properties:
                self.on_message(topic, body[pos:], qos, bool(flags & 0x01), properties)
            else:
                self.on_message(topic, body[pos:], qos, bool(flags & 0x01))
        finally:
            if qos == 1:
                self._write(_packet(PUBACK, 0, struct.pack("!H", packet_id)))
            elif qos == 2:
                self._write(_packet(PUBREC, 0, struct.pack("!H", packet_id)))

    async def _keepalive(self, keepalive: int) -> None:
        if keepalive <= 0:
            return
        while True:
            await asyncio.sleep(keepalive / 2)
            if self._loop.time() - self._last_rx > keepalive * 1.5:
                # no packet, not even a PINGRESP: the connection is half-open
                self.timed_out = True
                if self.transport is not None:
                    self.transport.abort()
                return
            self._write(_packet(PINGREQ, 0, b""))

