"""Reload under load: 200 charge points keep exchanging MeterValues while the config changes 20 times."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import websockets
from ocpp import v16

from engine.bus import Message
from engine.config import load_settings
from engine.reload import ReloadError
from tests.ocpp_support import Backend, running_gateway

pytestmark = pytest.mark.timeout(180)

CPS = 200
RELOADS = 20


def config(variant: str) -> str:
    topic = "cp/${cid}" if variant == "a" else "cpx/${cid}"
    return f'''
    gateway.ocpp.upstream.topic = "{topic}"
    rule_engine.rules.route {{
      sql = """SELECT clientid, payload.UniqueId AS id FROM "ocpp/+/+" WHERE payload.Action = 'MeterValues'"""
      actions = [{{function = republish, args {{ topic = "seen/{variant}/${{clientid}}" }}}}]
    }}
    '''


class AnsweringBackend(Backend):
    """Answers every CALL on either upstream topic with an empty CALLRESULT."""

    def _on_message(self, client, userdata, m) -> None:
        import orjson

        body = orjson.loads(m.payload)
        if body.get("MessageTypeId") == 2:
            cid = m.topic.rsplit("/", 1)[-1]
            client.publish(f"ocpp/cs/{cid}", orjson.dumps({"MessageTypeId": 3, "UniqueId": body["UniqueId"], "Payload": {}}), qos=1)


async def test_reload_20_times_under_load(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, config("a")) as gw:
        backend = AnsweringBackend(mosquitto.port, "ocpp/cp/+", "ocpp/cpx/+")
        problems: list[str] = []
        counts = {"upstream": 0, "routed": 0}

        def check_upstream(message: Message) -> None:
            # at the very instant of publishing, the topic is the current template's
            cid = message.headers.get("clientid")
            if message.origin != "ocpp" or message.topic.endswith("/Reply"):
                return
            expected = "ocpp/" + gw.ctx.call_topic.render({"cid": cid})
            counts["upstream"] += 1
            if message.topic != expected:
                problems.append(f"upstream {message.topic} while the config says {expected}")

        def check_routed(message: Message) -> None:
            current = gw.node.rules.rules["route"].actions[0].topic.text.split("/")[1]
            counts["routed"] += 1
            if message.topic.split("/")[1] != current:
                problems.append(f"rule output {message.topic} while rule set {current} runs")

        gw.node.bus.subscribe("ocpp/+/+", check_upstream)
        gw.node.bus.subscribe("seen/#", check_routed)

        stop = asyncio.Event()
        answered = [0] * CPS

        async def charge_point(i: int) -> None:
            cid = f"LOAD{i:03d}"
            async with websockets.connect(gw.url(cid), subprotocols=["ocpp1.6"]) as ws:
                cp = v16.ChargePoint(cid, ws, response_timeout=20)
                reader = asyncio.create_task(cp.start())
                try:
                    while not stop.is_set():
                        await cp.call(v16.call.MeterValues(connector_id=1, meter_value=[
                            {"timestamp": "2026-01-01T00:00:00Z", "sampledValue": [{"value": str(answered[i])}]}]))
                        answered[i] += 1
                finally:
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                        await reader

        load = [asyncio.create_task(charge_point(i)) for i in range(CPS)]
        while sum(1 for a in answered if a) < CPS:  # everyone is up and answered once
            await asyncio.sleep(0.05)
            for task in load:
                if task.done():
                    task.result()
        refused = 0
        for n in range(RELOADS):
            variant = "b" if n % 2 == 0 else "a"
            path = tmp_path / f"reload{n}.conf"
            path.write_text((tmp_path / "gateway.conf").read_text() + config(variant))
            await gw.node.reload(load_settings(path, {}))
            if n == 10:  # a broken rule in the middle: refused, the running rules carry on
                path.write_text((tmp_path / "gateway.conf").read_text() + config("a") +
                                'rule_engine.rules.broken { sql = "SELECT nope( FROM \\"t\\"" }\n')
                with pytest.raises(ReloadError):
                    await gw.node.reload(load_settings(path, {}))
                refused += 1
            before = sum(answered)
            while sum(answered) < before + CPS:  # traffic flows under each config
                await asyncio.sleep(0.02)
        disconnected_during_reloads = len(gw.events.named("client_disconnected"))
        stop.set()
        await asyncio.gather(*load)  # every CALL was answered: a charge point's call() would raise otherwise
        backend.close()
        assert problems == []
        assert refused == 1 and counts["upstream"] >= CPS * RELOADS and counts["routed"] == counts["upstream"]
        # nobody was disconnected by a reload (the test's own closes come after), nobody reconnected
        assert disconnected_during_reloads == 0
        assert len(gw.events.named("client_connected")) == CPS
