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
