"""Sockets that never become charge points: silent and slow ones are closed at websocket.idle_timeout,
huge request lines and headers are refused before they are parsed, sockets waiting for their upgrade
are capped, and a canary charge point keeps its round trips through all of it."""

from __future__ import annotations

import asyncio

import pytest
import websockets

from engine.httpguard import HeadLimits
from engine.serve import bind_socket, start_server
from engine.config.types import Bind
from tests.ocpp_support import Backend, eventually, recv_json, running_gateway, subscribed
from tests.servers import free_port

pytestmark = pytest.mark.timeout(90)

UPGRADE = ("Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp1.6\r\n")


async def heartbeat(ws, backend: Backend, cid: str, n: int) -> None:
    """One full round trip of the canary: CALL up to the backend, its CALLRESULT back down."""
    await ws.send(f'[2,"hb{n}","Heartbeat",{{}}]')
    await backend.answer(f"ocpp/cp/{cid}", {"currentTime": "2026-01-01T00:00:00Z"}, timeout=10)
    assert await recv_json(ws, 10) == [3, f"hb{n}", {"currentTime": "2026-01-01T00:00:00Z"}]


async def answer_of(port: int, request: bytes, timeout: float = 20) -> bytes:
    """Send `request` (as much as the server takes) and read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        try:
            await asyncio.wait_for(writer.drain(), timeout)
        except (ConnectionError, asyncio.TimeoutError):
            pass  # the server answered and closed before taking it all
        return await asyncio.wait_for(reader.read(), timeout)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


async def closed_by_server(reader: asyncio.StreamReader, timeout: float = 20) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), timeout) == b""
    except ConnectionResetError:
        return True


async def test_silent_and_slowloris_sockets_are_closed_at_idle_timeout(tmp_path, mosquitto):
    conf = "gateway.ocpp.listeners.ws.default.websocket.idle_timeout = 500ms\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("CANARY"), subprotocols=["ocpp1.6"]) as ws:
            await subscribed(gw, "CANARY")
            silent = [await asyncio.open_connection("127.0.0.1", gw.ocpp_port) for _ in range(5)]
            slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", gw.ocpp_port)

            async def slowloris() -> None:  # a request head that never ends, one byte at a time
                for ch in f"GET /ocpp/SLOW HTTP/1.1\r\n{UPGRADE}X-Pad: " + "a" * 1000:
                    if slow_writer.is_closing():
                        return
                    slow_writer.write(ch.encode())
                    await asyncio.sleep(0.05)

            dripping = asyncio.create_task(slowloris())
            for reader, _ in silent:
                assert await closed_by_server(reader)
            assert await closed_by_server(slow_reader)
            dripping.cancel()
            await heartbeat(ws, backend, "CANARY", 1)  # the charge point connected all along is untouched
            assert gw.ctx.metrics.refused["handshake_timeout"] == 6
            listener = gw.node.listeners["ocpp:ws:default"]
            await eventually(lambda: listener.pending.count == 0)
            for _, writer in silent:
                writer.close()
            slow_writer.close()
        backend.close()


async def test_an_upgrade_that_never_completes_is_closed_too(tmp_path, mosquitto):
    """The head arrived and the WebSocket protocol took over, but the handshake is still not done at
    the timeout (an authenticator that never answers, say; here the handshake waits for ever)."""
    conf = "gateway.ocpp.listeners.ws.default.websocket.idle_timeout = 500ms\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        app = gw.node.listeners["ocpp:ws:default"].app
        hang = asyncio.Event()

        async def slow_handshake(scope, transport):
            await hang.wait()
            raise AssertionError("never reached")

        app.handshake = slow_handshake
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.ocpp_port)
        writer.write(f"GET /ocpp/HANGS HTTP/1.1\r\n{UPGRADE}\r\n".encode())
        assert await closed_by_server(reader)
        assert gw.ctx.metrics.refused["handshake_timeout"] == 1
        writer.close()
        assert app.admitting == 0


async def test_huge_url_414_and_huge_headers_431_while_a_canary_works(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("CANARY"), subprotocols=["ocpp1.6"]) as ws:
            await subscribed(gw, "CANARY")
            huge_url = b"GET /ocpp/" + b"a" * (2 * 1024 * 1024) + b" HTTP/1.1\r\n" + UPGRADE.encode() + b"\r\n"
            answer = await answer_of(gw.ocpp_port, huge_url)
            assert answer.startswith(b"HTTP/1.1 414 "), answer[:100]
            await heartbeat(ws, backend, "CANARY", 1)
            huge_headers = (f"GET /ocpp/BIG HTTP/1.1\r\n{UPGRADE}".encode()
                            + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(1024)) + b"\r\n")
            answer = await answer_of(gw.ocpp_port, huge_headers)
            assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
            one_header = f"GET /ocpp/BIG HTTP/1.1\r\n{UPGRADE}X-Big: ".encode() + b"v" * (4 * 1024 * 1024) + b"\r\n\r\n"
            answer = await answer_of(gw.ocpp_port, one_header)
            assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
            await heartbeat(ws, backend, "CANARY", 2)
            # just under the caps: served as usual
            url = "/ocpp/" + "b" * 200 + "?" + "q" * 7000
            async with websockets.connect(f"ws://127.0.0.1:{gw.ocpp_port}{url}", subprotocols=["ocpp1.6"],
                                          additional_headers={"X-Pad": "p" * 8000}):
                assert "b" * 200 in gw.ctx.sessions
            m = gw.ctx.metrics.refused
            assert m["uri_too_long"] == 1 and m["headers_too_large"] == 2
            assert not gw.events.named("client_connack")[2:]  # nothing but the two charge points
        backend.close()


async def test_pending_handshakes_are_capped_and_counted(tmp_path, mosquitto):
    port = free_port()
    # cap: max_connections + max_conn_rate x idle_timeout = 1 + 1 x 30 = 31 sockets waiting at once
    conf = (f'gateway.ocpp.listeners.ws.default {{ bind = "127.0.0.1:{port}", max_connections = 1, max_conn_rate = 1, '
            "websocket.idle_timeout = 30s }\n")
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        listener = gw.node.listeners["ocpp:ws:default"]
        silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(31)]
        await eventually(lambda: listener.pending.count == 31)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await closed_by_server(reader, 10)  # the 32nd is closed as it is accepted
        assert gw.ctx.metrics.refused["max_connections"] == 1
        for _, w in silent:
            w.close()
        writer.close()
        await eventually(lambda: listener.pending.count == 0)
        async with websockets.connect(f"ws://127.0.0.1:{port}/ocpp/AFTER", subprotocols=["ocpp1.6"]):
            assert list(gw.ctx.sessions) == ["AFTER"]


async def test_cid_that_is_not_utf8_is_refused(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        for cid in ("%ff", "%fe", "ab%c3", "%ed%a0%80"):
            answer = await answer_of(gw.ocpp_port, f"GET /ocpp/{cid} HTTP/1.1\r\n{UPGRADE}\r\n".encode())
            assert answer.startswith(b"HTTP/1.1 400 ") and b"not valid UTF-8" in answer, answer
        async with websockets.connect(gw.url("%C3%A9t%C3%A9"), subprotocols=["ocpp1.6"]):
            assert list(gw.ctx.sessions) == ["été"]  # valid UTF-8 is decoded as before
        connacks = [e["reason_code"] for e in gw.events.named("client_connack")]
        assert connacks == ["client_identifier_not_valid"] * 4 + ["success"]


async def test_check_path_refuses_a_replacement_character(tmp_path, mosquitto):
    """The ASGI path (decoded leniently by uvicorn) is checked again in the handshake."""
    from engine.ocpp.listener import Refusal

    async with running_gateway(tmp_path, mosquitto.port) as gw:
        app = gw.node.listeners["ocpp:ws:default"].app
        with pytest.raises(Refusal) as info:
            app.check_path("/ocpp/a\ufffd")
        assert info.value.status == 400 and "UTF-8" in info.value.message


async def test_http10_upgrade_is_refused(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        answer = await answer_of(gw.ocpp_port, f"GET /ocpp/OLD HTTP/1.0\r\n{UPGRADE}\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 400 ") and b"HTTP/1.1" in answer.partition(b"\r\n\r\n")[2], answer
        assert not gw.ctx.sessions
        assert gw.ctx.metrics.refused["protocol_error"] == 1


async def test_admin_style_server_gets_the_same_limits():
    """`start_server` without a protocol of its own (the admin API) times heads out and caps them."""
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    port = free_port()
    sock = bind_socket(Bind("127.0.0.1", port), "test")
    server = await start_server(app, sock, limits=HeadLimits(timeout=0.5, max_request_line=1024, max_header_size=2048))
    try:
        refusals = server.config.http_protocol_class.refusals
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
        assert await closed_by_server(reader)
        writer.close()
        # a kept-alive connection: the next head is due within the timeout too
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200 ")
        writer.write(b"GET / HT")
        assert await closed_by_server(reader)
        writer.close()
        assert (await answer_of(port, b"GET /" + b"x" * 5000 + b" HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 414 ")
        assert (await answer_of(port, b"GET / HTTP/1.1\r\nX: " + b"y" * 5000 + b"\r\n\r\n")).startswith(b"HTTP/1.1 431 ")
        assert (await answer_of(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).endswith(b"ok")
        assert refusals == {"handshake_timeout": 2, "uri_too_long": 1, "headers_too_large": 1}
    finally:
        await server.shutdown()
        sock.close()


async def test_bad_requests_are_counted_and_logged_once_per_period(caplog):
    """uvicorn would log a WARNING per bad request: a flood of them is one line (and a counter)."""
    import logging

    async def app(scope, receive, send):
        raise AssertionError("no bad request reaches the app")

    port = free_port()
    sock = bind_socket(Bind("127.0.0.1", port), "test")
    server = await start_server(app, sock)
    try:
        with caplog.at_level(logging.INFO):
            for i in range(30):
                answer = await answer_of(port, b"GET / HTTP/1.1\r\nBad Header\x01: %d\r\n\r\n" % i)
                assert answer.startswith(b"HTTP/1.1 400 "), answer
        lines = [r for r in caplog.records if "Invalid HTTP request" in r.getMessage()]
        assert len(lines) <= 1 and "Traceback" not in caplog.text
        assert server.config.http_protocol_class.refusals == {"bad_request": 30}
    finally:
        await server.shutdown()
        sock.close()


async def test_admin_listener_limits_come_from_its_keys(tmp_path, mosquitto):
    """dashboard.listeners.http.{idle_timeout, max_request_line_length, max_header_size} reach the admin API."""
    conf = ("dashboard.listeners.http { idle_timeout = 300ms, max_request_line_length = 512,"
            " max_header_size = 2KB }\n")
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        port = gw.admin_port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/v5/status HTTP/1.1\r\n")  # never finished
        assert await closed_by_server(reader)
        writer.close()
        assert (await answer_of(port, b"GET /" + b"x" * 600 + b" HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 414 ")
        assert (await answer_of(port, b"GET / HTTP/1.1\r\nX: " + b"y" * 3000 + b"\r\n\r\n")).startswith(b"HTTP/1.1 431 ")
        # below the caps the API answers as usual (here: asks for credentials)
        answer = await answer_of(port, b"GET /api/v5/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 401 "), answer


async def test_a_body_arriving_with_its_head_is_read_in_full():
    """A chunk larger than the head's allowance that holds a whole head and the start of a body: the body
    is all the app's, and the kept-alive connection serves the next request."""
    async def app(scope, receive, send):
        size, more = 0, True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"%d" % size
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    port = free_port()
    sock = bind_socket(Bind("127.0.0.1", port), "test")
    server = await start_server(app, sock, limits=HeadLimits(timeout=5, max_request_line=1024, max_header_size=2048))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = b"x" * 100_000
        writer.write(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert await asyncio.wait_for(reader.readexactly(6), 20) == b"100000"
        writer.write(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)).startswith(b"HTTP/1.1 200 ")
        assert await asyncio.wait_for(reader.readexactly(1), 20) == b"2"
        writer.close()
    finally:
        await server.shutdown()
        sock.close()
