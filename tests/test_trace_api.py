"""The trace API (EMQX's /api/v5/trace shape): one charge point's frames, both ways, recorded to
JSON Lines byte for byte, over real sockets (charge points on WebSocket, the API over HTTP)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import orjson
import pytest
import websockets

from tests.ocpp_support import Gateway, eventually, running_gateway

pytestmark = pytest.mark.timeout(60)

CREDS = ("admin", "public")


@contextlib.asynccontextmanager
async def admin(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gw.admin_url, auth=CREDS, timeout=15) as client:
        yield client


@contextlib.asynccontextmanager
async def charge_point(gw: Gateway, cid: str) -> AsyncIterator[websockets.ClientConnection]:
    async with websockets.connect(gw.url(cid), subprotocols=["ocpp1.6"]) as ws:
        await eventually(lambda: cid in gw.ctx.sessions)
        yield ws


def records(body: bytes) -> list[dict]:
    assert body.endswith(b"\n") or body == b""
    return [orjson.loads(line) for line in body.splitlines()]


async def exchange(http: httpx.AsyncClient, ws: websockets.ClientConnection, tag: str) -> list[tuple[str, str]]:
    """Frames both ways, with text the gateway must keep as it is; returns them as seen on the wire."""
    wire: list[tuple[str, str]] = []
    garbage = f'not a frame ✓ {tag}'
    await ws.send(garbage)
    wire.append(("in", garbage))
    wire.append(("out", await asyncio.wait_for(ws.recv(), 5)))  # the gateway's CALLERROR
    call = f'[2,  "hb-{tag}" , "Heartbeat",{{ }}]'  # odd spacing: recorded as sent, not re-encoded
    await ws.send(call)
    wire.append(("in", call))
    request = asyncio.create_task(http.post(f"/gateways/ocpp/clients/{tag}/call",
                                            json={"action": "Reset", "payload": {"type": "Soft"}}))
    command = await asyncio.wait_for(ws.recv(), 5)
    wire.append(("out", command))
    answer = '[3,"%s",{"status":"Accepted"}]' % orjson.loads(command)[1]
    await ws.send(answer)
    wire.append(("in", answer))
    assert (await request).status_code == 200
    return wire


async def test_trace_records_exactly_its_charge_points_frames(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        response = await http.post("/trace", json={"name": "t1", "type": "clientid", "clientid": "CP1"})
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "running" and response.json()["clientid"] == "CP1"
        async with charge_point(gw, "CP1") as ws1, charge_point(gw, "CP2") as ws2:
            wire = await exchange(http, ws1, "CP1")
            await exchange(http, ws2, "CP2")  # not traced
            assert gw.ctx.sessions["CP2"].tap is None  # and paying nothing for CP1's trace
            wire += await exchange(http, ws1, "CP1")
        await eventually(lambda: "CP1" not in gw.ctx.sessions)
        download = await http.get("/trace/t1/download")
        assert download.status_code == 200
        assert download.headers["content-type"].startswith("application/x-ndjson")
        assert "attachment" in download.headers["content-disposition"]
        got = records(download.content)
        assert {r["clientid"] for r in got} == {"CP1"}
        assert got[0]["event"] == "connected" and got[0]["proto_ver"] == "ocpp1.6"
        assert got[-1]["event"] == "disconnected"
        assert [(r["direction"], r["frame"]) for r in got[1:-1]] == wire
        for r in got:
            datetime.strptime(r["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
        listed = (await http.get("/trace")).json()
        assert [(t["name"], t["type"], t["clientid"], t["status"]) for t in listed] == [("t1", "clientid", "CP1", "running")]
        assert listed[0]["log_size"] == {"gw-test": len(download.content)}
        assert (tmp_path / "data" / "trace" / "t1.jsonl").read_bytes() == download.content

        # the log window: whole records from a position on
        first = await http.get("/trace/t1/log", params={"position": 0, "bytes": 300})
        assert first.status_code == 200
        page = first.json()
        assert download.content.startswith(page["items"].encode()) and page["items"].endswith("\n")
        rest = (await http.get("/trace/t1/log", params={"position": page["meta"]["position"], "bytes": 10**6})).json()
        assert (page["items"] + rest["items"]).encode() == download.content

        stopped = await http.put("/trace/t1/stop")
        assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
        async with charge_point(gw, "CP1") as ws1:
            await exchange(http, ws1, "CP1")
            assert gw.ctx.sessions["CP1"].tap is None  # a stopped trace costs the session nothing
        assert (await http.get("/trace/t1/download")).content == download.content

        assert (await http.post("/trace", json={"name": "t1", "type": "clientid", "clientid": "CP9"})).status_code == 409
        assert (await http.delete("/trace/t1")).status_code == 204
        assert not (tmp_path / "data" / "trace" / "t1.jsonl").exists()
        assert (await http.get("/trace/t1/download")).status_code == 404
        for name in ("a", "b"):
            assert (await http.post("/trace", json={"name": name, "type": "clientid", "clientid": "X"})).status_code == 200
        assert (await http.delete("/trace")).status_code == 204
        assert (await http.get("/trace")).json() == []


async def test_a_trace_waits_for_its_start_and_stops_at_its_end(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        start = time.time() + 3.0  # room for a slow machine to connect before it starts
        start_text = datetime.fromtimestamp(start, UTC).isoformat().replace("+00:00", "Z")
        created = await http.post("/trace", json={"name": "later", "type": "clientid", "clientid": "CPW",
                                                  "start_at": start_text, "end_at": int(start) + 2})
        assert created.status_code == 200, created.text
        assert created.json()["status"] == "waiting"
        async with charge_point(gw, "CPW") as ws:
            assert gw.ctx.sessions["CPW"].tap is None  # waiting: nothing recorded, no tap
            await ws.send("early")
            await asyncio.wait_for(ws.recv(), 5)

            async def status() -> str:
                return (await http.get("/trace")).json()[0]["status"]

            while await status() == "waiting":
                await asyncio.sleep(0.05)
            assert await status() == "running"
            await ws.send("during")
            await asyncio.wait_for(ws.recv(), 5)
            while await status() == "running":
                await asyncio.sleep(0.05)
            assert gw.ctx.sessions["CPW"].tap is None
            await ws.send("after")
            await asyncio.wait_for(ws.recv(), 5)
        got = records((await http.get("/trace/later/download")).content)
        frames_in = [r["frame"] for r in got if r.get("direction") == "in"]
        assert frames_in == ["during"]
        assert (await http.get("/trace")).json()[0]["stop_reason"] == "end_at"


async def test_the_size_cap_stops_the_trace_at_a_record_boundary(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, "trace.max_file_size = 2KB\n") as gw, admin(gw) as http:
        for name in ("cap", "cap2"):  # two traces of one charge point: both reach the cap on the same record
            assert (await http.post("/trace", json={"name": name, "type": "clientid", "clientid": "CPZ"})).status_code == 200
        async with charge_point(gw, "CPZ") as ws:
            for i in range(40):
                await ws.send(f"frame number {i} " + "x" * 40)
                await asyncio.wait_for(ws.recv(), 5)
            await eventually(lambda: gw.ctx.sessions["CPZ"].tap is None)
        for listed in (await http.get("/trace")).json():
            assert listed["status"] == "stopped" and listed["stop_reason"] == "max_file_size"
        body = (tmp_path / "data" / "trace" / "cap.jsonl").read_bytes()
        assert (tmp_path / "data" / "trace" / "cap2.jsonl").read_bytes() == body
        assert 1000 < len(body) <= 2048 and body.endswith(b"\n")
        got = records(body)  # every line a whole record
        assert [r["frame"] for r in got if r.get("direction") == "in"] == [
            f"frame number {i} " + "x" * 40 for i in range(len([r for r in got if r.get("direction") == "in"]))]
        assert gw.ctx.tracer.stats.stopped_by_size == 2
        scrape = await http.get("/prometheus/stats")
        assert "ocppgw_traces_stopped_by_size_total 2.0" in scrape.text


@pytest.mark.parametrize("body, field", [
    ({"name": "../x", "type": "clientid", "clientid": "CP1"}, "name"),
    ({"name": "a/b", "type": "clientid", "clientid": "CP1"}, "name"),
    ({"name": "", "type": "clientid", "clientid": "CP1"}, "name"),
    ({"name": "n" * 65, "type": "clientid", "clientid": "CP1"}, "name"),
    ({"name": 5, "type": "clientid", "clientid": "CP1"}, "name"),
    ({"name": "t", "type": "topic", "topic": "a/#"}, "type"),
    ({"name": "t", "type": "clientid"}, "clientid"),
    ({"name": "t", "type": "clientid", "clientid": ["CP1"]}, "clientid"),
    ({"name": "t", "type": "clientid", "clientid": "c" * 257}, "clientid"),
    ({"name": "t", "type": "clientid", "clientid": "CP1", "start_at": "yesterday"}, "start_at"),
    ({"name": "t", "type": "clientid", "clientid": "CP1", "start_at": "2026-01-01T00:00:00"}, "start_at"),
    ({"name": "t", "type": "clientid", "clientid": "CP1", "end_at": True}, "end_at"),
    ({"name": "t", "type": "clientid", "clientid": "CP1", "end_at": 1000}, "end_at"),
    ({"name": "t", "type": "clientid", "clientid": "CP1", "start_at": 4e9, "end_at": 3e9}, "end_at"),
    ({"name": "t", "type": "clientid", "clientid": "CP1", "formatter": "text"}, "formatter"),
    ({"name": "t", "type": "clientid", "clientid": "CP1", "extra": 1}, "extra"),
    (["t"], "object"),
])
async def test_hostile_bodies_are_refused(tmp_path, mosquitto, body, field):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        response = await http.post("/trace", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "BAD_REQUEST" and field in response.json()["message"]
        assert gw.ctx.tracer.recordings == {}
        assert not (tmp_path / "data" / "x.jsonl").exists()
        huge = await http.post("/trace", content=b'{"name": "' + b"a" * (2 * 1024 * 1024) + b'"}',
                               headers={"content-type": "application/json"})
        assert huge.status_code == 413
        assert (await http.get("/trace/..%2Fx/download")).status_code == 404
        assert (await http.get("/trace/nope/log")).status_code == 404
        assert (await http.get("/trace")).status_code == 200  # still serving


async def test_max_traces(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, "trace.max_traces = 2\n") as gw, admin(gw) as http:
        for name in ("a", "b"):
            assert (await http.post("/trace", json={"name": name, "type": "clientid", "clientid": "X"})).status_code == 200
        refused = await http.post("/trace", json={"name": "c", "type": "clientid", "clientid": "X"})
        assert refused.status_code == 400 and "trace.max_traces" in refused.json()["message"]
        assert (await http.delete("/trace/a")).status_code == 204
        assert (await http.post("/trace", json={"name": "c", "type": "clientid", "clientid": "X"})).status_code == 200


async def test_traces_outlive_a_restart_of_the_node(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        for name, cid in (("keeps", "CPR"), ("done", "CPD")):
            assert (await http.post("/trace", json={"name": name, "type": "clientid", "clientid": cid})).status_code == 200
        assert (await http.put("/trace/done/stop")).status_code == 200
        async with charge_point(gw, "CPR") as ws:
            await ws.send("before the restart")
            await asyncio.wait_for(ws.recv(), 5)
        before = (await http.get("/trace/keeps/download")).content
        (tmp_path / "data" / "trace" / "junk.meta.json").write_text("{not json")  # left alone, no failure
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        listed = {t["name"]: t for t in (await http.get("/trace")).json()}
        assert set(listed) == {"keeps", "done"}
        assert listed["keeps"]["status"] == "running" and listed["keeps"]["clientid"] == "CPR"
        assert listed["done"]["status"] == "stopped" and listed["done"]["stop_reason"] == "stopped"
        assert listed["keeps"]["log_size"] == {"gw-test": len(before)}
        async with charge_point(gw, "CPR") as ws:
            await ws.send("after the restart")
            await asyncio.wait_for(ws.recv(), 5)
        after = (await http.get("/trace/keeps/download")).content
        assert after.startswith(before)
        assert "after the restart" in [r.get("frame") for r in records(after[len(before):])]
        assert (await http.delete("/trace")).status_code == 204
        assert sorted(p.name for p in (tmp_path / "data" / "trace").iterdir()) == ["junk.meta.json"]


async def test_traces_of_one_charge_point_reaching_the_cap_together_stop_on_the_same_record(tmp_path):
    from engine.ocpp.trace import Tracer

    tracer = Tracer({})
    now = time.time()
    for name in ("a", "b", "c"):
        tracer.create(name, "CP", now - 1, now + 60, tmp_path, 1000)
    tracer.frame("CP", "in", "x" * 700)
    tracer.frame("CP", "in", "y" * 400)  # fits none: all three stop here
    tracer.frame("CP", "out", "z")  # would fit, but they stopped
    bodies = {name: (tmp_path / f"{name}.jsonl").read_bytes() for name in ("a", "b", "c")}
    assert len(set(bodies.values())) == 1 and b"z" not in bodies["a"]
    assert all(r.stop_reason == "max_file_size" for r in tracer.recordings.values())
