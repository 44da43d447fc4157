"""The offline command queue with real node processes: it survives SIGKILL, and it follows a charge
point that reconnects to another node of the cluster (real mosquitto, paho backend, websockets
charge points, the admin API over HTTP)."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as paho
import pytest
import websockets

from tests.gateway import GatewayProcess
from tests.ocpp_support import until
from tests.servers import Mosquitto

AUTH = ("admin", "public")


def admin(gw: GatewayProcess) -> str:
    return "http://" + gw.env["OCPPGW_DASHBOARD__LISTENERS__HTTP__BIND"] + "/api/v5/gateways/ocpp/clients"


async def connect(gw: GatewayProcess, cid: str) -> websockets.ClientConnection:
    return await websockets.connect(f"ws://127.0.0.1:{gw.ocpp_port}/ocpp/{cid}", subprotocols=["ocpp1.6"])


def publish(port: int, topic: str, *bodies: dict) -> None:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"backend-{time.monotonic_ns()}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for body in bodies:
            client.publish(topic, orjson.dumps(body), qos=1).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()


def call(uid: str) -> dict:
    return {"MessageTypeId": 2, "UniqueId": uid, "Action": "Reset", "Payload": {"type": "Hard"}}



async def queue_of(http: httpx.AsyncClient, gw: GatewayProcess, cid: str) -> tuple[int, dict]:
    answer = await http.get(f"{admin(gw)}/{cid}/queue")
    return answer.status_code, answer.json()


async def offline_count(http: httpx.AsyncClient, gw: GatewayProcess, cid: str, n: int) -> bool:
    status, body = await queue_of(http, gw, cid)
    return status == 200 and [r["state"] for r in body["data"]] == ["offline"] * n


async def receives_in_order(ws: websockets.ClientConnection, uids: list[str]) -> None:
    for uid in uids:
        got = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        assert got[:2] == [2, uid], got
        await ws.send(orjson.dumps([3, uid, {"status": "Accepted"}]).decode())
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(ws.recv(), 1.0)  # exactly once: nothing more comes


def solo(tmp_path: Path, ttl: str = "1h") -> GatewayProcess:
    return GatewayProcess(tmp_path, f'node {{ name = "solo", data_dir = "{tmp_path / "data"}" }}\n'
                                    f"gateway.ocpp.dnstream.offline_queue {{ enable = true, ttl = {ttl}, boot_wait = 0s }}\n")


@pytest.mark.asyncio
async def test_the_queue_survives_sigkill_and_is_delivered_after_the_restart(tmp_path: Path) -> None:
    gw = solo(tmp_path).start()
    try:
        gw.wait_log("offline queue: this node watches ocpp/cs/\\+")
        publish(gw.mqtt_port, "ocpp/cs/CPK", call("k1"), call("k2"))
        async with httpx.AsyncClient(auth=AUTH, timeout=15) as http:
            await until(lambda: offline_count(http, gw, "CPK", 2))
            gw.signal(signal.SIGKILL)
            gw.wait()
            gw.start(wait_for=None)
            gw.wait_count("node solo started", 2)
            await until(lambda: offline_count(http, gw, "CPK", 2))
            async with await connect(gw, "CPK") as ws:
                await receives_in_order(ws, ["k1", "k2"])
                status, body = await queue_of(http, gw, "CPK")
                assert status == 200 and body["data"] == [] and body["meta"]["connected"]
            await until(lambda: _gone(http, gw, "CPK"))  # gone with the charge point, nothing queued
    finally:
        gw.stop()


async def _gone(http: httpx.AsyncClient, gw: GatewayProcess, cid: str) -> bool:
    status, _ = await queue_of(http, gw, cid)
    return status == 404


@pytest.mark.asyncio
async def test_after_a_restart_the_queue_still_expires(tmp_path: Path) -> None:
    gw = solo(tmp_path, ttl="3s").start()
    try:
        gw.wait_log("offline queue: this node watches")
        publish(gw.mqtt_port, "ocpp/cs/CPE", call("e1"))
        async with httpx.AsyncClient(auth=AUTH, timeout=15) as http:
            await until(lambda: offline_count(http, gw, "CPE", 1))
            gw.signal(signal.SIGKILL)
            gw.wait()
            gw.start(wait_for=None)
            gw.wait_count("node solo started", 2)
            await until(lambda: _gone(http, gw, "CPE"))
            stats = (await http.get(admin(gw).rsplit("/gateways", 1)[0] + "/prometheus/stats")).text
            assert 'ocppgw_offline_dropped_total{reason="expired"} 1.0' in stats
            assert "ocppgw_offline_queued 0.0" in stats
    finally:
        gw.stop()


def cluster_node(tmp_path: Path, broker: Mosquitto, name: str, queue: str = "") -> GatewayProcess:
    workdir = tmp_path / name
    workdir.mkdir()
    return GatewayProcess(workdir, f'node {{ name = "{name}", data_dir = "{workdir / "data"}" }}\n'
                          f'mqtt {{ server = "mqtt://127.0.0.1:{broker.port}", reconnect.initial_interval = 100ms }}\n'
                          "cluster { enable = true, keepalive = 5s, request_timeout = 2s }\n"
                          f"gateway.ocpp.dnstream.offline_queue {{ enable = true, boot_wait = 0s {queue} }}\n")


@pytest.fixture
def two_nodes(tmp_path: Path, mosquitto: Mosquitto, request):
    queue = getattr(request, "param", "")
    a, b = cluster_node(tmp_path, mosquitto, "a", queue), cluster_node(tmp_path, mosquitto, "b", queue)
    try:
        a.start()
        b.start()
        a.wait_log("offline queue: this node watches")  # a: the lowest name
        yield a, b
    finally:
        for gw in (a, b):
            gw.stop()


@pytest.mark.asyncio
async def test_queued_on_one_node_delivered_once_on_the_other(two_nodes, mosquitto: Mosquitto) -> None:
    a, b = two_nodes
    async with httpx.AsyncClient(auth=AUTH, timeout=15) as http:
        await until(lambda: _gone(http, b, "CPX"))  # b's API answers, nothing queued
        publish(mosquitto.port, "ocpp/cs/CPX", call("x1"), call("x2"), call("x3"))
        try:
            await until(lambda: offline_count(http, b, "CPX", 3))  # seen from b: queued on a
        except AssertionError:
            print(await queue_of(http, b, "CPX"), await queue_of(http, a, "CPX"))
            print(a.log[-3000:]); print(b.log[-3000:])
            raise
        _, body = await queue_of(http, b, "CPX")
        assert {r["node"] for r in body["data"]} == {"a"} and [r["msgid"] for r in body["data"]] == ["x1", "x2", "x3"]
        assert "this node watches" not in b.log
        async with await connect(b, "CPX") as ws:
            await receives_in_order(ws, ["x1", "x2", "x3"])
            status, body = await queue_of(http, a, "CPX")
            assert status == 200 and body["data"] == [] and body["meta"]["connected"]
            # while it is connected to b, a command goes to it once, not to a queue
            publish(mosquitto.port, "ocpp/cs/CPX", call("live"))
            await receives_in_order(ws, ["live"])
        status, body = await queue_of(http, a, "CPX")
        assert status == 404, body


@pytest.mark.asyncio
async def test_delete_empties_the_queue_from_any_node(two_nodes, mosquitto: Mosquitto) -> None:
    a, b = two_nodes
    async with httpx.AsyncClient(auth=AUTH, timeout=15) as http:
        await until(lambda: _gone(http, b, "CPD"))
        publish(mosquitto.port, "ocpp/cs/CPD", call("d1"), call("d2"))
        await until(lambda: offline_count(http, b, "CPD", 2))
        answer = await http.delete(f"{admin(b)}/CPD/queue")
        assert answer.status_code == 204, answer.text
        assert (await queue_of(http, a, "CPD"))[0] == 404
        assert (await http.delete(f"{admin(b)}/CPD/queue")).status_code == 404
        stats = (await http.get(admin(a).rsplit("/gateways", 1)[0] + "/prometheus/stats")).text
        assert 'ocppgw_offline_dropped_total{reason="deleted"} 2.0' in stats
        async with await connect(a, "CPD") as ws:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ws.recv(), 1.0)
        answer = await http.get(f"{admin(a)}/{'x' * 300}/queue")
        assert answer.status_code == 400, answer.text


async def stat(http: httpx.AsyncClient, gw: GatewayProcess, line: str) -> bool:
    return line in (await http.get(admin(gw).rsplit("/gateways", 1)[0] + "/prometheus/stats")).text


@pytest.mark.asyncio
@pytest.mark.parametrize("two_nodes", [", max_len = 2, ttl = 6s"], indirect=True)
async def test_overflow_and_expiry_across_nodes(two_nodes, mosquitto: Mosquitto) -> None:
    a, b = two_nodes
    async with httpx.AsyncClient(auth=AUTH, timeout=15) as http:
        await until(lambda: _gone(http, b, "CPO"))
        publish(mosquitto.port, "ocpp/cs/CPO", call("o1"), call("o2"), call("o3"))
        await until(lambda: stat(http, a, 'ocppgw_offline_dropped_total{reason="queue_full"} 1.0'))
        assert await offline_count(http, b, "CPO", 2)
        async with await connect(b, "CPO") as ws:
            await receives_in_order(ws, ["o1", "o2"])  # the newest one was dropped
        await until(lambda: _gone(http, a, "CPO"))
        publish(mosquitto.port, "ocpp/cs/CPO", call("late"))
        await until(lambda: offline_count(http, b, "CPO", 1))
        await until(lambda: stat(http, a, 'ocppgw_offline_dropped_total{reason="expired"} 1.0'))
        assert await _gone(http, b, "CPO")
        async with await connect(b, "CPO") as ws:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ws.recv(), 1.0)
        assert await stat(http, b, "ocppgw_offline_delivered_total 2.0")


@pytest.mark.asyncio
async def test_when_the_watcher_dies_the_next_node_watches(two_nodes, mosquitto: Mosquitto) -> None:
    a, b = two_nodes
    a.signal(signal.SIGKILL)
    a.wait()
    b.wait_log("offline queue: this node watches", timeout=30)  # once a shows stopped (its last will)
    async with httpx.AsyncClient(auth=AUTH, timeout=15) as http:
        publish(mosquitto.port, "ocpp/cs/CPW", call("w1"))
        await until(lambda: offline_count(http, b, "CPW", 1))
        async with await connect(b, "CPW") as ws:
            await receives_in_order(ws, ["w1"])
