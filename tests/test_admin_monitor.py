"""The monitor (samples of traffic and buffers), the alarms and the schema endpoints of the admin API,
on a real gateway with real charge points, a real mosquitto (stopped and started again) and an HTTP
action aimed at a closed port. The sampling interval is made short for the tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import websockets

import engine.monitor
from tests.ocpp_support import Gateway, eventually, running_gateway
from tests.servers import free_port

pytestmark = pytest.mark.timeout(90)

CREDS = ("admin", "public")
SCHEMAS = "/gateways/ocpp/schemas"


@pytest.fixture(autouse=True)
def fast_ticks(monkeypatch):
    monkeypatch.setattr(engine.monitor, "SAMPLE_INTERVAL", 0.05)


@contextlib.asynccontextmanager
async def admin(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gw.admin_url, auth=CREDS, timeout=30) as client:
        yield client


async def get(http: httpx.AsyncClient, path: str, **params: Any) -> Any:
    response = await http.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def wait_for(http: httpx.AsyncClient, path: str, predicate: Any, **params: Any) -> Any:
    found: list[Any] = []

    async def probe() -> bool:
        found[:] = [await get(http, path, **params)]
        return bool(predicate(found[0]))

    for _ in range(400):
        if await probe():
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path}: condition not reached; last {found}")


async def test_monitor_samples_traffic_after_ticks(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        async with websockets.connect(gw.url("CPM"), subprotocols=["ocpp1.6"]) as ws:
            await eventually(lambda: "CPM" in gw.ctx.sessions)
            for n in range(3):
                await ws.send(orjson.dumps([2, f"h{n}", "Heartbeat", {}]).decode())
            samples = await wait_for(http, "/monitor", lambda s: sum(x["received"] for x in s) >= 3)
            fields = {"time_stamp", "connections", "received", "sent", "dropped", "received_msg_rate",
                      "sent_msg_rate", "dropped_msg_rate", "bridge_buffered", "actions_buffered"}
            assert all(set(s) == fields for s in samples), samples
            assert sum(s["received"] for s in samples) == 3 and samples[-1]["connections"] == 1
            assert [s["time_stamp"] for s in samples] == sorted(s["time_stamp"] for s in samples)
            assert any(s["received_msg_rate"] > 0 for s in samples)
            current = await get(http, "/monitor_current")
            assert current["connections"] == 1 and "received_msg_rate" in current
            assert len(await get(http, "/monitor", latest=1)) <= len(await get(http, "/monitor"))
            for bad in ("0", "-5", "abc", "1e9", "9" * 40, ""):
                response = await http.get("/monitor", params={"latest": bad})
                assert response.status_code == 400 and response.json()["code"] == "BAD_REQUEST", (bad, response.text)
            assert (await http.get("/alarms", params={"activated": "maybe"})).status_code == 400


async def test_broker_down_raises_an_alarm_and_its_return_clears_it(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        assert (await get(http, "/alarms", activated="true"))["data"] == []
        mosquitto.terminate()
        active = await wait_for(http, "/alarms", lambda a: a["data"], activated="true")
        [alarm] = active["data"]
        assert alarm["name"] == "mqtt_bridge_down" and alarm["activated"] is True
        assert alarm["deactivate_at"] is None and alarm["node"] == "gw-test" and alarm["message"]
        mosquitto.start()
        await wait_for(http, "/alarms", lambda a: not a["data"], activated="true")
        ended = (await get(http, "/alarms", activated="false"))["data"]
        assert [a["name"] for a in ended] == ["mqtt_bridge_down"]
        assert ended[0]["activated"] is False and ended[0]["deactivated_at"] >= ended[0]["activated_at"]


async def test_an_http_action_to_a_closed_port_raises_action_failing(tmp_path, mosquitto):
    conf = f'''
        connectors.http.h {{ url = "http://127.0.0.1:{free_port()}" }}
        actions.http.a {{ connector = h, resource_opts {{ health_check_interval = 1h, request_ttl = 60s }} }}
        rule_engine.rules.r {{ sql = """SELECT clientid FROM "ocpp/cp/#" """, actions = ["http:a"] }}
    '''
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw, admin(gw) as http:
        async with websockets.connect(gw.url("CPX"), subprotocols=["ocpp1.6"]) as ws:
            await eventually(lambda: "CPX" in gw.ctx.sessions)
            await ws.send(orjson.dumps([2, "h1", "Heartbeat", {}]).decode())
            active = await wait_for(http, "/alarms", lambda a: any(x["name"] == "action_failing:http:a"
                                                                    for x in a["data"]), activated="true")
            [alarm] = [a for a in active["data"] if a["name"] == "action_failing:http:a"]
            assert alarm["details"]["action"] == "http:a" and "http:a" in alarm["message"]


async def test_schema_validation_for_each_version(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        async def validate(body: Any) -> httpx.Response:
            return await http.post(f"{SCHEMAS}/validate", json=body)

        cases = [
            ("ocpp1.6", "Reset", {"type": "Soft"}, {"type": "Sometime"}),
            ("ocpp2.0.1", "Reset", {"type": "Immediate"}, {"type": 5}),
            ("ocpp2.1", "GetVariables", {"getVariableData": [{"component": {"name": "C"}, "variable": {"name": "V"}}]},
             {"getVariableData": []}),
        ]
        for version, action, good, bad in cases:
            ok = await validate({"proto_ver": version, "action": action, "kind": "request", "payload": good})
            assert ok.status_code == 200 and ok.json() == {"valid": True}, (version, ok.text)
            wrong = (await validate({"proto_ver": version, "action": action, "payload": bad})).json()
            assert wrong["valid"] is False and wrong["errors"][0].startswith("payload"), (version, wrong)
            unknown = (await validate({"proto_ver": version, "action": "Nope", "payload": {}})).json()
            assert unknown["valid"] is False and "unknown action" in unknown["errors"][0]
        answer = (await validate({"proto_ver": "ocpp1.6", "action": "Reset", "kind": "response",
                                  "payload": {"status": "Accepted"}})).json()
        assert answer == {"valid": True}
        for body in ({"proto_ver": "ocpp9", "action": "Reset", "payload": {}},
                     {"proto_ver": "ocpp1.6", "action": "", "payload": {}},
                     {"proto_ver": "ocpp1.6", "action": "R" * 500, "payload": {}},
                     {"proto_ver": "ocpp1.6", "action": "Reset", "kind": "both", "payload": {}},
                     {"proto_ver": "ocpp1.6", "action": "Reset"}, {"proto_ver": 16, "action": "Reset", "payload": {}},
                     [1, 2], {"proto_ver": "ocpp1.6", "action": "Reset", "payload": {}, "extra": 1}):
            response = await validate(body)
            assert response.status_code == 400 and response.json()["code"] == "BAD_REQUEST", (body, response.text)
        raw = await http.post(f"{SCHEMAS}/validate", content=b"{not json", headers={"content-type": "application/json"})
        assert raw.status_code == 400

        v16 = await get(http, f"{SCHEMAS}/ocpp1.6")
        assert "Reset" in v16 and "RemoteStartTransaction" in v16 and "DataTransfer" in v16
        assert "BootNotification" not in v16 and "StatusNotification" not in v16
        v201 = await get(http, f"{SCHEMAS}/ocpp2.0.1")
        assert "RequestStartTransaction" in v201 and "TransactionEvent" not in v201 and v201 == sorted(v201)
        assert "SetDERControl" in await get(http, f"{SCHEMAS}/ocpp2.1")
        assert (await http.get(f"{SCHEMAS}/mqtt")).status_code == 404


async def test_schema_endpoints_work_with_checking_off(tmp_path, mosquitto):
    conf = "gateway.ocpp.message_format_checking = disable\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw, admin(gw) as http:
        assert gw.ctx.registry is None
        bad = (await http.post(f"{SCHEMAS}/validate", json={"proto_ver": "ocpp1.6", "action": "Reset",
                                                            "payload": {}})).json()
        assert bad["valid"] is False and "type" in bad["errors"][0]
