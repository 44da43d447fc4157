"""The admin API's config is the cluster's (engine/cluster/config_sync.py): real node processes on
one real mosquitto, asked over HTTP. Waits are generous (60 s): a node parses an overlay in its
background worker at the lowest CPU priority, which a busy machine may starve for a while."""

from __future__ import annotations

import asyncio
import base64
import queue
import re
import signal
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as paho
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.servers import Mosquitto
from tests.test_cluster import AUTH, admin, cp_url, node, until


async def configs(http: httpx.AsyncClient, gw) -> str:
    answer = await http.get(admin(gw) + "/configs")
    assert answer.status_code == 200, answer.text
    return answer.text


def has(text: str, value: int) -> bool:
    return f"max_mqueue_len = {value}" in text


@pytest.fixture
def nodes(tmp_path: Path, mosquitto: Mosquitto):
    made = {name: node(tmp_path, mosquitto, name) for name in ("a", "b", "c")}
    try:
        yield made
    finally:
        for gw in made.values():
            if gw.proc is not None and gw.proc.poll() is None:
                gw.proc.send_signal(signal.SIGCONT)
            gw.stop()


async def running(http: httpx.AsyncClient, gw, names: set[str]) -> None:
    async def seen() -> bool:
        answer = await http.get(admin(gw) + "/nodes")
        return {n["node"] for n in answer.json() if n["node_status"] == "running"} == names

    await until(seen, 60)


async def test_a_config_change_on_one_node_applies_on_every_node(nodes) -> None:
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    a.start()
    b.start()
    async with httpx.AsyncClient(auth=AUTH, timeout=60) as http:
        await running(http, a, {"a", "b"})
        answer = await http.put(admin(a) + "/configs", content="gateway.ocpp.dnstream.max_mqueue_len = 9")
        assert answer.status_code == 200, answer.text
        assert answer.json()["nodes"] == [{"node": "b", "status": "reloaded", "errors": []}]
        assert has(await configs(http, a), 9) and has(await configs(http, b), 9)

        # refused on the node asked: refused everywhere, nothing applied anywhere
        answer = await http.put(admin(a) + "/configs", content='gateway.ocpp.dnstream.max_mqueue_len = "lots"')
        assert answer.status_code == 400, answer.text
        for gw in (a, b):
            assert has(await configs(http, gw), 9)
        answer = await http.put(admin(a) + "/configs", content='node.name = "z"')  # one name for all: no
        assert answer.status_code == 400 and "node.name" in answer.text, answer.text

        # a change made on b, while c is not there yet: c takes it when it starts
        answer = await http.put(admin(b) + "/configs", content="gateway.ocpp.dnstream.max_mqueue_len = 11")
        assert answer.status_code == 200, answer.text
        assert answer.json()["nodes"] == [{"node": "a", "status": "reloaded", "errors": []}]
        c.start()

        async def c_has_it() -> bool:
            return has(await configs(http, c), 11)

        await until(c_has_it, 60)

        # a node down during a change gets it when it is back
        b.stop()
        await running(http, a, {"a", "c"})
        answer = await http.put(admin(a) + "/configs", content="gateway.ocpp.dnstream.max_mqueue_len = 12")
        assert answer.status_code == 200, answer.text
        assert answer.json()["nodes"] == [{"node": "c", "status": "reloaded", "errors": []}]
        b.lines.clear()  # its first run's "started" line
        b.start()

        async def b_has_it() -> bool:
            return has(await configs(http, b), 12)

        await until(b_has_it, 60)
        for gw in (a, b, c):
            assert has(await configs(http, gw), 12)


BOOT = ["BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"}]
BOOT_ACCEPT = {
    "id": "boot_accept",
    "sql": """SELECT clientid, payload.UniqueId AS id FROM "ocpp/cp/+" WHERE payload.Action = 'BootNotification'""",
    "actions": [{"function": "republish", "args": {
        "topic": "ocpp/cs/${clientid}",
        "payload": '{"MessageTypeId": 3, "UniqueId": "${id}", "Payload": {"status": "Accepted", '
                   '"interval": 300, "currentTime": "2024-01-01T00:00:00Z"}}'}}],
}
EMQX_AUTHN = {"mechanism": "password_based", "backend": "built_in_database", "user_id_type": "username",
              "password_hash_algorithm": {"name": "sha256", "salt_position": "suffix"}, "enable": True}
OCPP = "/gateways/ocpp"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def login_status(gw, cid: str, headers: dict[str, str] | None = None) -> int:
    try:
        async with websockets.connect(cp_url(gw, cid), subprotocols=["ocpp1.6"], additional_headers=headers or {}):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


async def test_a_rule_and_a_user_made_on_one_node_work_on_every_node(nodes) -> None:
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    a.start()
    b.start()
    async with httpx.AsyncClient(auth=AUTH, timeout=60) as http:
        await running(http, a, {"a", "b"})
        answer = await http.post(admin(a) + "/rules", json=BOOT_ACCEPT)
        assert answer.status_code == 201, answer.text
        async with websockets.connect(cp_url(b, "CP1"), subprotocols=["ocpp1.6"]) as ws:
            await ws.send(orjson.dumps([2, "boot-1", *BOOT]).decode())
            reply = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
        assert reply[:2] == [3, "boot-1"] and reply[2]["status"] == "Accepted", reply  # b ran a's rule

        answer = await http.post(admin(a) + OCPP + "/authentication", json=EMQX_AUTHN)
        assert answer.status_code in (200, 201), answer.text
        assert await login_status(b, "CP2", basic("CP2", "s3cret")) == 401  # b requires logins now
        answer = await http.post(admin(a) + OCPP + "/authentication/users", json={"user_id": "CP2", "password": "s3cret"})
        assert answer.status_code == 201, answer.text
        assert answer.json()["nodes"] == [{"node": "b", "status": "reloaded", "errors": []}]
        assert "s3cret" not in (await http.get(admin(b) + OCPP + "/authentication/users/CP2")).text
        assert await login_status(b, "CP2", basic("CP2", "s3cret")) == 101  # a user added on a logs in on b
        assert await login_status(b, "CP2", basic("CP2", "wrong")) == 401

        c.start()  # a node started later gets the rule, the authenticator and the users

        async def c_has_them() -> bool:
            try:
                rule = await http.get(admin(c) + "/rules/boot_accept")
            except httpx.ConnectError:
                return False
            return rule.status_code == 200 and await login_status(c, "CP2", basic("CP2", "wrong")) == 401

        await until(c_has_them, 60)
        assert await login_status(c, "CP2", basic("CP2", "s3cret")) == 101

        answer = await http.delete(admin(b) + OCPP + "/authentication/users/CP2")  # from b this time
        assert answer.status_code == 204, answer.text
        for gw in (a, c):
            assert (await http.get(admin(gw) + OCPP + "/authentication/users/CP2")).status_code == 404
            assert await login_status(gw, "CP2", basic("CP2", "s3cret")) == 401


def publish_retained(broker: Mosquitto, topic: str, payload: bytes) -> None:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="config-writer")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


async def test_a_bad_record_on_the_cluster_topics_is_refused_and_the_nodes_keep_serving(nodes, mosquitto: Mosquitto) -> None:
    a, b = nodes["a"], nodes["b"]
    a.start()
    b.start()
    async with httpx.AsyncClient(auth=AUTH, timeout=60) as http:
        await running(http, a, {"a", "b"})
        publish_retained(mosquitto, "ocppgw/cluster/config", b"not json")
        bad = {"version": [1000, "x"], "node": "x", "text": 'gateway.ocpp.dnstream.max_mqueue_len = "lots"'}
        publish_retained(mosquitto, "ocppgw/cluster/config", orjson.dumps(bad))
        publish_retained(mosquitto, "ocppgw/cluster/users", orjson.dumps({**bad, "text": "[]"}))
        for gw in (a, b):
            gw.wait_log(r"config version 1000 from node x refused here: .*max_mqueue_len", 60)
            gw.wait_log(r"users version 1000 from node x refused here: .*'users' object", 60)
            gw.wait_log(r"ignoring a malformed message on ocppgw/cluster/config", 60)
        assert "Traceback" not in a.log + b.log
        answer = await http.put(admin(a) + "/configs", content="gateway.ocpp.dnstream.max_mqueue_len = 9")
        assert answer.status_code == 200, answer.text
        assert answer.json()["nodes"] == [{"node": "b", "status": "reloaded", "errors": []}]
        assert has(await configs(http, b), 9)
        answer = await http.post(admin(b) + OCPP + "/authentication/users", json={"user_id": "CP9", "password": "s3cret"})
        assert answer.status_code == 201, answer.text
        assert answer.json()["nodes"] == [{"node": "a", "status": "reloaded", "errors": []}]

        # junk retained over a good record, with a number above every real one: the nodes refuse it and
        # publish theirs again, so a node that joins later is not handed the junk
        kept = version_of(a)
        publish_retained(mosquitto, "ocppgw/cluster/config", orjson.dumps({**bad, "version": [5000, "x"]}))

        async def restored() -> bool:
            record = await asyncio.to_thread(retained_record, mosquitto)
            return record is not None and record["version"] == kept

        await until(restored, 60)
        assert version_of(a) == version_of(b) == kept


def retained_record(broker: Mosquitto, kind: str = "config", wait: float = 3.0) -> dict | None:
    """The record retained on ocppgw/cluster/<kind>, as a fresh MQTT client reads it (None: none)."""
    got: queue.Queue[bytes] = queue.Queue()
    reader = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"record-reader-{kind}")
    reader.on_message = lambda client, userdata, message: got.put(message.payload) if message.retain else None
    reader.connect("127.0.0.1", broker.port)
    reader.subscribe(f"ocppgw/cluster/{kind}", qos=1)
    reader.loop_start()
    try:
        return orjson.loads(got.get(timeout=wait))
    except queue.Empty:
        return None
    finally:
        reader.loop_stop()
        reader.disconnect()


def version_of(gw) -> list:
    return orjson.loads((gw.workdir / "data" / "cluster.version.json").read_bytes())


AWAIT = re.compile(r"awaiting_timeout = \"?(\d+)s")
MQUEUE = re.compile(r"max_mqueue_len = (\d+)")


async def test_two_changes_at_once_converge_and_the_loser_is_told_superseded(nodes, mosquitto: Mosquitto) -> None:
    """Versions decide: both nodes end with the same version and config, and each caller's answer
    says truthfully whether its change is in it (kept) or not (superseded)."""
    a, b = nodes["a"], nodes["b"]
    a.start()
    b.start()
    collided = 0
    async with httpx.AsyncClient(auth=AUTH, timeout=60) as http:
        await running(http, a, {"a", "b"})
        for round_ in range(1, 6):
            mqueue, wait = 100 + round_, 40 + round_
            on_a, on_b = await asyncio.gather(
                http.put(admin(a) + "/configs", content=f"gateway.ocpp.dnstream.max_mqueue_len = {mqueue}"),
                http.put(admin(b) + "/configs", content=f"gateway.ocpp.dnstream.awaiting_timeout = {wait}s"))
            assert on_a.status_code == 200 and on_b.status_code == 200, (on_a.text, on_b.text)

            async def converged() -> bool:
                return version_of(a) == version_of(b)

            await until(converged, 60)
            text_a, text_b = await configs(http, a), await configs(http, b)
            effective = {(MQUEUE.search(t)[1], AWAIT.search(t)[1]) for t in (text_a, text_b)}
            assert len(effective) == 1, effective  # the same config on both
            (got_mqueue, got_wait), = effective
            for answer, kept, name in ((on_a, got_mqueue == str(mqueue), "a"), (on_b, got_wait == str(wait), "b")):
                body = answer.json()
                assert body["status"] == ("reloaded" if kept else "superseded"), (name, body, effective)
                if not kept:
                    collided += 1
                    winner = version_of(a)
                    assert body["superseded_by"] == {"node": winner[1], "version": winner[0]}, body
                    assert body["nodes"][0]["node"] == name and body["nodes"][0]["status"] == "superseded", body
            if collided:
                async def retained_is_the_winner() -> bool:  # not the loser, even if it reached the broker last
                    record = await asyncio.to_thread(retained_record, mosquitto)
                    return record is not None and record["version"] == version_of(a)

                await until(retained_is_the_winner, 60)
                break
        assert collided == 1, "no two changes ever met: the test did not test"


async def test_a_broker_that_lost_the_retained_records_gets_them_back(nodes, mosquitto: Mosquitto) -> None:
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    a.start()
    b.start()
    async with httpx.AsyncClient(auth=AUTH, timeout=60) as http:
        await running(http, a, {"a", "b"})
        answer = await http.put(admin(a) + "/configs", content="gateway.ocpp.dnstream.max_mqueue_len = 17")
        assert answer.status_code == 200, answer.text
        record = retained_record(mosquitto)
        assert record is not None and record["version"] == version_of(a)

        mosquitto.kill()  # restarted without its persistence file: every retained record is gone
        for saved in mosquitto.dir.glob("*.db"):
            saved.unlink()
        mosquitto.start()

        async def back() -> dict | None:
            return await asyncio.to_thread(retained_record, mosquitto)

        record = await until(back, 60)
        assert record["version"] == version_of(a) == version_of(b) and '"max_mqueue_len" = 17' in record["text"]
        # both nodes hold it: whichever looks first publishes it again (the other may see it come back first)
        again = re.compile(r"config version \d+ of node a published again \(no record on the broker\)")

        async def logged() -> bool:
            return any(again.search(line) for line in a.lines + b.lines)

        await until(logged, 30)

        c.start()  # a late joiner after the restart takes the config from the broker

        async def c_has_it() -> bool:
            try:
                return has(await configs(http, c), 17)
            except httpx.ConnectError:
                return False

        await until(c_has_it, 60)
        assert "Traceback" not in a.log + b.log + c.log


async def test_a_record_over_max_record_size_is_refused_and_counted(tmp_path: Path, mosquitto: Mosquitto) -> None:
    from tests.test_cluster import node

    gw = node(tmp_path, mosquitto, "small")
    gw.env["OCPPGW_CLUSTER__MAX_RECORD_SIZE"] = "2KB"
    try:
        gw.start()
        async with httpx.AsyncClient(auth=AUTH, timeout=60) as http:
            await running(http, gw, {"small"})
            text = "gateway.ocpp.dnstream.max_mqueue_len = 33\n" + "# padding\n" * 300
            publish_retained(mosquitto, "ocppgw/cluster/config", orjson.dumps({"version": [7, "x"], "node": "x", "text": text}))
            gw.wait_log(r"a config record of \d+ bytes refused: over cluster.max_record_size \(2048\)", 60)
            metrics = (await http.get(admin(gw) + "/prometheus/stats")).text
            assert 'ocppgw_cluster_records_too_large_total{kind="config"} 1.0' in metrics, metrics
            assert not has(await configs(http, gw), 33)
            small = {"version": [8, "x"], "node": "x", "text": "gateway.ocpp.dnstream.max_mqueue_len = 34"}
            publish_retained(mosquitto, "ocppgw/cluster/config", orjson.dumps(small))

            async def taken() -> bool:
                return has(await configs(http, gw), 34)

            await until(taken, 60)  # the node kept serving and takes a record within the limit
            assert "Traceback" not in gw.log
    finally:
        gw.stop()
