"""The accept path of an OCPP listener (engine.ocpp.accept): PROXY protocol header, access_rules,
websocket origin checks, tcp_options and the TLS keys, against a real gateway on real sockets."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import socket
import ssl
import struct
import subprocess

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from engine.config.loader import load_settings
from engine.ocpp import tls
from engine.ocpp.proxy_protocol import V2_SIGNATURE
from tests.certs import CertAuthority
from tests.gateway import GatewayProcess
from tests.ocpp_support import eventually, running_gateway
from tests.servers import free_port

pytestmark = pytest.mark.timeout(90)
P = ["ocpp1.6"]


async def closed_without_answer(port: int, source: str = "127.0.0.1", send: bytes = b"", timeout: float = 20) -> bool:
    """True if the listener closes the connection without sending a byte (within `timeout`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        if send:
            writer.write(send)
        data = await asyncio.wait_for(reader.read(100), timeout)
        return data == b""
    except ConnectionResetError:
        return True
    finally:
        writer.transport.abort()


def proxied_socket(port: int, header: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(header)
    sock.setblocking(False)
    return sock


async def test_access_rules_refuse_at_accept_before_anything_else(tmp_path, mosquitto):
    port = free_port()
    conf = f"""gateway.ocpp.listeners.ws.default {{ bind = "127.0.0.1:{port}",
      access_rules = ["deny 127.0.0.2", "allow 127.0.0.0/24", "deny all"] }}"""
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        url = f"ws://127.0.0.1:{port}/ocpp/"
        async with websockets.connect(url + "CP1", subprotocols=P):
            pass
        async with websockets.connect(url + "CP3", subprotocols=P, local_addr=("127.0.0.3", 0)):
            pass
        assert await closed_without_answer(port, "127.0.0.2", b"GET /ocpp/CP2 HTTP/1.1\r\n\r\n")
        assert await closed_without_answer(port, "127.0.1.1")  # "deny all"
        assert gw.ctx.metrics.refused["access_denied"] == 2
        assert "CP1" not in gw.ctx.sessions  # closed again
        # a reload applies to the connections accepted after it
        listener = gw.node.listeners["ocpp:ws:default"]
        listener.apply(dataclasses.replace(listener.settings, access_rules=["allow all"]))
        async with websockets.connect(url + "CP2", subprotocols=P, local_addr=("127.0.0.2", 0)):
            assert gw.ctx.sessions["CP2"].peer[0] == "127.0.0.2"


async def test_check_origins(tmp_path, mosquitto):
    port, other = free_port(), free_port()
    conf = f"""gateway.ocpp.listeners.ws {{
      default {{ bind = "127.0.0.1:{port}",
                 websocket {{ check_origin_enable = true, allow_origin_absence = false,
                              check_origins = "https://csms.example, https://ops.example:8443" }} }}
      lax {{ bind = "127.0.0.1:{other}", websocket {{ check_origin_enable = true, check_origins = ["https://csms.example"] }} }}
    }}"""
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        url = f"ws://127.0.0.1:{port}/ocpp/"
        async with websockets.connect(url + "CP1", subprotocols=P, origin="https://csms.example"):
            pass
        async with websockets.connect(url + "CP2", subprotocols=P, origin="https://ops.example:8443"):
            pass
        for origin in ("https://evil.example", None):
            with pytest.raises(InvalidStatus) as info:
                await websockets.connect(url + "CP3", subprotocols=P, origin=origin)
            assert info.value.response.status_code == 403
        assert b"check_origins" in info.value.response.body or b"Origin" in info.value.response.body
        assert gw.ctx.metrics.refused["origin_not_allowed"] == 2
        # allow_origin_absence (EMQX's default true): a charge point sends no Origin
        async with websockets.connect(f"ws://127.0.0.1:{other}/ocpp/CP4", subprotocols=P):
            pass
        with pytest.raises(InvalidStatus):
            await websockets.connect(f"ws://127.0.0.1:{other}/ocpp/CP5", subprotocols=P, origin="https://evil.example")
        connack = [e for e in gw.events.named("client_connack") if e.get("reason_code") == "origin_not_allowed"]
        assert len(connack) == 3


async def test_proxy_protocol_header_names_the_client(tmp_path, mosquitto, caplog):
    port = free_port()
    conf = f"""gateway.ocpp.listeners.ws.default {{ bind = "127.0.0.1:{port}", proxy_protocol = true,
      proxy_protocol_timeout = 1s, max_conn_rate_per_source = 1, access_rules = ["deny 192.0.2.66", "allow all"] }}"""
    caplog.set_level(logging.WARNING, "ocppgw.listener")
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        url = f"ws://127.0.0.1:{port}/ocpp/"
        v1 = f"PROXY TCP4 192.0.2.7 127.0.0.1 51000 {port}\r\n".encode()
        async with websockets.connect(url + "CP1", subprotocols=P, sock=proxied_socket(port, v1)):
            session = gw.ctx.sessions["CP1"]
            assert session.peer == ("192.0.2.7", 51000)
            assert session.info()["ip_address"] == "192.0.2.7"
        connected = gw.events.named("client_connected")
        assert connected and connected[-1]["peername"].startswith("192.0.2.7:")
        # the per-source limit counts the client's address, not the balancer's (loopback, exempt)
        with pytest.raises(InvalidStatus) as info:
            await websockets.connect(url + "CP2", subprotocols=P, sock=proxied_socket(port, v1))
        assert info.value.response.status_code == 429
        block = bytes([198, 51, 100, 9, 127, 0, 0, 1]) + struct.pack("!HH", 4242, port)
        v2 = V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(block)) + block
        async with websockets.connect(url + "CP2", subprotocols=P, sock=proxied_socket(port, v2)):
            assert gw.ctx.sessions["CP2"].peer == ("198.51.100.9", 4242)
        # v2 LOCAL (a balancer's health check): the connection's own address stands
        local = V2_SIGNATURE + bytes([0x20, 0x00, 0, 0])
        async with websockets.connect(url + "CP3", subprotocols=P, sock=proxied_socket(port, local)):
            assert gw.ctx.sessions["CP3"].peer[0] == "127.0.0.1"
        # access_rules see the client's address
        assert await closed_without_answer(port, send=b"PROXY TCP4 192.0.2.66 127.0.0.1 1 2\r\nGET / HTTP/1.1\r\n\r\n")
        # no header: closed, counted, one log line per period
        for _ in range(3):
            assert await closed_without_answer(port, send=b"GET /ocpp/CP4 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await closed_without_answer(port)  # silent: closed at proxy_protocol_timeout
        refused = gw.ctx.metrics.refused
        assert refused["proxy_protocol_error"] == 3 and refused["proxy_protocol_timeout"] == 1
        assert refused["access_denied"] == 1
        lines = [r.getMessage() for r in caplog.records if "PROXY protocol header" in r.getMessage()]
        assert len(lines) == 2, lines  # one per reason within the period
        assert "bad PROXY protocol header: not a PROXY protocol header" in lines[0]
        await eventually(lambda: listener_pending(gw) == 0)


def listener_pending(gw) -> int:
    return sum(x.pending.count for x in gw.node.listeners.values())


async def test_without_proxy_protocol_a_header_is_just_bad_http(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.ocpp_port)
        writer.write(b"PROXY TCP4 192.0.2.7 127.0.0.1 1 2\r\nGET /ocpp/CP1 HTTP/1.1\r\n\r\n")
        line = await asyncio.wait_for(reader.readline(), 10)
        writer.transport.abort()
        assert line.startswith(b"HTTP/1.1 400")
        assert gw.ctx.metrics.refused["bad_request"] == 1


async def test_tcp_options_apply_to_accepted_connections(tmp_path, mosquitto):
    port, plain = free_port(), free_port()
    conf = f"""gateway.ocpp.listeners.ws.default {{ bind = "127.0.0.1:{port}",
      tcp_options {{ nodelay = false, keepalive = "240,30,5", sndbuf = 64KB, recbuf = 64KB, backlog = 17,
                     reuseaddr = false }} }}
    gateway.ocpp.listeners.ws.plain.bind = "127.0.0.1:{plain}" """
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        listening = gw.node.listeners["ocpp:ws:default"].sock
        assert listening.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
        assert gw.node.listeners["ocpp:ws:plain"].sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        # the accept queue: ss shows a listening socket's backlog as its Send-Q
        if shutil.which("ss"):  # iproute2
            ss = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
            assert ss.split()[2] == "17", ss
        async with websockets.connect(f"ws://127.0.0.1:{port}/ocpp/CP1", subprotocols=P):
            sock = gw.ctx.sessions["CP1"].transport.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 240
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 30
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 5
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 2 * 64 * 1024  # Linux doubles it
        async with websockets.connect(f"ws://127.0.0.1:{plain}/ocpp/CP2", subprotocols=P):  # defaults: nodelay on
            sock = gw.ctx.sessions["CP2"].transport.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


@pytest.fixture
def pki(tmp_path):
    (tmp_path / "pki").mkdir()
    ca = CertAuthority(tmp_path / "pki")
    return ca, ca.server()


def client_context(ca: CertAuthority, ciphers: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.cert_path))
    if ciphers:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(ciphers)
    return ctx


async def test_wss_ciphers_handshake_timeout_and_proxy_protocol_before_tls(tmp_path, mosquitto, pki):
    ca, server = pki
    port, proxied = free_port(), free_port()
    files = f'certfile = "{server.cert}", keyfile = "{server.key}"'
    conf = f"""gateway.ocpp.listeners.wss {{
      default {{ bind = "127.0.0.1:{port}",
                 ssl_options {{ {files}, ciphers = "TLS_AES_128_GCM_SHA256, ECDHE-ECDSA-AES128-GCM-SHA256",
                                handshake_timeout = 1s }} }}
      proxied {{ bind = "127.0.0.1:{proxied}", proxy_protocol = true, ssl_options {{ {files} }} }}
    }}"""
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        url = f"wss://localhost:{port}/ocpp/"
        async with websockets.connect(url + "CP1", subprotocols=P, ssl=client_context(ca, "ECDHE-ECDSA-AES128-GCM-SHA256")):
            assert gw.ctx.sessions["CP1"].listener == "ocpp:wss:default"
        with pytest.raises((ssl.SSLError, OSError, websockets.InvalidHandshake)):
            await websockets.connect(url + "CP2", subprotocols=P, ssl=client_context(ca, "ECDHE-ECDSA-AES256-GCM-SHA384"),
                                     open_timeout=10)
        async with websockets.connect(url + "CP3", subprotocols=P, ssl=client_context(ca)):  # TLS 1.3: all suites
            pass
        # a silent TLS client is closed at handshake_timeout (1s here; asyncio's own default is 60s)
        assert await closed_without_answer(port, timeout=20)
        await eventually(lambda: gw.ctx.metrics.refused["tls_handshake_timeout"] == 1)
        # PROXY header first, then TLS
        header = f"PROXY TCP6 2001:db8::5 ::1 6000 {proxied}\r\n".encode()
        async with websockets.connect(f"wss://localhost:{proxied}/ocpp/CP4", subprotocols=P, ssl=client_context(ca),
                                      sock=proxied_socket(proxied, header), server_hostname="localhost"):
            session = gw.ctx.sessions["CP4"]
            assert session.peer == ("2001:db8::5", 6000) and session.listener == "ocpp:wss:proxied"


def test_tls_options_reach_the_context(tmp_path, pki):
    ca, server = pki
    path = tmp_path / "g.conf"
    path.write_text(f"""gateway.ocpp.listeners.wss.s.ssl_options {{ certfile = "{server.cert}", keyfile = "{server.key}",
        reuse_sessions = false, honor_cipher_order = false, client_renegotiation = false }}""")
    listener = load_settings(path, {}, overlay=False).gateway.ocpp.listeners.wss["s"]
    ctx = tls.wss_context(listener)
    assert ctx.num_tickets == 0 and ctx.options & ssl.OP_NO_TICKET
    assert not ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    default = tls.server_context(listener.ssl_options.__class__(certfile=str(server.cert), keyfile=str(server.key)))
    assert default.num_tickets > 0 and default.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert not default.options & ssl.OP_NO_RENEGOTIATION


async def test_the_accept_path_in_a_gateway_process(tmp_path, pki):
    """uvloop's transports (`ocpp-gateway run`) under the PROXY header wait and the TLS handshake timeout."""
    ca, server = pki
    proxied, secure = free_port(), free_port()
    conf = f"""gateway.ocpp.listeners.ws.proxied {{ bind = "127.0.0.1:{proxied}", proxy_protocol = true,
                                                  proxy_protocol_timeout = 500ms }}
    gateway.ocpp.listeners.wss.secure {{ bind = "127.0.0.1:{secure}", proxy_protocol = true,
      ssl_options {{ certfile = "{server.cert}", keyfile = "{server.key}", handshake_timeout = 1s }} }}"""
    gw = GatewayProcess(tmp_path, conf)
    try:
        gw.start()
        assert await closed_without_answer(proxied)  # no header in time
        assert await closed_without_answer(proxied, send=b"GET / HTTP/1.1\r\n\r\n")  # not a header
        assert await closed_without_answer(secure, send=b"PROXY UNKNOWN\r\n")  # then no TLS in time
        header = f"PROXY TCP4 192.0.2.7 127.0.0.1 5000 {secure}\r\n".encode()
        async with websockets.connect(f"wss://localhost:{secure}/ocpp/CP1", subprotocols=P, ssl=client_context(ca),
                                      sock=proxied_socket(secure, header), server_hostname="localhost"):
            pass
        gw.wait_log(r"connection from 127\.0\.0\.1:\d+ closed: no PROXY protocol header within proxy_protocol_timeout")
        gw.wait_log(r"connection from 127\.0\.0\.1:\d+ closed: bad PROXY protocol header")
        async with httpx.AsyncClient(timeout=15) as http:
            url = "http://" + gw.env["OCPPGW_DASHBOARD__LISTENERS__HTTP__BIND"] + "/api/v5/prometheus/stats"
            metrics = (await http.get(url, auth=("admin", "public"))).text
        for reason in ("proxy_protocol_timeout", "proxy_protocol_error", "tls_handshake_timeout"):
            assert f'ocppgw_handshakes_refused_total{{reason="{reason}"}} 1.0' in metrics, reason
        assert "Traceback" not in "\n".join(gw.lines)
    finally:
        gw.stop()


async def test_a_proxy_header_and_the_client_hello_in_one_segment(tmp_path, mosquitto, pki):
    """The bytes after the PROXY header in the same read are the start of the TLS handshake: they
    reach TLS, not lost (a balancer may coalesce them)."""
    ca, server = pki
    port = free_port()
    conf = f"""gateway.ocpp.listeners.wss.s {{ bind = "127.0.0.1:{port}", proxy_protocol = true,
      ssl_options {{ certfile = "{server.cert}", keyfile = "{server.key}" }} }}"""
    async with running_gateway(tmp_path, mosquitto.port, conf):
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls_client = client_context(ca).wrap_bio(incoming, outgoing, server_hostname="localhost")
        with pytest.raises(ssl.SSLWantReadError):
            tls_client.do_handshake()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PROXY TCP4 192.0.2.7 127.0.0.1 5000 1\r\n" + outgoing.read())  # one write, one segment
        try:
            while True:
                data = await asyncio.wait_for(reader.read(65536), 10)
                assert data, "closed during the TLS handshake"
                incoming.write(data)
                try:
                    tls_client.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    writer.write(outgoing.read())
            writer.write(outgoing.read())
            tls_client.write(b"GET /ocpp/CP1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
            writer.write(outgoing.read())
            while True:
                incoming.write(await asyncio.wait_for(reader.read(65536), 10))
                try:
                    answer = tls_client.read(1000)
                    break
                except ssl.SSLWantReadError:
                    continue
            assert answer.startswith(b"HTTP/1.1 426")  # plain HTTP over TLS: an OCPP endpoint's answer
        finally:
            writer.transport.abort()
