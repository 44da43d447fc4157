"""A charge point's first CALL must not reach the backend before its command topic is subscribed."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import websockets

from tests.ocpp_support import Backend, running_gateway

pytestmark = pytest.mark.timeout(90)

BOOT_RULE = '''
rule_engine.rules.boot {
  sql = """SELECT clientid, payload.UniqueId AS id FROM "ocpp/cp/+" WHERE payload.Action = 'BootNotification'"""
  actions = [{function = republish, args { topic = "ocpp/cs/${clientid}",
    payload = """{"MessageTypeId": 3, "UniqueId": "${id}", "Payload": {"status": "Accepted", "interval": 300, "currentTime": "2026-01-01T00:00:00Z"}}""" }}]
}
'''


class HeartbeatBackend(Backend):
    """Answers every Heartbeat at once, as a fast backend would."""

    def _on_message(self, client, userdata, m) -> None:
        body = orjson.loads(m.payload)
        if body.get("Action") == "Heartbeat":
            cid = m.topic.rsplit("/", 1)[-1]
            client.publish(f"ocpp/cs/{cid}", orjson.dumps(
                {"MessageTypeId": 3, "UniqueId": body["UniqueId"], "Payload": {"currentTime": "2026-01-01T00:00:00Z"}}), qos=1)


async def test_a_burst_of_charge_points_gets_every_first_answer(tmp_path, mosquitto):
    conf = BOOT_RULE + "gateway.ocpp.listeners.ws.default.max_conn_rate = 10000\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        backend = HeartbeatBackend(mosquitto.port, "ocpp/cp/+")

        async def charge_point(i: int) -> bool:
            async with websockets.connect(gw.url(f"RACE{i:03d}"), subprotocols=["ocpp1.6"]) as ws:
                await ws.send('[2,"1","BootNotification",{"chargePointVendor":"v","chargePointModel":"m"}]')
                assert orjson.loads(await asyncio.wait_for(ws.recv(), 10))[:2] == [3, "1"]
                await ws.send('[2,"2","Heartbeat",{}]')  # at once: its answer needs the command topic
                try:
                    return orjson.loads(await asyncio.wait_for(ws.recv(), 10))[:2] == [3, "2"]
                except asyncio.TimeoutError:
                    return False

        answered = await asyncio.gather(*(charge_point(i) for i in range(100)))
        backend.close()
        assert all(answered), f"{answered.count(False)} of 100 first Heartbeats were never answered"
