"""The offline command queue on one node (engine/ocpp/offline*.py): a real node on a real mosquitto,
a paho-mqtt backend, real WebSocket charge points."""

from __future__ import annotations

import httpx
import orjson
import pytest
import websockets

from tests.ocpp_support import Backend, eventually, nothing_sent, recv_json, running_gateway, subscribed

CONF = 'cluster { enable = true, keepalive = 5s, request_timeout = 1s }\n'


def queue_conf(**keys: str) -> str:
    inner = ", ".join(f"{k} = {v}" for k, v in {"enable": "true", **keys}.items())
    return CONF + f"gateway.ocpp.dnstream.offline_queue {{ {inner} }}\n"


def call(uid: str, action: str = "Reset", payload: dict | None = None) -> dict:
    return {"MessageTypeId": 2, "UniqueId": uid, "Action": action, "Payload": payload or {"type": "Soft"}}


async def watching(gw) -> None:
    await eventually(lambda: gw.node.offline is not None and gw.node.offline.watch.watching)


async def queued(gw, cid: str, n: int) -> None:
    await eventually(lambda: gw.node.offline.queue.store.counts.get(cid, 0) == n)


@pytest.mark.asyncio
async def test_queued_commands_go_out_in_order_after_the_boot_is_accepted(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, queue_conf(boot_wait="30s")) as gw:
        await watching(gw)
        backend = Backend(mosquitto.port)
        try:
            for i in range(3):
                backend.publish("ocpp/cs/CP1", call(f"u{i}"))
            await queued(gw, "CP1", 3)
            async with websockets.connect(gw.url("CP1"), subprotocols=["ocpp1.6"]) as ws:
                await subscribed(gw, "CP1")
                await nothing_sent(ws, 0.5)  # nothing before its BootNotification is accepted
                await ws.send(orjson.dumps([2, "b1", "BootNotification",
                                            {"chargePointVendor": "v", "chargePointModel": "m"}]).decode())
                await backend.answer("ocpp/cp/CP1", {"status": "Accepted", "currentTime": "2024-01-01T00:00:00Z",
                                                       "interval": 300})
                assert await recv_json(ws) == [3, "b1", {"status": "Accepted", "currentTime": "2024-01-01T00:00:00Z",
                                                        "interval": 300}]
                for i in range(3):
                    got = await recv_json(ws)
                    assert got == [2, f"u{i}", "Reset", {"type": "Soft"}]
                    if i < 2:
                        await nothing_sent(ws, 0.3)  # one in flight as always
                    await ws.send(orjson.dumps([3, f"u{i}", {"status": "Accepted"}]).decode())
                assert gw.node.offline.queue.delivered == 3
                assert gw.node.offline.queue.store.counts.get("CP1", 0) == 0
        finally:
            backend.close()


@pytest.mark.asyncio
async def test_without_a_boot_the_queue_goes_out_after_boot_wait(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, queue_conf(boot_wait="1s")) as gw:
        await watching(gw)
        backend = Backend(mosquitto.port)
        try:
            backend.publish("ocpp/cs/CP2", call("x1"))
            await queued(gw, "CP2", 1)
            async with websockets.connect(gw.url("CP2"), subprotocols=["ocpp1.6"]) as ws:
                assert await recv_json(ws, 5) == [2, "x1", "Reset", {"type": "Soft"}]
        finally:
            backend.close()


@pytest.mark.asyncio
async def test_expired_commands_are_dropped_and_evented(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, queue_conf(ttl="1s", boot_wait="0s")) as gw:
        await watching(gw)
        backend = Backend(mosquitto.port)
        try:
            backend.publish("ocpp/cs/CP3", call("old"))
            await queued(gw, "CP3", 1)
            event = await gw.events.wait("message_dropped", lambda e: e["reason"] == "expired")
            assert event["clientid"] == "CP3" and orjson.loads(event["payload"])["UniqueId"] == "old"
            assert gw.node.offline.queue.store.counts.get("CP3", 0) == 0
            async with websockets.connect(gw.url("CP3"), subprotocols=["ocpp1.6"]) as ws:
                await nothing_sent(ws, 1.0)
        finally:
            backend.close()


@pytest.mark.asyncio
async def test_over_max_len_the_new_command_is_dropped(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, queue_conf(max_len="2", boot_wait="0s")) as gw:
        await watching(gw)
        backend = Backend(mosquitto.port)
        try:
            for uid in ("a", "b", "c"):
                backend.publish("ocpp/cs/CP4", call(uid))
            event = await gw.events.wait("message_dropped", lambda e: e["reason"] == "queue_full")
            assert orjson.loads(event["payload"])["UniqueId"] == "c"
            assert gw.node.offline.queue.store.counts["CP4"] == 2
            async with websockets.connect(gw.url("CP4"), subprotocols=["ocpp1.6"]) as ws:
                assert (await recv_json(ws))[1] == "a"
                await ws.send(orjson.dumps([3, "a", {"status": "Accepted"}]).decode())
                assert (await recv_json(ws))[1] == "b"
                await ws.send(orjson.dumps([3, "b", {"status": "Accepted"}]).decode())
                await nothing_sent(ws, 0.5)
        finally:
            backend.close()


@pytest.mark.asyncio
async def test_with_the_queue_off_a_command_for_an_absent_charge_point_is_not_connected(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, CONF) as gw:
        await watching(gw)
        backend = Backend(mosquitto.port)
        try:
            backend.publish("ocpp/cs/CP5", call("n1"))
            event = await gw.events.wait("message_dropped", lambda e: e["reason"] == "not_connected")
            assert event["clientid"] == "CP5" and event["topic"] == "ocpp/cs/CP5"
            assert gw.node.offline.queue.store.total == 0
        finally:
            backend.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("proto_ver", ["v5", "v4"])
async def test_a_connected_charge_point_gets_a_command_once(tmp_path, mosquitto, proto_ver):
    """The watcher's wildcard and the session's own subscription overlap: one copy still."""
    conf = queue_conf() + f"mqtt.proto_ver = {proto_ver}\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        await watching(gw)
        backend = Backend(mosquitto.port)
        try:
            async with websockets.connect(gw.url("CP6"), subprotocols=["ocpp1.6"]) as ws:
                await subscribed(gw, "CP6")
                backend.publish("ocpp/cs/CP6", call("once"))
                assert (await recv_json(ws))[1] == "once"
                await ws.send(orjson.dumps([3, "once", {"status": "Accepted"}]).decode())
                await nothing_sent(ws, 1.0)
                assert gw.node.offline.queue.store.total == 0
                assert not gw.events.named("message_dropped")
        finally:
            backend.close()


@pytest.mark.asyncio
async def test_hostile_commands_are_refused_and_the_node_serves_on(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, queue_conf(max_payload_size="1KB", boot_wait="0s")) as gw:
        await watching(gw)
        backend = Backend(mosquitto.port)
        try:
            backend.publish("ocpp/cs/H1", {"MessageTypeId": 3, "UniqueId": "r", "Payload": {}})  # not a CALL
            backend.publish("ocpp/cs/H1", b"\xff not json")
            backend.publish("ocpp/cs/H1", call("big", payload={"data": "x" * 2000}))
            reasons = ("not_connected", "invalid_payload", "too_large")
            for reason in reasons:
                await gw.events.wait("message_dropped", lambda e, r=reason: e["reason"] == r and e["clientid"] == "H1")
            backend.publish("ocpp/cs/", call("nobody"))  # an empty id level matches cs/+
            await gw.events.wait("message_dropped", lambda e: e["reason"] == "invalid_clientid")
            assert gw.node.offline.queue.store.total == 0
            assert gw.node.offline.queue.dropped == {r: 1 for r in (*reasons, "invalid_clientid")}
            backend.publish("ocpp/cs/H2", call("fine"))
            await queued(gw, "H2", 1)
            async with httpx.AsyncClient(auth=("admin", "public"), timeout=10) as http:
                queue_url = gw.admin_url + "/gateways/ocpp/clients/{}/queue"
                for hostile in ("a%2Bb", "%23", "a%2F%2B"):  # a+b, #, a/+: wildcard characters in the id
                    answer = await http.get(queue_url.format(hostile))
                    assert answer.status_code == 404, answer.text
                    assert (await http.delete(queue_url.format(hostile))).status_code == 404
                answer = await http.get(queue_url.format("H2"))
                assert answer.status_code == 200
                assert [(r["msgid"], r["state"]) for r in answer.json()["data"]] == [("fine", "offline")]
        finally:
            backend.close()


def test_the_queue_needs_the_id_as_a_whole_topic_level(tmp_path):
    from engine.config import ConfigError, load_settings

    path = tmp_path / "gateway.conf"
    path.write_text('gateway.ocpp.dnstream { topic = "cs-${cid}", offline_queue.enable = true }\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {})
    assert "gateway.ocpp.dnstream.topic" in str(caught.value) and "whole level" in str(caught.value)
    path.write_text('gateway.ocpp.dnstream { topic = "cs/${cid}", offline_queue { enable = true, ttl = 0s } }\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {})
    assert "offline_queue.ttl" in str(caught.value)
    path.write_text('gateway.ocpp.dnstream { topic = "cs/${cid}/cmd", offline_queue.enable = true }\n')
    assert load_settings(path, {}).gateway.ocpp.dnstream.offline_queue.enable


@pytest.mark.asyncio
async def test_without_cluster_on_an_external_broker_the_queue_warns_and_stays_off(tmp_path, mosquitto, caplog):
    async with running_gateway(tmp_path, mosquitto.port, "gateway.ocpp.dnstream.offline_queue.enable = true\n") as gw:
        assert gw.node.offline is None
        assert "offline_queue.enable has no effect: it needs cluster.enable or the embedded broker" in caplog.text


@pytest.mark.asyncio
async def test_the_queue_endpoint_shows_and_empties_a_connected_sessions_commands(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, queue_conf()) as gw:
        await watching(gw)
        backend = Backend(mosquitto.port)
        url = gw.admin_url + "/gateways/ocpp/clients/CP7/queue"
        try:
            async with websockets.connect(gw.url("CP7"), subprotocols=["ocpp1.6"]) as ws, \
                    httpx.AsyncClient(auth=("admin", "public"), timeout=10) as http:
                await subscribed(gw, "CP7")
                for uid in ("s1", "s2", "s3"):
                    backend.publish("ocpp/cs/CP7", call(uid))
                assert (await recv_json(ws))[1] == "s1"
                await eventually(lambda: gw.ctx.sessions.get("CP7").info()["mqueue_len"] == 2)
                answer = await http.get(url)
                assert answer.status_code == 200, answer.text
                rows = answer.json()["data"]
                assert [(r["msgid"], r["state"], r["node"]) for r in rows] == [
                    ("s1", "inflight", "gw-test"), ("s2", "queued", "gw-test"), ("s3", "queued", "gw-test")]
                assert (await http.delete(url)).status_code == 204
                dropped = [e for e in gw.events.named("message_dropped") if e["reason"] == "deleted"]
                assert [orjson.loads(e["payload"])["UniqueId"] for e in dropped] == ["s2", "s3"]
                await ws.send(orjson.dumps([3, "s1", {"status": "Accepted"}]).decode())
                await nothing_sent(ws, 0.5)  # the in-flight one was answered; the deleted ones never go
                answer = await http.get(url)
                assert answer.status_code == 200 and answer.json()["data"] == []
            await eventually(lambda: gw.ctx.sessions.get("CP7") is None)
            async with httpx.AsyncClient(auth=("admin", "public"), timeout=10) as http:
                assert (await http.get(url)).status_code == 404
        finally:
            backend.close()


@pytest.mark.asyncio
async def test_a_damaged_queue_file_stops_the_start_with_one_line_naming_it(tmp_path, mosquitto):
    from engine.parts import NodeError

    damaged = tmp_path / "data" / "offline" / "gw-test.db"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"not a database " * 100)
    with pytest.raises(NodeError, match=r"dnstream.offline_queue: .*gw-test.db: file is not a database \(move"):
        async with running_gateway(tmp_path, mosquitto.port, queue_conf()):
            pass


@pytest.mark.asyncio
async def test_a_command_that_cannot_be_written_is_reported_at_once(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, queue_conf()) as gw:
        await watching(gw)
        gw.node.offline.queue.store.close()  # every write now fails (as with a full disk)
        backend = Backend(mosquitto.port)
        try:
            backend.publish("ocpp/cs/CPX", call("lost"))
            event = await gw.events.wait("message_dropped", lambda e: e["clientid"] == "CPX")
            assert event["reason"] == "write_failed"
            backend.publish("ocpp/cs/CPY", call("next"))  # the node serves on
            event = await gw.events.wait("message_dropped", lambda e: e["clientid"] == "CPY")
            assert event["reason"] == "write_failed"
        finally:
            backend.close()


@pytest.mark.asyncio
async def test_a_flood_waiting_for_the_other_nodes_is_bounded_by_max_pending(tmp_path, mosquitto):
    import asyncio

    class SilentPeer:  # a node that never answers `locate`: every command waits for it
        name = "gw-test"

        def peers(self) -> list[str]:
            return ["silent"]

        asked: list[str] = []

        def request(self, node, op, args, timeout=None):
            self.asked.append(args["clientid"])
            return asyncio.get_running_loop().create_future()

        def serve(self, op, handler) -> None:
            pass

    async with running_gateway(tmp_path, mosquitto.port, queue_conf(max_pending="2")) as gw:
        await watching(gw)
        gw.node.offline.queue.cluster = SilentPeer()
        backend = Backend(mosquitto.port)
        try:
            backend.publish("ocpp/cs/GONE0", call("f0"))
            await eventually(lambda: SilentPeer.asked == ["GONE0"])  # it waits for the answer
            for i in range(1, 5):
                backend.publish(f"ocpp/cs/GONE{i}", call(f"f{i}"))
            for i in range(3, 5):  # two wait in line behind it: the rest are dropped
                event = await gw.events.wait("message_dropped", lambda e, i=i: e["clientid"] == f"GONE{i}")
                assert event["reason"] == "overloaded"
            assert gw.node.offline.queue.dropped["overloaded"] == 2 and SilentPeer.asked == ["GONE0"]
        finally:
            backend.close()
