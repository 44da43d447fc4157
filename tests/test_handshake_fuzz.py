"""Hostile handshakes (hypothesis): random request lines, headers, paths and subprotocol lists against a
real listener. Each gets a well-formed HTTP answer (a refusal or a 101) or, if it never finished its
head, is closed at websocket.idle_timeout; never a 500, a traceback or a hang; and a canary charge
point keeps its Heartbeat round trips throughout."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import string

import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.ocpp_support import Backend, recv_json, running_gateway, subscribed

pytestmark = pytest.mark.timeout(300)

EXPECTED = {101, 400, 401, 403, 404, 405, 414, 426, 431, 503}
HEAD = re.compile(rb"HTTP/1\.1 (\d{3}) [^\r\n]*\r\n")

safe = string.ascii_lowercase + string.digits + "-_.~!$&'()*,;=:@"  # never "CANARY": no upper case
path_piece = st.one_of(
    st.text(alphabet=safe, max_size=12),
    st.sampled_from(["%ff", "%fe", "%2F", "%00", "%C3%A9", "%", "%g1", "+", "#", "?", "/", "//", "..", "%20", "\u00e9"]),
)
paths = st.one_of(
    st.lists(path_piece, max_size=8).map(lambda parts: "/ocpp/" + "".join(parts)),
    st.lists(path_piece, max_size=5).map(lambda parts: "/" + "".join(parts)),
    st.integers(1, 40_000).map(lambda n: "/ocpp/" + "a" * n),  # around the 8 KB cap
)
subprotocol_lists = st.one_of(
    st.lists(st.sampled_from(["ocpp1.6", "ocpp2.0.1", "ocpp2.1", "ocpp1.5", "mqtt", "", " ", "OCPP1.6"]), max_size=5)
    .map(", ".join),
    st.text(alphabet=string.printable.replace("\r", "").replace("\n", ""), max_size=40),
)
header_name = st.text(alphabet=string.ascii_letters + string.digits + "-_:() @", min_size=0, max_size=20)
header_value = st.one_of(
    st.text(alphabet=string.printable.replace("\r", "").replace("\n", ""), max_size=60),
    st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"").decode("latin-1")),
    st.integers(1, 30_000).map(lambda n: "v" * n),  # around the 16 KB cap
)


@st.composite
def requests(draw) -> bytes:
    method = draw(st.sampled_from(["GET", "GET", "GET", "POST", "HEAD", "OPTIONS", "CONNECT", "G\x00T", ""]))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/9", "", "http/1.1"]))
    headers: list[tuple[str, str]] = [("Host", "x")]
    if draw(st.booleans()):
        headers.append(("Upgrade", draw(st.sampled_from(["websocket", "WebSocket", "h2c", "", "websocket, x"]))))
    if draw(st.booleans()):
        headers.append(("Connection", draw(st.sampled_from(["Upgrade", "upgrade, keep-alive", "close", "", "Upgrade,"]))))
    if draw(st.integers(0, 3)):
        headers.append(("Sec-WebSocket-Key", draw(st.sampled_from(["dGhlIHNhbXBsZSBub25jZQ==", "short", "", "!!!!"]))))
    if draw(st.integers(0, 3)):
        headers.append(("Sec-WebSocket-Version", draw(st.sampled_from(["13", "8", "", "13, 13", "x"]))))
    for _ in range(draw(st.integers(0, 2))):
        headers.append(("Sec-WebSocket-Protocol", draw(subprotocol_lists)))
    headers += draw(st.lists(st.tuples(header_name, header_value), max_size=4))
    if draw(st.integers(0, 9)) == 0:
        headers.append(("Content-Length", draw(st.sampled_from(["0", "5", "-1", "99999999999999999999", "x"]))))
    head = f"{method} {draw(paths)} {version}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers)
    finished = draw(st.integers(0, 19)) > 0  # now and then a head that never ends
    return head.encode("latin-1") + (b"\r\n" if finished else b"")


def exchange(port: int, request: bytes) -> tuple[int | None, bytes]:
    """(status, head) of the answer, or (None, b"") if the server closed without one. Raises on a hang."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it took everything: the answer may still be there
        received = b""
        while b"\r\n\r\n" not in received:
            try:
                chunk = sock.recv(65536)  # socket.timeout (10 s) here is a hang: the test fails
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                break
            received += chunk
    if not received:
        return None, b""
    match = HEAD.match(received)
    assert match, f"not an HTTP answer: {received[:200]!r} to {request[:200]!r}"
    return int(match.group(1)), received.partition(b"\r\n\r\n")[0]


class Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_hostile_handshakes_get_http_answers_and_the_canary_keeps_going(tmp_path, mosquitto):
    conf = "gateway.ocpp.listeners.ws.default.websocket.idle_timeout = 1s\n"
    errors = Errors()
    for name in ("uvicorn", "ocppgw", "asyncio"):
        logging.getLogger(name).addHandler(errors)
    try:
        async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
            backend = Backend(mosquitto.port)
            loop = asyncio.get_running_loop()
            async with websockets.connect(gw.url("CANARY"), subprotocols=["ocpp1.6"]) as ws:
                await subscribed(gw, "CANARY")
                rounds = 0

                async def heartbeat() -> None:
                    nonlocal rounds
                    rounds += 1
                    await ws.send(f'[2,"hb{rounds}","Heartbeat",{{}}]')
                    await backend.answer("ocpp/cp/CANARY", {"currentTime": "2026-01-01T00:00:00Z"}, timeout=10)
                    assert (await recv_json(ws, 10))[:2] == [3, f"hb{rounds}"]

                seen: set[int | None] = set()

                @settings(max_examples=80, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
                @given(requests())
                def one(request: bytes) -> None:
                    status, head = exchange(gw.ocpp_port, request)
                    seen.add(status)
                    assert status is None or status in EXPECTED, (status, head, request[:300])
                    asyncio.run_coroutine_threadsafe(heartbeat(), loop).result(30)

                await asyncio.to_thread(one)
                assert rounds >= 80 and "CANARY" in gw.ctx.sessions
                assert seen - {None}, seen  # some answers at all (not just closes)
            backend.close()
        assert not [r.getMessage() for r in errors.records], [r.getMessage() for r in errors.records]
    finally:
        for name in ("uvicorn", "ocppgw", "asyncio"):
            logging.getLogger(name).removeHandler(errors)
