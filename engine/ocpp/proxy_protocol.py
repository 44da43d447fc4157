"""The PROXY protocol header (HAProxy's `send-proxy`, v1, and `send-proxy-v2`, v2) that a TCP
balancer sends before anything else, naming the client it connects for.

`parse(data)` reads what arrived so far: None while the header is incomplete, a `Header` once it
is whole, `ProxyHeaderError` as soon as the bytes cannot be one. A header that carries no client
address (v1 `UNKNOWN`, v2 `LOCAL` or an unspecified or Unix family) has `source` None: the
connection's own peer address stands. Nothing here trusts a length beyond `MAX_V2_LENGTH`.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included (the specification's limit)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER = 16
MAX_V2_LENGTH = 2048  # address block and TLVs; HAProxy's own TLVs fit in far less


class ProxyHeaderError(ValueError):
    """Bytes that are not a valid PROXY protocol header; the message says why."""


class Header(NamedTuple):
    source: tuple[str, int] | None  # the client; None: use the connection's peer
    length: int  # bytes of the header: what follows is the client's own data


def parse(data: bytes) -> Header | None:
    if data[:1] == b"P" or not data:
        if not V1_PREFIX.startswith(data[:6]):
            raise ProxyHeaderError("not a PROXY protocol header")
        return _parse_v1(data) if len(data) >= len(V1_PREFIX) else None
    if not V2_SIGNATURE.startswith(data[:12]):
        raise ProxyHeaderError("not a PROXY protocol header")
    return _parse_v2(data)


def _parse_v1(data: bytes) -> Header | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX or b"\n" in data[:V1_MAX]:
            raise ProxyHeaderError(f"a v1 header longer than {V1_MAX} bytes or without CRLF")
        return None
    try:
        fields = data[:end].decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyHeaderError("a v1 header that is not ASCII") from None
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        return Header(None, end + 2)
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("a v1 header is PROXY TCP4|TCP6 <src> <dst> <sport> <dport>, or PROXY UNKNOWN")
    _, family, src, dst, sport, dport = fields
    version = 4 if family == "TCP4" else 6
    for text in (src, dst):
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            raise ProxyHeaderError(f"{text!r} is not an IPv{version} address") from None
        if addr.version != version:
            raise ProxyHeaderError(f"{text!r} is not an IPv{version} address")
    ports = []
    for text in (sport, dport):
        if not text.isdigit() or len(text) > 5 or (len(text) > 1 and text[0] == "0") or int(text) > 65535:
            raise ProxyHeaderError(f"{text!r} is not a port")
        ports.append(int(text))
    return Header((str(ipaddress.ip_address(src)), ports[0]), end + 2)


def _parse_v2(data: bytes) -> Header | None:
    if len(data) < V2_HEADER:
        return None
    ver_cmd, family, length = data[12], data[13], struct.unpack("!H", data[14:16])[0]
    if ver_cmd >> 4 != 2:
        raise ProxyHeaderError(f"v2 header of version {ver_cmd >> 4}")
    command = ver_cmd & 0x0F
    if command > 1:
        raise ProxyHeaderError(f"v2 header with unknown command {command}")
    if length > MAX_V2_LENGTH:
        raise ProxyHeaderError(f"v2 header of {length} bytes, more than {MAX_V2_LENGTH}")
    address_family, transport = family >> 4, family & 0x0F
    if address_family > 3 or transport > 2:
        raise ProxyHeaderError(f"v2 header with unknown address family or transport 0x{family:02x}")
    if len(data) < V2_HEADER + length:
        return None
    total = V2_HEADER + length
    if command == 0 or address_family in (0, 3):  # LOCAL (a health check), UNSPEC, AF_UNIX
        return Header(None, total)
    if transport != 1:
        raise ProxyHeaderError("v2 header for a datagram connection on a TCP listener")
    block = data[V2_HEADER:total]
    if address_family == 1:
        if length < 12:
            raise ProxyHeaderError("v2 IPv4 header shorter than its addresses")
        host = str(ipaddress.IPv4Address(block[0:4]))
        port = struct.unpack("!H", block[8:10])[0]
    else:
        if length < 36:
            raise ProxyHeaderError("v2 IPv6 header shorter than its addresses")
        addr6 = ipaddress.IPv6Address(block[0:16])
        host = str(addr6.ipv4_mapped or addr6)
        port = struct.unpack("!H", block[32:34])[0]
    return Header((host, port), total)
