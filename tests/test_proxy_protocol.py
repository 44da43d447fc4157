"""The PROXY protocol header parser (engine.ocpp.proxy_protocol): v1 and v2, and hostile input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.ocpp.proxy_protocol import MAX_V2_LENGTH, V1_MAX, V2_SIGNATURE, Header, ProxyHeaderError, parse


def v2(command: int, family: int, block: bytes, length: int | None = None) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(block) if length is None else length) + block


def v2_ipv4(src: str, sport: int, rest: bytes = b"") -> bytes:
    block = bytes(int(x) for x in src.split(".")) + bytes([127, 0, 0, 1]) + struct.pack("!HH", sport, 33033)
    return v2(1, 0x11, block + rest)


def test_v1_tcp4_tcp6_and_what_follows():
    data = b"PROXY TCP4 192.0.2.7 127.0.0.1 51000 33033\r\nGET /ocpp/CP1 HTTP/1.1\r\n"
    header = parse(data)
    assert header == Header(("192.0.2.7", 51000), data.index(b"GET"))
    header = parse(b"PROXY TCP6 2001:db8::7 ::1 4000 443\r\n")
    assert header == Header(("2001:db8::7", 4000), 37)


def test_v1_unknown_keeps_the_peer():
    assert parse(b"PROXY UNKNOWN\r\n") == Header(None, 15)
    assert parse(b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n").source is None


def test_incomplete_headers_wait_for_more():
    full = b"PROXY TCP4 192.0.2.7 127.0.0.1 51000 33033\r\n"
    for cut in range(len(full) - 1):
        assert parse(full[:cut]) is None, cut
    full2 = v2_ipv4("192.0.2.9", 5000)
    for cut in range(len(full2)):
        assert parse(full2[:cut]) is None, cut
    assert parse(full2) == Header(("192.0.2.9", 5000), len(full2))


@pytest.mark.parametrize("data, problem", [
    (b"GET /ocpp/CP1 HTTP/1.1\r\n", "not a PROXY"),  # plain HTTP on a proxy_protocol listener
    (b"\x16\x03\x01\x02\x00", "not a PROXY"),  # a TLS ClientHello
    (b"PROXX TCP4", "not a PROXY"),
    (b"PROXY TCP4 192.0.2.7 127.0.0.1 51000" + b" " * 80, "longer than"),  # no CRLF within 107 bytes
    (b"PROXY TCP4 192.0.2.7 127.0.0.1 1 2\n", "without CRLF"),
    (b"PROXY TCP5 192.0.2.7 127.0.0.1 1 2\r\n", "PROXY TCP4|TCP6"),
    (b"PROXY TCP4 192.0.2.7 127.0.0.1 1\r\n", "PROXY TCP4|TCP6"),
    (b"PROXY TCP4 ::1 127.0.0.1 1 2\r\n", "not an IPv4"),
    (b"PROXY TCP6 192.0.2.7 ::1 1 2\r\n", "not an IPv6"),
    (b"PROXY TCP4 192.0.2.7 127.0.0.1 65536 2\r\n", "not a port"),
    (b"PROXY TCP4 192.0.2.7 127.0.0.1 -1 2\r\n", "not a port"),
    (b"PROXY TCP4 192.0.2.7 127.0.0.1 0080 2\r\n", "not a port"),
    (b"PROXY TCP4 192.0.2.\xff 127.0.0.1 1 2\r\n", "not ASCII"),
    (V2_SIGNATURE[:11] + b"X", "not a PROXY"),  # bad signature
    (V2_SIGNATURE + bytes([0x10, 0x11, 0, 12]) + bytes(12), "version 1"),
    (V2_SIGNATURE + bytes([0x22, 0x11, 0, 12]) + bytes(12), "unknown command"),
    (V2_SIGNATURE + bytes([0x21, 0x41, 0, 12]), "unknown address family"),
    (V2_SIGNATURE + bytes([0x21, 0x13, 0, 12]), "unknown address family or transport"),
    (v2(1, 0x12, bytes(12)), "datagram"),
    (V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", MAX_V2_LENGTH + 1), "more than"),  # oversized
    (v2(1, 0x11, bytes(8)), "shorter than its addresses"),  # truncated address block
    (v2(1, 0x21, bytes(20)), "shorter than its addresses"),
])
def test_hostile_headers_are_errors(data, problem):
    with pytest.raises(ProxyHeaderError, match=problem):
        parse(data)


def test_v2_local_unspec_and_unix_keep_the_peer():
    assert parse(v2(0, 0x11, bytes(12))) == Header(None, 28)  # LOCAL: a balancer's health check
    assert parse(v2(1, 0x00, b"")) == Header(None, 16)
    assert parse(v2(1, 0x31, bytes(216))).source is None


def test_v2_ipv6_tlvs_and_mapped_addresses():
    block = bytes.fromhex("20010db8000000000000000000000007") + bytes(15) + b"\x01" + struct.pack("!HH", 7000, 443)
    tlv = b"\x04\x00\x02ab"  # a NOOP TLV after the addresses: skipped
    assert parse(v2(1, 0x21, block + tlv) + b"rest") == Header(("2001:db8::7", 7000), 16 + len(block) + len(tlv))
    mapped = bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 8]) + bytes(16) + struct.pack("!HH", 1, 2)
    assert parse(v2(1, 0x21, mapped)).source == ("192.0.2.8", 1)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_parse_or_fail_cleanly(data):
    """Never anything but a Header, None or ProxyHeaderError; never more than the header's bytes consumed."""
    for candidate in (data, b"PROXY " + data, V2_SIGNATURE + data):
        try:
            header = parse(candidate)
        except ProxyHeaderError:
            continue
        if header is not None:
            assert 0 < header.length <= len(candidate)
            assert header.length <= max(V1_MAX, 16 + MAX_V2_LENGTH)
