"""Charge points built on the `ocpp` package talk to a paho-mqtt backend through the gateway."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timezone

import orjson
import pytest
import websockets
from ocpp import v16, v21, v201
from ocpp.routing import on

from tests.ocpp_support import Backend, eventually, running_gateway, subscribed

pytestmark = pytest.mark.timeout(60)

NOW = datetime.now(timezone.utc).isoformat()


@contextlib.asynccontextmanager
async def charge_point(cls, url: str, cid: str, proto: str):
    async with websockets.connect(url, subprotocols=[proto]) as ws:
        assert ws.subprotocol == proto
        cp = cls(cid, ws)
        task = asyncio.create_task(cp.start())
        try:
            yield cp
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await task


def is_id(value) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 36


async def test_ocpp16_boot_heartbeat_transaction(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        backend = Backend(mosquitto.port)
        async with charge_point(v16.ChargePoint, gw.url("CP16"), "CP16", "ocpp1.6") as cp:
            await subscribed(gw, "CP16")
            topic = "ocpp/cp/CP16"

            boot = asyncio.create_task(cp.call(v16.call.BootNotification(charge_point_model="M1", charge_point_vendor="V1")))
            call = await backend.answer(topic, {"status": "Accepted", "currentTime": NOW, "interval": 300})
            assert call == {"MessageTypeId": 2, "UniqueId": call["UniqueId"], "Action": "BootNotification",
                            "Payload": {"chargePointModel": "M1", "chargePointVendor": "V1"}}
            assert is_id(call["UniqueId"])
            result = await boot
            assert (result.status, result.interval) == ("Accepted", 300)
            assert gw.ctx.sessions["CP16"].keepalive == 300  # the boot answer set the keepalive

            hb = asyncio.create_task(cp.call(v16.call.Heartbeat()))
            call = await backend.answer(topic, {"currentTime": NOW})
            assert (call["Action"], call["Payload"]) == ("Heartbeat", {})
            assert (await hb).current_time == NOW

            start = asyncio.create_task(cp.call(v16.call.StartTransaction(
                connector_id=1, id_tag="TAG1", meter_start=1000, timestamp=NOW)))
            call = await backend.answer(topic, {"transactionId": 42, "idTagInfo": {"status": "Accepted"}})
            assert call["Payload"] == {"connectorId": 1, "idTag": "TAG1", "meterStart": 1000, "timestamp": NOW}
            assert (await start).transaction_id == 42

            meter = asyncio.create_task(cp.call(v16.call.MeterValues(connector_id=1, transaction_id=42, meter_value=[
                {"timestamp": NOW, "sampledValue": [{"value": "1500", "measurand": "Energy.Active.Import.Register"},
                                                     {"value": "7.2", "measurand": "Power.Active.Import"}]}])))
            call = await backend.answer(topic, {})
            assert call["Action"] == "MeterValues"
            assert [s["value"] for s in call["Payload"]["meterValue"][0]["sampledValue"]] == ["1500", "7.2"]
            await meter

            stop = asyncio.create_task(cp.call(v16.call.StopTransaction(meter_stop=2000, timestamp=NOW, transaction_id=42)))
            call = await backend.answer(topic, {"idTagInfo": {"status": "Accepted"}})
            assert call["Payload"] == {"meterStop": 2000, "timestamp": NOW, "transactionId": 42}
            await stop
        await backend.nothing()
        backend.close()


async def test_ocpp201_boot_heartbeat_transaction_event(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        backend = Backend(mosquitto.port)
        async with charge_point(v201.ChargePoint, gw.url("CS201"), "CS201", "ocpp2.0.1") as cp:
            await subscribed(gw, "CS201")
            topic = "ocpp/cp/CS201"
            boot = asyncio.create_task(cp.call(v201.call.BootNotification(
                charging_station={"model": "M2", "vendor_name": "V2"}, reason="PowerUp")))
            call = await backend.answer(topic, {"currentTime": NOW, "interval": 120, "status": "Accepted"})
            assert call["Action"] == "BootNotification"
            assert call["Payload"] == {"chargingStation": {"model": "M2", "vendorName": "V2"}, "reason": "PowerUp"}
            assert (await boot).interval == 120
            assert gw.ctx.sessions["CS201"].proto_ver == "ocpp2.0.1"

            hb = asyncio.create_task(cp.call(v201.call.Heartbeat()))
            await backend.answer(topic, {"currentTime": NOW})
            await hb

            for seq, (event_type, trigger) in enumerate([("Started", "Authorized"), ("Updated", "MeterValuePeriodic"),
                                                          ("Ended", "StopAuthorized")]):
                extra = {}
                if event_type == "Updated":
                    extra["meter_value"] = [{"timestamp": NOW, "sampled_value": [{"value": 12.5}]}]
                tx = asyncio.create_task(cp.call(v201.call.TransactionEvent(
                    event_type=event_type, timestamp=NOW, trigger_reason=trigger, seq_no=seq,
                    transaction_info={"transaction_id": "T-1"}, **extra)))
                call = await backend.answer(topic, {})
                assert call["Action"] == "TransactionEvent"
                assert call["Payload"]["eventType"] == event_type and call["Payload"]["seqNo"] == seq
                assert call["Payload"]["transactionInfo"] == {"transactionId": "T-1"}
                if event_type == "Updated":
                    assert call["Payload"]["meterValue"][0]["sampledValue"] == [{"value": 12.5}]
                await tx
        backend.close()


async def test_ocpp21_boot_and_heartbeat(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        backend = Backend(mosquitto.port)
        # offering every version: the gateway picks the highest both speak
        async with websockets.connect(gw.url("CS21"), subprotocols=["ocpp1.6", "ocpp2.1", "ocpp2.0.1"]) as ws:
            assert ws.subprotocol == "ocpp2.1"
            cp = v21.ChargePoint("CS21", ws)
            task = asyncio.create_task(cp.start())
            await subscribed(gw, "CS21")
            boot = asyncio.create_task(cp.call(v21.call.BootNotification(
                charging_station={"model": "M3", "vendor_name": "V3"}, reason="PowerUp")))
            call = await backend.answer("ocpp/cp/CS21", {"currentTime": NOW, "interval": 60, "status": "Accepted"})
            assert call["Payload"]["chargingStation"] == {"model": "M3", "vendorName": "V3"}
            assert (await boot).status == "Accepted"
            hb = asyncio.create_task(cp.call(v21.call.Heartbeat()))
            await backend.answer("ocpp/cp/CS21", {"currentTime": NOW})
            await hb
            assert gw.ctx.sessions["CS21"].proto_ver == "ocpp2.1"
            task.cancel()
        backend.close()


class GatedCP16(v16.ChargePoint):
    """Answers each CALL only when the test opens its gate, and records what arrived."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.received: list[str] = []
        self.gate = asyncio.Event()

    async def _wait(self, action: str) -> None:
        self.received.append(action)
        await self.gate.wait()
        self.gate.clear()

    @on("Reset")
    async def on_reset(self, type, **kwargs):
        await self._wait("Reset")
        return v16.call_result.Reset(status="Accepted")

    @on("RemoteStartTransaction")
    async def on_remote_start(self, id_tag, **kwargs):
        await self._wait("RemoteStartTransaction")
        return v16.call_result.RemoteStartTransaction(status="Accepted")

    @on("SetChargingProfile")
    async def on_profile(self, connector_id, cs_charging_profiles, **kwargs):
        await self._wait("SetChargingProfile")
        return v16.call_result.SetChargingProfile(status="Rejected")


PROFILE = {"chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
           "chargingProfileKind": "Absolute", "chargingSchedule": {
               "chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16}]}}


async def test_downstream_calls_go_one_at_a_time_with_their_action_on_replies(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        backend = Backend(mosquitto.port, "ocpp/cp/#")
        async with charge_point(GatedCP16, gw.url("CPQ"), "CPQ", "ocpp1.6") as cp:
            await subscribed(gw, "CPQ")
            commands = [
                ("r1", "Reset", {"type": "Soft"}),
                ("r2", "RemoteStartTransaction", {"idTag": "TAG9", "connectorId": 1}),
                ("r3", "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": PROFILE}),
            ]
            for uid, action, payload in commands:
                backend.publish("ocpp/cs/CPQ", {"MessageTypeId": 2, "UniqueId": uid, "Action": action, "Payload": payload})
            session = gw.ctx.sessions["CPQ"]
            await eventually(lambda: cp.received == ["Reset"] and session.info()["mqueue_len"] == 2)
            await asyncio.sleep(0.3)
            assert cp.received == ["Reset"]  # the second waits until the first is answered
            for i, (uid, action, _) in enumerate(commands):
                cp.gate.set()
                topic, reply = await backend.next()
                assert topic == "ocpp/cp/CPQ/Reply"
                expected_status = "Rejected" if action == "SetChargingProfile" else "Accepted"
                assert reply == {"MessageTypeId": 3, "UniqueId": uid, "Action": action,
                                 "Payload": {"status": expected_status}}
                await eventually(lambda: len(cp.received) == min(i + 2, 3))
            assert cp.received == ["Reset", "RemoteStartTransaction", "SetChargingProfile"]
            delivered = gw.events.named("message_delivered")
            assert [orjson.loads(e["payload"])["UniqueId"] for e in delivered] == ["r1", "r2", "r3"]
            assert all(e["clientid"] == "CPQ" and e["topic"] == "ocpp/cs/CPQ" for e in delivered)
        backend.close()
