"""MQTT 5 variable byte integers and the CONNACK properties the client reads."""

from __future__ import annotations

import struct


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


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
