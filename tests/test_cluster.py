"""Nodes that share a broker act as one (engine/cluster/): real node processes on one real mosquitto.

Each node is an `ocpp-gateway run` process (so one can be SIGKILLed or SIGSTOPped); charge
points are websockets clients; the admin API is asked over HTTP.
"""

from __future__ import annotations

import asyncio
import queue
import signal
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as paho
import pytest
import websockets

from tests.gateway import GatewayProcess, skew_clock
from tests.ocpp_support import until
from tests.servers import Mosquitto

AUTH = ("admin", "public")
KEEPALIVE = 5  # cluster.keepalive of the test nodes: a silent node shows stopped within 7.5 s


def test_a_cluster_change_needs_a_restart() -> None:
    from dataclasses import replace

    from engine.config.schema import ClusterSettings, Settings
    from engine.reload import restart_only

    old = Settings()
    assert restart_only(old, replace(old, cluster=ClusterSettings(enable=True))) == ["cluster"]


def test_a_node_name_that_is_no_topic_level_is_refused() -> None:
    from engine.cluster import check_node_name

    assert check_node_name("gw-1") is None
    for bad in ("a/b", "a+", "#", ""):
        assert "node.name" in (check_node_name(bad) or "")


def test_cluster_keys_are_checked(tmp_path: Path) -> None:
    from engine.config import ConfigError, load_settings

    path = tmp_path / "gateway.conf"
    path.write_text('node.name = "a/b"\n'
                    'cluster { enable = true, topic_prefix = "$sys/x", request_timeout = 0s, keepalive = 0s }\n')
    with pytest.raises(ConfigError) as found:
        load_settings(path, {})
    text = "\n".join(found.value.errors)
    for key in ("node.name", "cluster.topic_prefix", "cluster.request_timeout", "cluster.keepalive"):
        assert key in text, text
    path.write_text('node.name = "a/b"\n')  # no cluster: the name is not a topic level
    load_settings(path, {})


def node(tmp_path: Path, broker: Mosquitto, name: str, clock_offset: float = 0.0) -> GatewayProcess:
    workdir = tmp_path / name
    workdir.mkdir()
    conf = (f'node {{ name = "{name}", data_dir = "{workdir / "data"}" }}\n'
            f'mqtt {{ server = "mqtt://127.0.0.1:{broker.port}", reconnect.initial_interval = 100ms }}\n'
            f'cluster {{ enable = true, keepalive = {KEEPALIVE}s, request_timeout = 1s }}\n')
    gw = GatewayProcess(workdir, conf)
    if clock_offset:
        skew_clock(gw, clock_offset)
    return gw


def admin(gw: GatewayProcess) -> str:
    return "http://" + gw.env["OCPPGW_DASHBOARD__LISTENERS__HTTP__BIND"] + "/api/v5"


def cp_url(gw: GatewayProcess, cid: str) -> str:
    return f"ws://127.0.0.1:{gw.ocpp_port}/ocpp/{cid}"


async def connect(gw: GatewayProcess, cid: str) -> websockets.ClientConnection:
    return await websockets.connect(cp_url(gw, cid), subprotocols=["ocpp1.6"])



async def node_status(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    answer = await http.get(url + "/nodes")
    assert answer.status_code == 200, answer.text
    return {n["node"]: n["node_status"] for n in answer.json()}


async def both_running(http: httpx.AsyncClient, a: GatewayProcess, b: GatewayProcess) -> None:
    for gw in (a, b):
        url = admin(gw)

        async def seen(url: str = url) -> bool:
            return await node_status(http, url) == {"a": "running", "b": "running"}

        await until(seen)


@pytest.fixture
def two_nodes(tmp_path: Path, mosquitto: Mosquitto):
    a, b = node(tmp_path, mosquitto, "a"), node(tmp_path, mosquitto, "b")
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        for gw in (a, b):
            if gw.proc is not None and gw.proc.poll() is None:
                gw.proc.send_signal(signal.SIGCONT)
            gw.stop()


async def test_nodes_clients_call_kick_and_stats_from_the_other_node(two_nodes) -> None:
    a, b = two_nodes
    async with httpx.AsyncClient(auth=AUTH, timeout=15) as http:
        await both_running(http, a, b)
        nodes = (await http.get(admin(a) + "/nodes")).json()
        assert {n["node"] for n in nodes} == {"a", "b"}
        assert all(n["role"] == "core" and n["version"] and "uptime" in n for n in nodes)
        assert (await http.get(admin(a) + "/nodes/b")).json()["node"] == "b"
        assert (await http.get(admin(a) + "/nodes/nobody")).status_code == 404

        cp_b = await connect(b, "CP-B")
        cp_a = await connect(a, "CP-A")

        async def listed() -> list[dict]:
            rows = (await http.get(admin(a) + "/gateways/ocpp/clients")).json()["data"]
            return rows if len(rows) == 2 else []

        rows = await until(listed)
        assert [(r["clientid"], r["node"]) for r in rows] == [("CP-A", "a"), ("CP-B", "b")]
        # filters and paging after the merge
        page = (await http.get(admin(a) + "/gateways/ocpp/clients", params={"like_clientid": "B"})).json()
        assert [r["clientid"] for r in page["data"]] == ["CP-B"] and page["meta"]["count"] == 1
        page = (await http.get(admin(b) + "/gateways/ocpp/clients", params={"page": 2, "limit": 1})).json()
        assert [r["clientid"] for r in page["data"]] == ["CP-B"] and page["meta"]["count"] == 2
        assert not page["meta"]["hasnext"]
        bad = await http.get(admin(a) + "/gateways/ocpp/clients", params={"proto_ver": "mqtt"})
        assert bad.status_code == 400

        detail = await http.get(admin(a) + "/gateways/ocpp/clients/CP-B")
        assert detail.status_code == 200 and detail.json()["node"] == "b"
        assert (await http.get(admin(a) + "/gateways/ocpp/clients/NOBODY")).status_code == 404

        # a CALL from node a reaches the charge point on node b, and its answer comes back
        call = asyncio.create_task(http.post(admin(a) + "/gateways/ocpp/clients/CP-B/call",
                                             json={"action": "ClearCache", "payload": {}}))
        frame = orjson.loads(await asyncio.wait_for(cp_b.recv(), 10))
        assert frame[0] == 2 and frame[2] == "ClearCache"
        await cp_b.send(orjson.dumps([3, frame[1], {"status": "Accepted"}]).decode())
        answer = await call
        assert answer.status_code == 200 and answer.json()["Payload"] == {"status": "Accepted"}
        # node b's error comes back as node b said it: the charge point does not answer in time
        late = await http.post(admin(a) + "/gateways/ocpp/clients/CP-B/call",
                               json={"action": "ClearCache", "payload": {}, "timeout": "500ms"})
        assert late.status_code == 504 and "CP-B did not answer the ClearCache CALL" in late.json()["message"]
        await asyncio.wait_for(cp_b.recv(), 10)  # that CALL, unanswered

        stats = (await http.get(admin(a) + "/stats", params={"aggregate": "true"})).json()
        assert stats["connections.count"] == 2 and stats["live_connections.count"] == 2
        per_node = (await http.get(admin(a) + "/stats")).json()
        assert sorted((s["node"], s["connections.count"]) for s in per_node) == [("a", 1), ("b", 1)]

        kick = await http.delete(admin(a) + "/gateways/ocpp/clients/CP-B")
        assert kick.status_code == 204
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(cp_b.recv(), 10)
        await cp_a.close()


def retained_presence(broker: Mosquitto, name: str) -> dict:
    got: queue.Queue[bytes] = queue.Queue()
    reader = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="presence-reader")
    reader.on_message = lambda client, userdata, message: got.put(message.payload)
    reader.connect("127.0.0.1", broker.port)
    reader.subscribe(f"ocppgw/cluster/nodes/{name}", qos=1)
    reader.loop_start()
    try:
        return orjson.loads(got.get(timeout=10))
    finally:
        reader.loop_stop()
        reader.disconnect()


async def test_a_silent_node_is_named_and_a_dead_one_shows_stopped(two_nodes, mosquitto: Mosquitto) -> None:
    a, b = two_nodes
    async with httpx.AsyncClient(auth=AUTH, timeout=15) as http:
        await both_running(http, a, b)
        cp = await connect(b, "CP-B")

        async def on_b() -> bool:
            return (await http.get(admin(a) + "/gateways/ocpp/clients/CP-B")).status_code == 200

        await until(on_b)
        assert b.proc is not None
        b.proc.send_signal(signal.SIGSTOP)
        try:
            answer = await http.get(admin(a) + "/gateways/ocpp/clients/CP-B")
            assert answer.status_code == 503 and "node b" in answer.json()["message"], answer.text
            listing = (await http.get(admin(a) + "/gateways/ocpp/clients")).json()
            assert listing["meta"]["unavailable_nodes"] == ["b"] and listing["data"] == []
            stats = (await http.get(admin(a) + "/stats", params={"aggregate": "true"})).json()
            assert stats["unavailable_nodes"] == ["b"]

            # still silent: the broker gives up on it after 1.5 keepalives and publishes its last will
            async def stopped_on_the_broker() -> bool:
                return retained_presence(mosquitto, "b")["node_status"] == "stopped"

            await until(stopped_on_the_broker, timeout=KEEPALIVE * 1.5 + 10)
            assert (await node_status(http, admin(a))) == {"a": "running", "b": "stopped"}
        finally:
            b.proc.send_signal(signal.SIGCONT)
        await both_running(http, a, b)  # back: it joins again and says so
        await until(on_b)
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait(10)

        async def stopped() -> bool:
            return (await node_status(http, admin(a))).get("b") == "stopped"

        await until(stopped, timeout=10)  # its socket closed: the broker publishes the will at once
        assert (await node_status(http, admin(a)))["a"] == "running"
        # the broker says so too: b's last will replaced its retained presence
        assert retained_presence(mosquitto, "b")["node_status"] == "stopped"
        await cp.close()


async def test_takeover_follows_broker_order_not_clocks(tmp_path: Path, mosquitto: Mosquitto) -> None:
    # node b's wall clock is an hour behind: by connected_at, its (newer) connection looks older
    a, b = node(tmp_path, mosquitto, "a"), node(tmp_path, mosquitto, "b", clock_offset=-3600)
    try:
        a.start()
        b.start()
        async with httpx.AsyncClient(auth=AUTH, timeout=15) as http:
            await both_running(http, a, b)
            first = await connect(a, "CP-MOVE")

            async def listed_on(name: str) -> bool:
                answer = await http.get(admin(a) + "/gateways/ocpp/clients/CP-MOVE")
                return answer.status_code == 200 and answer.json()["node"] == name

            await until(lambda: listed_on("a"))
            second = await connect(b, "CP-MOVE")
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(first.recv(), 10)
            assert first.close_code == 1000
            await until(lambda: listed_on("b"))
            # and back to a (clock an hour ahead of b's): b's session is closed, a's stays
            third = await connect(a, "CP-MOVE")
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(second.recv(), 10)
            await until(lambda: listed_on("a"))
            per_node = (await http.get(admin(b) + "/stats")).json()
            assert sorted((s["node"], s["connections.count"]) for s in per_node) == [("a", 1), ("b", 0)]
            assert third.close_code is None  # the newest socket is the one left open
            await third.close()
    finally:
        a.stop()
        b.stop()


async def test_garbage_on_the_cluster_topics_is_ignored_and_counted(two_nodes, mosquitto: Mosquitto) -> None:
    a, b = two_nodes
    async with httpx.AsyncClient(auth=AUTH, timeout=15) as http:
        await both_running(http, a, b)
        answers: queue.Queue[bytes] = queue.Queue()
        rogue = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="rogue")
        rogue.on_message = lambda client, userdata, message: answers.put(message.payload)
        rogue.connect("127.0.0.1", mosquitto.port)
        rogue.subscribe("ocppgw/cluster/reply/r", qos=1)
        rogue.loop_start()
        try:
            for topic, payload in [
                ("ocppgw/cluster/nodes/x", b"\xff not json"),
                ("ocppgw/cluster/nodes/y", b'{"node": "z", "node_status": "running"}'),  # names another node
                ("ocppgw/cluster/rpc/a", b'{"id": 1}'),
                ("ocppgw/cluster/rpc/a", b'{"id": "1", "reply": "elsewhere/x", "op": "kick", "args": {}}'),
                ("ocppgw/cluster/rpc/a", b'{"id": "2", "reply": "ocppgw/cluster/reply/r", "op": "call", '
                                         b'"args": {"clientid": ["x"]}}'),
                ("ocppgw/cluster/rpc/a", b'{"id": "3", "reply": "ocppgw/cluster/reply/r", "op": "call", '
                                         b'"args": {"clientid": "x", "action": "Reset", "payload": {}, "timeout": -1}}'),
                ("ocppgw/cluster/rpc/a", b'{"id": "4", "reply": "ocppgw/cluster/reply/r", "op": "nonsense"}'),
                ("ocppgw/cluster/reply/a", b"[1, 2]"),
                ("ocppgw/cluster/claims", b'{"clientid": 5}'),
                ("ocppgw/cluster/claims", b"\x00\x01"),
            ]:
                rogue.publish(topic, payload, qos=1).wait_for_publish(5)
            # a request that is well-formed but asks for nonsense is answered as the API would
            got = sorted((r["id"], r["ok"], r["error"]["status"]) for r in (orjson.loads(answers.get(timeout=10)) for _ in range(3)))
            assert got == [("2", False, 400), ("3", False, 400), ("4", False, 400)]
        finally:
            rogue.loop_stop()
            rogue.disconnect()

        async def counted() -> str:
            text = (await http.get(admin(a) + "/prometheus/stats")).text
            line = next((ln for ln in text.splitlines() if ln.startswith("ocppgw_cluster_messages_malformed_total")), "")
            return line if line and float(line.split()[-1]) >= 7 else ""

        await until(counted)
        assert await node_status(http, admin(a)) == {"a": "running", "b": "running"}
        cp = await connect(a, "CP-OK")

        async def listed() -> bool:
            return (await http.get(admin(b) + "/gateways/ocpp/clients/CP-OK")).json().get("node") == "a"

        await until(listed)
        await cp.close()
    assert "Traceback" not in a.log


async def test_nodes_on_the_embedded_broker_see_each_other(tmp_path: Path) -> None:
    """The embedded broker speaks MQTT 3.1.1 only: presence, requests and claims work on it too
    (the correlation travels in the payload)."""
    conf = 'cluster { enable = true, keepalive = 2s, request_timeout = 2s }\n'
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = GatewayProcess(tmp_path / "a", f'node {{ name = "a", data_dir = "{tmp_path / "a" / "data"}" }}\n' + conf)
    b = GatewayProcess(tmp_path / "b", f'node {{ name = "b", data_dir = "{tmp_path / "b" / "data"}" }}\n'
                       f'mqtt {{ server = "mqtt://127.0.0.1:{a.mqtt_port}", proto_ver = v4 }}\n' + conf)
    try:
        a.start()
        b.start()
        async with httpx.AsyncClient(auth=AUTH, timeout=15) as http:
            await both_running(http, a, b)
            cp = await connect(b, "CP-E")

            async def on_b() -> bool:
                answer = await http.get(admin(a) + "/gateways/ocpp/clients/CP-E")
                return answer.status_code == 200 and answer.json()["node"] == "b"

            await until(on_b)
            second = await connect(a, "CP-E")
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(cp.recv(), 10)

            async def on_a() -> bool:
                answer = await http.get(admin(b) + "/gateways/ocpp/clients/CP-E")
                return answer.status_code == 200 and answer.json()["node"] == "a"

            await until(on_a)
            await second.close()
    finally:
        b.stop()
        a.stop()
