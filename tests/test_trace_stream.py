"""The live frame stream of one charge point (Server-Sent Events), read by real HTTP clients: frames
appear as they happen, a slow reader loses frames instead of growing the node's memory, the number
of streams is capped and a reader that goes away frees its slot."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import websockets

from tests.ocpp_support import Gateway, eventually, running_gateway

pytestmark = pytest.mark.timeout(90)

CREDS = ("admin", "public")
FRAMES = "/gateways/ocpp/clients/{}/frames"


@contextlib.asynccontextmanager
async def admin(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gw.admin_url, auth=CREDS, timeout=15) as client:
        yield client


class Events:
    """Server-Sent Events read from a streaming response, one (event, data) at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()

    async def next(self, timeout: float = 5.0) -> tuple[str, str]:
        async def read() -> tuple[str, str]:
            event, data = "message", []
            async for line in self.lines:
                if line == "":
                    if data:
                        return event, "\n".join(data)
                    event = "message"
                elif line.startswith(":"):
                    continue
                elif line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data.append(line[6:])
            raise AssertionError("the stream ended")

        return await asyncio.wait_for(read(), timeout)

    async def record(self) -> dict:
        event, data = await self.next()
        assert event == "message", (event, data)
        return orjson.loads(data)


async def test_the_live_stream_shows_frames_as_they_happen(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        # opened before the charge point connects: its frames appear when it does
        async with http.stream("GET", FRAMES.format("CP1")) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = Events(response)
            await eventually(lambda: gw.ctx.tracer.watcher_count == 1)
            # the trace API works beside it, on its own
            assert (await http.post("/trace", json={"name": "t", "type": "clientid", "clientid": "CP1"})).status_code == 200
            async with websockets.connect(gw.url("CP1"), subprotocols=["ocpp1.6"]) as ws, \
                    websockets.connect(gw.url("CP2"), subprotocols=["ocpp1.6"]) as other:
                connected = await events.record()
                assert connected["event"] == "connected" and connected["clientid"] == "CP1"
                await other.send("from CP2")  # not CP1's: never on its stream
                await asyncio.wait_for(other.recv(), 5)
                for i in range(3):
                    await ws.send(f"frame {i} ✓")
                    got = await events.record()
                    assert (got["direction"], got["frame"], got["clientid"]) == ("in", f"frame {i} ✓", "CP1")
                    answer = await asyncio.wait_for(ws.recv(), 5)
                    got = await events.record()
                    assert (got["direction"], got["frame"]) == ("out", answer)
            assert (await events.record())["event"] == "disconnected"
            recorded = (await http.get("/trace/t/download")).content.splitlines()
            assert [orjson.loads(r).get("frame") for r in recorded][1:7] == [
                f for i in range(3) for f in (f"frame {i} ✓", orjson.loads(recorded[2 + 2 * i])["frame"])]
        await eventually(lambda: gw.ctx.tracer.watcher_count == 0)  # the reader went away: its slot is free
        assert (await http.delete("/trace/t")).status_code == 204
        async with websockets.connect(gw.url("CP1"), subprotocols=["ocpp1.6"]):
            await eventually(lambda: "CP1" in gw.ctx.sessions)
            assert gw.ctx.sessions["CP1"].tap is None  # nobody watching: the session pays nothing


def raw_stream(port: int, cid: str) -> socket.socket:
    """A reader that reads nothing: a tiny receive buffer, the request sent, nothing read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    auth = base64.b64encode(b"admin:public").decode()
    sock.sendall(f"GET /api/v5{FRAMES.format(cid)} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\r\n".encode())
    return sock


async def test_a_slow_reader_loses_frames_instead_of_growing_memory(tmp_path, mosquitto):
    conf = "dashboard.trace_watcher_queue = 5\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw, admin(gw) as http:
        sock = raw_stream(gw.admin_port, "CPS")
        try:
            await eventually(lambda: gw.ctx.tracer.watcher_count == 1)
            watcher = gw.ctx.tracer._watchers["CPS"][0]
            deepest = 0
            async with websockets.connect(gw.url("CPS"), subprotocols=["ocpp1.6"], max_size=None) as ws:
                for i in range(2000):  # until the socket buffers are full and frames are lost
                    await ws.send(f"{i} " + "x" * 20_000)
                    await asyncio.wait_for(ws.recv(), 5)
                    deepest = max(deepest, len(watcher.queue))
                    if gw.ctx.tracer.stats.frames_lost > 0:
                        break
                assert gw.ctx.tracer.stats.frames_lost > 0
                assert deepest <= 5
                scrape = await http.get("/prometheus/stats")
                assert "ocppgw_trace_frames_lost_total" in scrape.text
                # the stream tells its reader how many it lost, once it reads again
                sock.setblocking(False)
                loop = asyncio.get_running_loop()
                seen = b""
                while b"event: lost" not in seen:
                    chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 10)
                    assert chunk, "the stream ended"
                    seen = seen[-100:] + chunk
                lost = orjson.loads(seen.split(b"event: lost\ndata: ", 1)[1].split(b"\n", 1)[0])["lost"]
                assert lost > 0
        finally:
            sock.close()
        await eventually(lambda: gw.ctx.tracer.watcher_count == 0)


async def test_the_number_of_streams_is_capped_and_a_slot_frees(tmp_path, mosquitto):
    conf = "dashboard.max_trace_watchers = 2\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw, admin(gw) as http:
        async with http.stream("GET", FRAMES.format("A")) as first, http.stream("GET", FRAMES.format("B")) as second:
            assert first.status_code == second.status_code == 200
            third = await http.get(FRAMES.format("C"))
            assert third.status_code == 503, third.text
            assert "dashboard.max_trace_watchers" in third.json()["message"]
            assert gw.ctx.tracer.stats.watchers_refused == 1
            scrape = await http.get("/prometheus/stats")
            assert "ocppgw_trace_watchers_refused_total 1.0" in scrape.text
            assert "ocppgw_trace_watchers 2.0" in scrape.text
        await eventually(lambda: gw.ctx.tracer.watcher_count == 0)
        sock = raw_stream(gw.admin_port, "C")  # a reader that drops the connection without a word
        await eventually(lambda: gw.ctx.tracer.watcher_count == 1)
        sock.close()
        await eventually(lambda: gw.ctx.tracer.watcher_count == 0)
        async with http.stream("GET", FRAMES.format("C")) as again:
            assert again.status_code == 200
        anonymous = await httpx.AsyncClient().get(gw.admin_url + FRAMES.format("C"))
        assert anonymous.status_code == 401


async def test_an_idle_stream_sends_keepalive_comments(tmp_path, mosquitto, monkeypatch):
    from engine.admin import trace_api

    monkeypatch.setattr(trace_api, "KEEPALIVE", 0.2)  # 15 s in service
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        async with http.stream("GET", FRAMES.format("IDLE")) as response:
            lines = response.aiter_lines()

            async def keepalives(n: int) -> None:
                seen = 0
                async for line in lines:
                    seen += line == ": keepalive"
                    if seen == n:
                        return

            await asyncio.wait_for(keepalives(2), 10)
