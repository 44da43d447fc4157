"""The charge point list as the dashboard reads it: boot identity, connector statuses, last message,
in-flight and queued commands, the status and protocol filters, and paging at 20,000 charge points.

Real gateway, real charge points over WebSocket (1.6 and 2.0.1); for scale, sessions stood in by
small objects are put in the real node's registry and listed through the real admin API."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import websockets

from engine.ocpp.fleet import FleetInfo, note
from tests.ocpp_support import Gateway, eventually, running_gateway

pytestmark = pytest.mark.timeout(90)

CREDS = ("admin", "public")
CLIENTS = "/gateways/ocpp/clients"


@contextlib.asynccontextmanager
async def admin(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gw.admin_url, auth=CREDS, timeout=30) as client:
        yield client


async def call(ws: Any, unique_id: str, action: str, payload: dict[str, Any]) -> None:
    await ws.send(orjson.dumps([2, unique_id, action, payload]).decode())


async def client_of(http: httpx.AsyncClient, cid: str) -> dict[str, Any]:
    response = await http.get(f"{CLIENTS}/{cid}")
    assert response.status_code == 200, response.text
    return response.json()


async def until(http: httpx.AsyncClient, cid: str, predicate: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def check() -> bool:
        found.update(await client_of(http, cid))
        return bool(predicate(found))

    deadline = time.monotonic() + 10
    while not await check():
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.05)
    return found


async def test_boot_and_connector_status_of_a_16_charge_point(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        async with websockets.connect(gw.url("CP16"), subprotocols=["ocpp1.6"]) as ws:
            await eventually(lambda: "CP16" in gw.ctx.sessions)
            before = await client_of(http, "CP16")
            assert before["boot"] is None and before["connectors"] == [] and before["last_message_at"] is None
            assert before["inflight"] == 0 and before["queued"] == 0 and before["node"] == "gw-test"
            await call(ws, "b1", "BootNotification", {"chargePointVendor": "VendorX", "chargePointModel": "M1",
                                                      "firmwareVersion": "1.2.3"})
            got = await until(http, "CP16", lambda c: c["boot"] is not None)
            assert got["boot"] == {"vendor": "VendorX", "model": "M1", "firmware_version": "1.2.3",
                                   "serial_number": None}
            assert got["last_message_at"].endswith("+00:00")
            await call(ws, "s1", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"})
            got = await until(http, "CP16", lambda c: c["connectors"])
            [connector] = got["connectors"]
            assert connector["evse_id"] is None and connector["connector_id"] == 1
            assert connector["status"] == "Available" and connector["error_code"] == "NoError"
            await call(ws, "s2", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Charging"})
            got = await until(http, "CP16", lambda c: c["connectors"][0]["status"] == "Charging")
            assert len(got["connectors"]) == 1
            listed = (await http.get(CLIENTS)).json()["data"]
            assert listed[0]["connectors"][0]["status"] == "Charging" and listed[0]["boot"]["model"] == "M1"


async def test_boot_and_connector_status_of_a_201_charge_point(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        async with websockets.connect(gw.url("CP201"), subprotocols=["ocpp2.0.1"]) as ws:
            await eventually(lambda: "CP201" in gw.ctx.sessions)
            await call(ws, "b1", "BootNotification", {"reason": "PowerUp", "chargingStation": {
                "vendorName": "V2", "model": "M2", "serialNumber": "SN9"}})
            got = await until(http, "CP201", lambda c: c["boot"] is not None)
            assert got["boot"] == {"vendor": "V2", "model": "M2", "firmware_version": None, "serial_number": "SN9"}
            await call(ws, "s1", "StatusNotification", {"timestamp": "2026-12-06T09:00:00Z",
                                                        "connectorStatus": "Available", "evseId": 2, "connectorId": 1})
            got = await until(http, "CP201", lambda c: c["connectors"])
            assert got["connectors"][0] | {"updated_at": None} == {
                "evse_id": 2, "connector_id": 1, "status": "Available", "error_code": None, "updated_at": None}
            await call(ws, "e1", "NotifyEvent", {"generatedAt": "2026-12-06T09:00:01Z", "seqNo": 0, "eventData": [{
                "eventId": 1, "timestamp": "2026-12-06T09:00:01Z", "trigger": "Delta", "actualValue": "Faulted",
                "eventNotificationType": "HardWiredNotification",
                "component": {"name": "Connector", "evse": {"id": 2, "connectorId": 1}},
                "variable": {"name": "AvailabilityState"}}]})
            got = await until(http, "CP201", lambda c: c["connectors"][0]["status"] == "Faulted")


async def test_status_and_protocol_filters(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        async with contextlib.AsyncExitStack() as stack:
            sockets = {}
            for cid, proto in (("CPA", "ocpp1.6"), ("CPB", "ocpp1.6"), ("CPC", "ocpp2.0.1")):
                sockets[cid] = await stack.enter_async_context(websockets.connect(gw.url(cid), subprotocols=[proto]))
            await eventually(lambda: len(gw.ctx.sessions) == 3)
            await call(sockets["CPA"], "1", "StatusNotification", {"connectorId": 1, "errorCode": "GroundFailure",
                                                                   "status": "Faulted"})
            await call(sockets["CPA"], "2", "StatusNotification", {"connectorId": 2, "errorCode": "NoError",
                                                                   "status": "Available"})
            await call(sockets["CPB"], "1", "StatusNotification", {"connectorId": 1, "errorCode": "NoError",
                                                                   "status": "Available"})
            await call(sockets["CPC"], "1", "StatusNotification", {"timestamp": "2026-12-06T09:00:00Z",
                                                                   "connectorStatus": "Faulted", "evseId": 1,
                                                                   "connectorId": 1})

            async def ids(**params: str) -> list[str]:
                response = await http.get(CLIENTS, params=params)
                assert response.status_code == 200, response.text
                return [c["clientid"] for c in response.json()["data"]]

            await eventually(lambda: all(gw.ctx.sessions[c].fleet for c in sockets))
            assert await ids(status="Faulted") == ["CPA", "CPC"]
            assert await ids(status="Available") == ["CPA", "CPB"]
            assert await ids(status="Faulted", proto_ver="ocpp2.0.1") == ["CPC"]
            assert await ids(status="Charging") == []
            assert await ids(proto_ver="ocpp1.6", like_clientid="B") == ["CPB"]
            for params in ({"proto_ver": "mqtt5"}, {"status": "x" * 300}, {"status": "Faulted'; DROP"},
                           {"like_clientid": "A" * 5000}, {"gte_connected_at": "yesterday"}, {"page": "0"},
                           {"limit": "-1"}, {"page": "x"}):
                response = await http.get(CLIENTS, params=params)
                assert response.status_code == 400, (params, response.text)
                assert response.json()["code"] == "BAD_REQUEST"


async def test_inflight_and_queued_commands(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        async with websockets.connect(gw.url("CPQ"), subprotocols=["ocpp1.6"]) as ws:
            await eventually(lambda: "CPQ" in gw.ctx.sessions)
            body = {"action": "Reset", "payload": {"type": "Soft"}, "timeout": "20s"}
            first = asyncio.create_task(http.post(f"{CLIENTS}/CPQ/call", json=body))
            got = await until(http, "CPQ", lambda c: c["inflight"] == 1)
            assert got["queued"] == 0
            second = asyncio.create_task(http.post(f"{CLIENTS}/CPQ/call", json=body))
            got = await until(http, "CPQ", lambda c: c["queued"] == 1)
            assert got["inflight"] == 1
            for task in (first, second):
                frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                await ws.send(orjson.dumps([3, frame[1], {"status": "Accepted"}]).decode())
                assert (await task).json()["Payload"] == {"status": "Accepted"}
            got = await until(http, "CPQ", lambda c: c["inflight"] == 0 and c["queued"] == 0)


class FakeSession:
    """The little of a session the list and the metrics read."""

    def __init__(self, cid: str, proto_ver: str, status: str) -> None:
        self.cid, self.proto_ver, self.username = cid, proto_ver, None
        self.peer, self.listener, self.mountpoint = ("10.0.0.1", 1), "ocpp:ws:default", ""
        self.connected_at, self.closed, self.recv_cnt, self.send_cnt = 1_700_000_000_000, False, 0, 0
        self.keepalive, self.last_message_at = 60.0, None
        self.fleet = FleetInfo()
        if proto_ver == "ocpp1.6":
            note(self.fleet, proto_ver, "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": status})
        else:
            note(self.fleet, proto_ver, "StatusNotification", {"connectorId": 1, "evseId": 1, "connectorStatus": status})

    def info(self) -> dict[str, Any]:
        return {"clientid": self.cid, "proto_ver": self.proto_ver, "connected_at": self.connected_at,
                "mqueue_len": 0, "inflight_cnt": 0}

    def close(self, reason: str, code: int = 1000) -> None:
        self.closed = True


async def test_paging_and_search_at_20000_charge_points(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        registry = gw.ctx.sessions
        for n in range(20_000):
            proto = "ocpp2.0.1" if n % 4 == 0 else "ocpp1.6"
            registry.add(FakeSession(f"CP{n:05d}", proto, "Faulted" if n % 1000 == 7 else "Available"))
        try:
            first = (await http.get(CLIENTS, params={"limit": 50})).json()
            assert first["meta"] == {"page": 1, "limit": 50, "count": 20_000, "hasnext": True}
            assert [c["clientid"] for c in first["data"]] == [f"CP{n:05d}" for n in range(50)]
            order = registry.in_order()
            last = (await http.get(CLIENTS, params={"limit": 50, "page": 400})).json()
            assert last["meta"]["hasnext"] is False and last["data"][-1]["clientid"] == "CP19999"
            assert registry.in_order() is order  # not sorted again while nobody came or went
            found = (await http.get(CLIENTS, params={"like_clientid": "CP1999", "limit": 5, "page": 2})).json()
            assert found["meta"] == {"page": 2, "limit": 5, "count": 10, "hasnext": False}  # CP19990..CP19999
            assert [c["clientid"] for c in found["data"]] == [f"CP1999{n}" for n in range(5, 10)]
            faulted = (await http.get(CLIENTS, params={"status": "Faulted", "limit": 100})).json()
            assert faulted["meta"]["count"] == 20
            assert all(c["connectors"][0]["status"] == "Faulted" for c in faulted["data"])
            both = (await http.get(CLIENTS, params={"status": "Faulted", "proto_ver": "ocpp2.0.1"})).json()
            assert both["meta"]["count"] == 0  # n % 1000 == 7 is never a multiple of 4
            registry.add(FakeSession("AAA", "ocpp1.6", "Available"))
            assert (await http.get(CLIENTS, params={"limit": 1})).json()["data"][0]["clientid"] == "AAA"
        finally:
            for cid in list(registry):
                registry.remove(registry[cid])
