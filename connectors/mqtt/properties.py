"""MQTT 5 variable byte integers, the CONNACK properties the client reads, the PUBLISH properties it writes."""

from __future__ import annotations

import struct
from typing import Any

from engine.bus import properties as props


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def write_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _prefixed(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def publish_properties(properties: dict[str, Any] | None) -> bytes:
    """The properties of an MQTT 5 PUBLISH, length first: `properties` holds values checked by
    engine.bus.properties (b"\x00": none)."""
    if not properties:
        return b"\x00"
    out = bytearray()
    for name, value in properties.items():
        if name == props.PAYLOAD_FORMAT_INDICATOR:
            out += bytes((0x01, value))
        elif name == props.MESSAGE_EXPIRY_INTERVAL:
            out += b"\x02" + struct.pack("!I", value)
        elif name == props.CONTENT_TYPE:
            out += b"\x03" + _prefixed(value.encode())
        elif name == props.RESPONSE_TOPIC:
            out += b"\x08" + _prefixed(value.encode())
        elif name == props.CORRELATION_DATA:
            out += b"\x09" + _prefixed(value)
        elif name == props.USER_PROPERTY:
            for key, item in value:
                out += b"\x26" + _prefixed(key.encode()) + _prefixed(item.encode())
    return write_varint(len(out)) + bytes(out)


# MQTT 5 properties by identifier: how their value is encoded (CONNACK carries any of these)
_BYTE_PROPS = {0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A}
_TWO_BYTE_PROPS = {0x13, 0x21, 0x22, 0x23}
_FOUR_BYTE_PROPS = {0x02, 0x11, 0x18, 0x27}
_LENGTH_PREFIXED_PROPS = {0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F}
MAXIMUM_PACKET_SIZE = 0x27


def connack_max_packet_size(body: bytes, pos: int) -> int | None:
    """The Maximum Packet Size property of a CONNACK's properties starting at `pos` (None: not given)."""
    length, pos = read_varint(body, pos)
    end, found = pos + length, None
    while pos < end:
        prop, pos = read_varint(body, pos)
        if prop in _BYTE_PROPS:
            pos += 1
        elif prop in _TWO_BYTE_PROPS:
            pos += 2
        elif prop in _FOUR_BYTE_PROPS:
            if prop == MAXIMUM_PACKET_SIZE:
                found = struct.unpack_from("!I", body, pos)[0]
            pos += 4
        elif prop == 0x0B:  # subscription identifier: a variable byte integer
            _, pos = read_varint(body, pos)
        elif prop in _LENGTH_PREFIXED_PROPS:
            pos += 2 + struct.unpack_from("!H", body, pos)[0]
        elif prop == 0x26:  # user property: two strings
            for _ in range(2):
                pos += 2 + struct.unpack_from("!H", body, pos)[0]
        else:
            break  # unknown: stop reading, keep what was found
    return found or None


# --- PUBLISH properties the broker sends (MQTT 5 §3.3.2.3) ---------------------------------------

TOPIC_ALIAS = "Topic-Alias"
SUBSCRIPTION_IDENTIFIER = props.SUBSCRIPTION_IDENTIFIER
MALFORMED, PROTOCOL_ERROR, TOPIC_ALIAS_INVALID = 0x81, 0x82, 0x94  # DISCONNECT reason codes


class MalformedPacket(ValueError):
    """A packet from the broker that breaks MQTT: `code` is the DISCONNECT reason code to answer with."""

    def __init__(self, why: str, code: int = MALFORMED) -> None:
        super().__init__(why)
        self.code = code


def read_varint_checked(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """A variable byte integer that must end before `end` and take at most four bytes."""
    value = 0
    for shift in (0, 7, 14, 21):
        if pos >= end:
            raise MalformedPacket("a variable byte integer runs past its end")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    raise MalformedPacket("a variable byte integer longer than four bytes")


def _binary(data: bytes, pos: int, end: int, name: str) -> tuple[bytes, int]:
    if pos + 2 > end:
        raise MalformedPacket(f"{name} runs past the properties")
    stop = pos + 2 + int.from_bytes(data[pos : pos + 2], "big")
    if stop > end:
        raise MalformedPacket(f"{name} runs past the properties")
    return data[pos + 2 : stop], stop


def _utf8(data: bytes, pos: int, end: int, name: str) -> tuple[str, int]:
    raw, pos = _binary(data, pos, end, name)
    try:
        return raw.decode("utf-8"), pos
    except UnicodeDecodeError:
        raise MalformedPacket(f"{name} is not UTF-8") from None


_FIXED = {0x01: (props.PAYLOAD_FORMAT_INDICATOR, 1), 0x02: (props.MESSAGE_EXPIRY_INTERVAL, 4), 0x23: (TOPIC_ALIAS, 2)}
_TEXT = {0x03: props.CONTENT_TYPE, 0x08: props.RESPONSE_TOPIC}


def parse_publish_properties(data: bytes, pos: int, end: int) -> dict[str, Any]:
    """The properties between `pos` and `end` of a PUBLISH the broker sent, under EMQX's names
    (engine/bus/properties.py), plus `Topic-Alias` and `Subscription-Identifier` (a list). Raises
    MalformedPacket for anything MQTT 5 calls malformed or a protocol error."""
    found: dict[str, Any] = {}
    while pos < end:
        prop, pos = read_varint_checked(data, pos, end)
        if prop in _FIXED:
            name, size = _FIXED[prop]
            if pos + size > end:
                raise MalformedPacket(f"{name} runs past the properties")
            value: Any = int.from_bytes(data[pos : pos + size], "big")
            pos += size
            if name == props.PAYLOAD_FORMAT_INDICATOR and value > 1:
                raise MalformedPacket(f"{name} {value} (0 or 1)", PROTOCOL_ERROR)
        elif prop in _TEXT:
            name = _TEXT[prop]
            value, pos = _utf8(data, pos, end, name)
        elif prop == 0x09:
            name = props.CORRELATION_DATA
            value, pos = _binary(data, pos, end, name)
        elif prop == 0x26:
            key, pos = _utf8(data, pos, end, props.USER_PROPERTY)
            item, pos = _utf8(data, pos, end, props.USER_PROPERTY)
            found.setdefault(props.USER_PROPERTY, []).append((key, item))
            continue
        elif prop == 0x0B:
            number, pos = read_varint_checked(data, pos, end)
            if number == 0:
                raise MalformedPacket(f"{SUBSCRIPTION_IDENTIFIER} 0", PROTOCOL_ERROR)
            found.setdefault(SUBSCRIPTION_IDENTIFIER, []).append(number)
            continue
        else:
            raise MalformedPacket(f"property 0x{prop:02x}, which a PUBLISH cannot carry")
        if name in found:
            raise MalformedPacket(f"{name} twice", PROTOCOL_ERROR)
        found[name] = value
    return found


class TopicAliases:
    """The topic aliases a broker set on one connection (MQTT 5 §3.3.2.3.4): a topic with an alias
    sets it, an empty topic with an alias uses it."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self._topics: dict[int, str] = {}

    def resolve(self, alias: int, topic: str) -> str:
        if not 0 < alias <= self.maximum:
            raise MalformedPacket(f"topic alias {alias} (we allow 1 to {self.maximum})", TOPIC_ALIAS_INVALID)
        if topic:
            self._topics[alias] = topic
            return topic
        known = self._topics.get(alias)
        if known is None:
            raise MalformedPacket(f"topic alias {alias} used before the broker set it", PROTOCOL_ERROR)
        return known
