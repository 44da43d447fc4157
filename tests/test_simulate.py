"""`ocpp-gateway simulate`: fleets of simulated charge points against a running gateway.

The gateway checks every message both ways against the OCA schemas
(`message_format_checking = all`), accepts BootNotifications with a rule, and a
paho-mqtt backend answers every other CALL. The simulator's totals must equal
the gateway's own metrics, with no protocol error on either side.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import queue
import subprocess
import threading
from collections import defaultdict
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest

from engine.auth import UserStore
from engine.config.schema import PasswordHashSettings
from engine.ocpp.schemas import SchemaRegistry
from engine.simulate import handlers
from engine.simulate import messages as m
from engine.simulate.calls import CallChannel, CallError, Refuse
from engine.simulate.charger import ChargePoint
from engine.simulate.model import Tx
from engine.simulate.options import SimOptions
from engine.simulate.run import Fleet, run_fleet
from engine.simulate.stats import Stats
from tests.gateway import BIN
from tests.ocpp_support import eventually, running_gateway
from tests.servers import free_port

pytestmark = pytest.mark.timeout(120)


def conf(interval: int = 2, extra: str = "") -> str:
    return f'''
    gateway.ocpp.message_format_checking = all
    gateway.ocpp.heartbeat_checking_times_backoff = 3
    gateway.ocpp.listeners.ws.default.max_conn_rate = 5000
    rule_engine.rules.boot_accept {{
      sql = """SELECT clientid, payload.UniqueId AS id, now_rfc3339() AS Payload.currentTime,
                      {interval} AS Payload.interval, 'Accepted' AS Payload.status
               FROM "ocpp/cp/+" WHERE payload.Action = 'BootNotification'"""
      actions = [{{function = republish, args {{
        topic = "ocpp/cs/${{clientid}}"
        payload = """{{"MessageTypeId": 3, "UniqueId": "${{id}}", "Payload": ${{Payload}}}}"""
      }}}}]
    }}
    ''' + extra


def now() -> str:
    return m.timestamp()


class CsmsBackend:
    """A CSMS on the broker (paho-mqtt): answers every CALL but BootNotification (the rule's), checks the
    meter readings of every transaction, sends commands and collects the charge points' answers."""

    def __init__(self, port: int) -> None:
        self.tx_ids = itertools.count(1)
        self.command_ids = itertools.count(1)
        self.calls: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)  # cid → (action, payload)
        self.replies: dict[str, dict[str, Any]] = {}
        self.energy: dict[Any, list[int]] = defaultdict(list)  # transaction → readings in order
        self.seq: dict[str, list[int]] = defaultdict(list)
        self.problems: list[str] = []
        self.answered = 0
        self.sends: list[tuple[str, str, dict[str, Any]]] = []  # (cid, action, payload) of 2.1 SENDs
        self.lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"csms-{free_port()}")
        self.client.on_message = self._on_message
        subscribed: queue.Queue[bool] = queue.Queue()
        self.client.on_subscribe = lambda *a: subscribed.put(True)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe([("ocpp/cp/+", 0), ("ocpp/cp/+/Reply", 0)])
        subscribed.get(timeout=5)

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        body = orjson.loads(msg.payload)
        cid = msg.topic.split("/")[2]
        if msg.topic.endswith("/Reply"):
            with self.lock:
                self.replies[body["UniqueId"]] = body
            return
        action, payload = body["Action"], body["Payload"]
        with self.lock:
            self.calls[cid].append((action, payload))
            self._check(action, payload)
        if body["MessageTypeId"] == 6:  # a 2.1 SEND: never answered
            with self.lock:
                self.sends.append((cid, action, payload))
            return
        if action == "BootNotification":
            return  # the rule answers
        result = self.result(action, payload)
        client.publish(f"ocpp/cs/{cid}", orjson.dumps({"MessageTypeId": 3, "UniqueId": body["UniqueId"], "Payload": result}))
        self.answered += 1

    def result(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        if action == "Authorize":
            return {"idTagInfo": {"status": "Accepted"}} if "idTag" in payload else {"idTokenInfo": {"status": "Accepted"}}
        if action == "StartTransaction":
            tx = next(self.tx_ids)
            with self.lock:
                self.energy[tx].append(payload["meterStart"])
            return {"transactionId": tx, "idTagInfo": {"status": "Accepted"}}
        if action == "StopTransaction":
            return {"idTagInfo": {"status": "Accepted"}}
        if action == "TransactionEvent" and "idToken" in payload:
            return {"idTokenInfo": {"status": "Accepted"}}
        if action == "Heartbeat":
            return {"currentTime": now()}
        if action == "DataTransfer":
            return {"status": "Accepted"}
        return {}  # StatusNotification, MeterValues, TransactionEvent, NotifyReport, ...

    def _check(self, action: str, payload: dict[str, Any]) -> None:
        """Energy only grows within a transaction; 2.x sequence numbers count 0, 1, 2, ..."""
        if action == "MeterValues" and "transactionId" in payload:
            self._reading(payload["transactionId"], payload["meterValue"][0])
        elif action == "StopTransaction":
            self.energy[payload["transactionId"]].append(payload["meterStop"])
        elif action == "TransactionEvent":
            tx = payload["transactionInfo"]["transactionId"]
            self.seq[tx].append(payload["seqNo"])
            if "meterValue" in payload:
                self._reading(tx, payload["meterValue"][0])

    def _reading(self, tx: Any, sample: dict[str, Any]) -> None:
        for value in sample["sampledValue"]:
            if value["measurand"] == m.ENERGY:
                self.energy[tx].append(int(value["value"]))

    def check_transactions(self) -> int:
        """Every transaction's readings never decrease; 2.x seqNo are 0..n; the number of transactions."""
        with self.lock:
            for tx, readings in self.energy.items():
                if readings != sorted(readings):
                    self.problems.append(f"transaction {tx}: energy went down: {readings}")
            for tx, seqs in self.seq.items():
                if seqs != list(range(len(seqs))):
                    self.problems.append(f"transaction {tx}: seqNo {seqs}")
            return len(self.energy)

    def command(self, cid: str, action: str, payload: dict[str, Any]) -> str:
        uid = f"cmd-{next(self.command_ids)}"
        self.client.publish(f"ocpp/cs/{cid}", orjson.dumps(
            {"MessageTypeId": 2, "UniqueId": uid, "Action": action, "Payload": payload}), qos=1).wait_for_publish(5)
        return uid

    async def ask(self, cid: str, action: str, payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Send a command, return the charge point's answer (the whole reply message)."""
        uid = self.command(cid, action, payload)
        await eventually(lambda: uid in self.replies, timeout)
        return self.replies[uid]

    def actions_of(self, cid: str) -> list[str]:
        with self.lock:
            return [action for action, _ in self.calls[cid]]

    async def next_call(self, cid: str, action: str, after: int, timeout: float = 10.0) -> dict[str, Any]:
        """The first `action` CALL of `cid` after its first `after` CALLs."""
        def found() -> dict[str, Any] | None:
            with self.lock:
                for name, payload in self.calls[cid][after:]:
                    if name == action:
                        return payload
            return None

        await eventually(lambda: found() is not None, timeout)
        return found()  # type: ignore[return-value]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def options(gw: Any, **kw: Any) -> SimOptions:
    base: dict[str, Any] = {"url": f"ws://127.0.0.1:{gw.ocpp_port}/ocpp", "rate": 2000, "meter_interval": 0.5,
                            "session_duration": 1.5, "session_pause": 0.3, "backoff_min": 0.2, "backoff_max": 1.0,
                            "reboot_delay": 0.2, "call_timeout": 15, "drain_timeout": 15}
    base.update(kw)
    return SimOptions(**base)


async def assert_totals_match(gw: Any, summary: dict[str, Any]) -> None:
    """The simulator's counts are the gateway's: connections, frames and bytes both ways, no errors, no drops."""
    metrics = gw.node.ocpp.metrics
    await eventually(lambda: metrics.connections == 0, 15)
    assert summary["protocol_errors"] == 0, summary["protocol_error_kinds"]
    assert summary["timeouts"] == 0 and summary["connect_failures"] == 0, summary
    assert dict(metrics.errors) == {} and +metrics.drops == {}, (metrics.errors, metrics.drops)
    assert summary["connects"] == metrics.connections_total
    assert summary["frames_sent"] == metrics.frames_in
    assert summary["frames_received"] == metrics.frames_out
    assert summary["bytes_sent"] == metrics.bytes_in and summary["bytes_received"] == metrics.bytes_out
    assert summary["calls_sent"] == summary["calls_answered"]
    assert summary["frames_sent"] == (summary["calls_sent"] + summary["server_calls_answered"]
                                      + summary["server_callerrors_sent"] + summary["sends_sent"])
    assert summary["frames_received"] == (summary["calls_answered"] + summary["server_calls_received"]
                                          + summary["sends_received"] + summary["callresulterrors_received"])


# --- payloads --------------------------------------------------------------------------------------------


async def test_every_payload_is_valid_against_the_oca_schemas():
    registry = SchemaRegistry()
    ts = now()

    def valid(version: str, action: str, kind: str, payload: dict[str, Any]) -> None:
        problem = registry.check(version, action, kind, payload)
        assert problem is None, (version, action, kind, payload, problem)

    for version in ("ocpp1.6", "ocpp2.0.1", "ocpp2.1"):
        sample = m.meter_value(version, ts, 123456.7, 7400.2, "Sample.Periodic")
        valid(version, "BootNotification", "request", m.boot(version, "SIM00001", "RemoteReset"))
        valid(version, "Heartbeat", "request", {})
        valid(version, "Authorize", "request", m.authorize(version, "TAG00000001"))
        valid(version, "MeterValues", "request", m.meter_values(version, 1, sample, 5 if version == "ocpp1.6" else None))
        if version == "ocpp2.1":
            valid(version, "NotifyPeriodicEventStream", "request", m.periodic_event_stream(1, ts, 7400.2))
        valid(version, "FirmwareStatusNotification", "request", m.firmware_status(version))
        valid(version, "LogStatusNotification", "request", m.log_status())
        for state in m.V2_STATUS:
            valid(version, "StatusNotification", "request", m.status(version, 1, state, ts))
        if version == "ocpp1.6":
            valid(version, "StatusNotification", "request", m.status(version, 0, "Available", ts))
            valid(version, "StartTransaction", "request", m.start_transaction(1, "TAG00000001", 1000, ts, 3))
            for reason in m.V2_STOP:
                valid(version, "StopTransaction", "request", m.stop_transaction(7, 1200, ts, reason, "TAG00000001", sample))
            valid(version, "DiagnosticsStatusNotification", "request", m.diagnostics_status())
        else:
            valid(version, "TransactionEvent", "request", m.transaction_event(
                "Started", ts, "RemoteStart", 0, "a" * 32, evse=1, charging_state="Charging", tag="T1", sample=sample,
                remote_start_id=4, reservation_id=2))
            valid(version, "TransactionEvent", "request", m.transaction_event(
                "Updated", ts, "MeterValuePeriodic", 1, "a" * 32, charging_state="Charging", sample=sample))
            for reason, trigger in m.V2_STOP.values():
                valid(version, "TransactionEvent", "request", m.transaction_event(
                    "Ended", ts, trigger, 2, "a" * 32, charging_state="EVConnected", stopped_reason=reason,
                    sample=sample, tag="T1", offline=True))
            variables = [(c, v, "1", True, "integer") for c, v in handlers.VARIABLES_2]
            valid(version, "NotifyReport", "request", m.notify_report(3, ts, variables))


V16_COMMANDS: list[tuple[str, dict[str, Any]]] = [
    ("Reset", {"type": "Soft"}),
    ("RemoteStartTransaction", {"connectorId": 1, "idTag": "R1"}),
    ("RemoteStartTransaction", {"connectorId": 9, "idTag": "R1"}),
    ("RemoteStopTransaction", {"transactionId": 77}),
    ("RemoteStopTransaction", {"transactionId": 78}),
    ("UnlockConnector", {"connectorId": 2}),
    ("GetConfiguration", {}),
    ("GetConfiguration", {"key": ["HeartbeatInterval", "Nope"]}),
    ("ChangeConfiguration", {"key": "HeartbeatInterval", "value": "30"}),
    ("ChangeConfiguration", {"key": "NumberOfConnectors", "value": "3"}),
    ("ChangeAvailability", {"connectorId": 0, "type": "Inoperative"}),
    ("TriggerMessage", {"requestedMessage": "MeterValues", "connectorId": 1}),
    ("TriggerMessage", {"requestedMessage": "StatusNotification", "connectorId": 5}),
    ("ExtendedTriggerMessage", {"requestedMessage": "SignChargePointCertificate"}),
    ("SetChargingProfile", {"connectorId": 1, "csChargingProfiles": {
        "chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Absolute",
        "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16}]}}}),
    ("ClearChargingProfile", {"id": 1}),
    ("GetCompositeSchedule", {"connectorId": 1, "duration": 3600, "chargingRateUnit": "A"}),
    ("ReserveNow", {"connectorId": 2, "expiryDate": "2099-01-01T00:00:00Z", "idTag": "R2", "reservationId": 5}),
    ("CancelReservation", {"reservationId": 5}),
    ("ClearCache", {}),
    ("DataTransfer", {"vendorId": "x"}),
    ("GetLocalListVersion", {}),
    ("SendLocalList", {"listVersion": 3, "updateType": "Full"}),
    ("GetDiagnostics", {"location": "ftp://x/"}),
    ("UpdateFirmware", {"location": "ftp://x/", "retrieveDate": "2099-01-01T00:00:00Z"}),
]

V2_COMMANDS: list[tuple[str, dict[str, Any]]] = [
    ("Reset", {"type": "OnIdle"}),
    ("Reset", {"type": "Immediate", "evseId": 1}),
    ("RequestStartTransaction", {"evseId": 1, "remoteStartId": 9, "idToken": {"idToken": "R1", "type": "ISO14443"}}),
    ("RequestStopTransaction", {"transactionId": "b" * 32}),
    ("RequestStopTransaction", {"transactionId": "nope"}),
    ("UnlockConnector", {"evseId": 1, "connectorId": 1}),
    ("UnlockConnector", {"evseId": 2, "connectorId": 1}),
    ("GetVariables", {"getVariableData": [
        {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}},
        {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "Nope"}},
        {"component": {"name": "Nope"}, "variable": {"name": "Nope"}},
        {"component": {"name": "AuthCtrlr"}, "variable": {"name": "AuthorizeRemoteStart"}, "attributeType": "Target"}]}),
    ("SetVariables", {"setVariableData": [
        {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}, "attributeValue": "30"},
        {"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": "ProfileStackLevel"}, "attributeValue": "3"},
        {"component": {"name": "Nope"}, "variable": {"name": "x"}, "attributeValue": "3"}]}),
    ("GetBaseReport", {"requestId": 1, "reportBase": "FullInventory"}),
    ("ChangeAvailability", {"operationalStatus": "Inoperative", "evse": {"id": 2}}),
    ("TriggerMessage", {"requestedMessage": "TransactionEvent", "evse": {"id": 1}}),
    ("TriggerMessage", {"requestedMessage": "SignV2GCertificate"}),
    ("SetChargingProfile", {"evseId": 1, "chargingProfile": {
        "id": 4, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Absolute",
        "chargingSchedule": [{"id": 1, "chargingRateUnit": "W", "startSchedule": "2024-01-01T00:00:00Z",
                              "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000}]}]}}),
    ("ClearChargingProfile", {"chargingProfileId": 4}),
    ("GetCompositeSchedule", {"evseId": 1, "duration": 600, "chargingRateUnit": "W"}),
    ("ReserveNow", {"id": 5, "expiryDateTime": "2099-01-01T00:00:00Z", "idToken": {"idToken": "R2", "type": "ISO14443"}}),
    ("CancelReservation", {"reservationId": 5}),
    ("GetTransactionStatus", {"transactionId": "b" * 32}),
    ("ClearCache", {}),
    ("DataTransfer", {"vendorId": "x"}),
    ("GetLocalListVersion", {}),
    ("SendLocalList", {"versionNumber": 2, "updateType": "Full"}),
    ("CostUpdated", {"totalCost": 1.5, "transactionId": "b" * 32}),
    ("GetLog", {"logType": "DiagnosticsLog", "requestId": 1, "log": {"remoteLocation": "ftp://x/"}}),
]


@pytest.mark.parametrize("version", ["ocpp1.6", "ocpp2.0.1", "ocpp2.1"])
async def test_every_answer_to_a_command_is_valid(version):
    """Each command (valid as the CSMS sends it) gets an answer valid against the response schema."""
    registry = SchemaRegistry()
    fleet = Fleet(SimOptions(url="ws://127.0.0.1:9/ocpp", proto=version))
    cp = ChargePoint(fleet, 1).state
    c1 = cp.connectors[1]
    c1.tx = Tx(77 if version == "ocpp1.6" else "b" * 32, "T1", 100, 0.0)
    for action, payload in V16_COMMANDS if version == "ocpp1.6" else V2_COMMANDS:
        assert registry.check(version, action, "request", payload) is None, (action, payload)
        result, _ = handlers.answer(cp, action, payload)
        assert registry.check(version, action, "response", result) is None, (action, payload, result)
    with pytest.raises(handlers.Refuse) as refused:
        handlers.answer(cp, "InstallCertificate", {})
    assert refused.value.code == "NotSupported"
    with pytest.raises(handlers.Refuse) as refused:
        handlers.answer(cp, "MakeCoffee", {})
    assert refused.value.code == "NotImplemented"


class _Wire:
    """A link that keeps what the channel writes."""

    closing = False
    transport = object()

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)


async def test_the_call_channel_speaks_ocpp_j_with_the_gateways_codec():
    """CALLs out, answers in, the CSMS's CALLs answered from the table, bad frames counted (a bad CALL answered)."""
    def answer(action, payload):
        if action == "Nope":
            raise Refuse("NotSupported", "not here")
        return {"status": "Accepted", "type": payload["type"]}, None

    stats = Stats()
    channel = CallChannel("CP1", "ocpp2.0.1", asyncio.get_running_loop(),
                          SimOptions(url="ws://127.0.0.1:9/ocpp", proto="ocpp2.0.1"), stats, answer)
    wire = channel.link = _Wire()
    first, second = channel.call("Heartbeat", {}), channel.call("Authorize", {"idToken": {"idToken": "T"}})
    assert wire.sent == [b'[2,"1","Heartbeat",{}]']  # one in flight, the next queued
    channel.on_frame(b'[3,"1",{"currentTime":"2026-01-01T00:00:00Z"}]')
    assert first.result() == {"currentTime": "2026-01-01T00:00:00Z"}
    assert wire.sent[-1] == b'[2,"2","Authorize",{"idToken":{"idToken":"T"}}]'
    channel.on_frame(b'[4,"2","SecurityError","no",{}]')
    assert isinstance(second.exception(), CallError) and second.exception().code == "SecurityError"

    channel.on_frame(b'[2,"a","Reset",{"type":"Immediate"}]')
    assert wire.sent[-1] == b'[3,"a",{"status":"Accepted","type":"Immediate"}]'
    channel.on_frame(b'[2,"b","Nope",{}]')
    assert wire.sent[-1] == b'[4,"b","NotSupported","not here",{}]'
    channel.on_frame(b'[2,"c","Reset",{}]')  # the payload cannot be read
    assert orjson.loads(wire.sent[-1])[:3] == [4, "c", "FormatViolation"]
    channel.on_frame(b'[2,"d","Reset",[]]')  # not a CALL as frames.parse reads it: its CALLERROR
    assert orjson.loads(wire.sent[-1])[:3] == [4, "d", "FormatViolation"]
    sent = len(wire.sent)
    channel.on_frame(b'[3,"zz",{}]')  # answers nothing in flight
    channel.on_frame(b'[3,"e"]')  # a bad answer is counted, not answered
    channel.on_frame(b"not json")
    assert len(wire.sent) == sent
    assert stats.protocol_errors == {"callerror": 1, "bad_frame": 3, "unexpected_reply": 1}
    assert stats.server_calls_answered == 1 and stats.server_callerrors_sent == 3


async def test_the_call_channel_speaks_ocpp_21_send_and_callresulterror():
    """2.1: a SEND goes out beside the CALL in flight; a SEND received is counted, never answered;
    a CALLRESULTERROR received is counted as a protocol error."""
    stats = Stats()
    channel = CallChannel("CP1", "ocpp2.1", asyncio.get_running_loop(),
                          SimOptions(url="ws://127.0.0.1:9/ocpp", proto="ocpp2.1"), stats, lambda a, p: ({}, None))
    wire = channel.link = _Wire()
    pending = channel.call("Heartbeat", {})
    channel.notify("NotifyPeriodicEventStream", m.periodic_event_stream(1, now(), 7400))
    assert [orjson.loads(f)[0] for f in wire.sent] == [2, 6] and channel.inflight is not None
    channel.on_frame(b'[6,"x","NotifyPeriodicEventStream",{}]')
    channel.on_frame(b'[5,"9","FormatViolation","bad",{}]')
    assert len(wire.sent) == 2  # neither is answered
    assert stats.sends_sent == 1 and stats.sends_received == 1 and stats.callresulterrors_received == 1
    assert stats.protocol_errors == {"callresulterror": 1}
    channel.on_frame(b'[3,"1",{"currentTime":"2026-01-01T00:00:00Z"}]')
    assert pending.result() == {"currentTime": "2026-01-01T00:00:00Z"}


# --- fleets against the gateway ----------------------------------------------------------------------------


async def test_1000_charge_points_charge_with_ocpp16(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, conf(interval=2)) as gw:
        csms = CsmsBackend(mosquitto.port)
        try:
            summary = await run_fleet(options(gw, count=1000, proto="ocpp1.6", scenario="charge", connectors=1,
                                              duration=8, meter_interval=1.0, session_duration=2.0, session_pause=0.5))
            await assert_totals_match(gw, summary)
        finally:
            csms.close()
    assert summary["connected"] == 1000 and summary["connects"] == 1000 and summary["boots"] == 1000
    actions = summary["actions"]
    for action in ("BootNotification", "StatusNotification", "Authorize", "StartTransaction", "MeterValues",
                   "StopTransaction", "Heartbeat"):
        assert actions[action]["sent"] > 0 and actions[action]["sent"] == actions[action]["answered"], (action, actions)
    assert summary["transactions_started"] == summary["transactions_stopped"] == actions["StartTransaction"]["sent"]
    assert actions["StopTransaction"]["sent"] == actions["StartTransaction"]["sent"]
    assert summary["energy_wh"] > 0
    assert csms.check_transactions() == summary["transactions_started"]
    assert csms.problems == []
    assert summary["latency_ms"]["p50"] is not None and summary["latency_ms"]["p99"] >= summary["latency_ms"]["p50"]


@pytest.mark.parametrize("version", ["ocpp2.0.1", "ocpp2.1"])
async def test_charge_with_ocpp2(tmp_path, mosquitto, version):
    async with running_gateway(tmp_path, mosquitto.port, conf(interval=1)) as gw:
        csms = CsmsBackend(mosquitto.port)
        try:
            summary = await run_fleet(options(gw, count=40, proto=version, scenario="charge", connectors=2,
                                              duration=3, prefix="EV"))
            await assert_totals_match(gw, summary)
        finally:
            csms.close()
    assert summary["connected"] == 40 and min(csms.calls) == "EV00001"
    actions = summary["actions"]
    assert set(actions) >= {"BootNotification", "StatusNotification", "Authorize", "TransactionEvent", "Heartbeat"}
    assert "StartTransaction" not in actions and "MeterValues" not in actions
    assert summary["transactions_started"] == summary["transactions_stopped"] > 0
    events = [p["eventType"] for calls in csms.calls.values() for a, p in calls if a == "TransactionEvent"]
    assert events.count("Started") == events.count("Ended") == summary["transactions_started"]
    assert events.count("Updated") > 0
    assert csms.check_transactions() == summary["transactions_started"]
    assert csms.problems == []
    # a 2.1 charge point streams its power as NotifyPeriodicEventStream SENDs (schema-checked by the
    # gateway: message_format_checking = all), unanswered; older versions have no SEND
    streams = [p for _, a, p in csms.sends if a == "NotifyPeriodicEventStream"]
    assert len(streams) == summary["sends_sent"] == len(csms.sends)
    assert (len(streams) > 0) == (version == "ocpp2.1")
    assert all(p["pending"] == 0 and p["data"][0]["t"] == 0 for p in streams)


async def test_idle_fleet_over_several_source_addresses(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, conf(interval=1)) as gw:
        csms = CsmsBackend(mosquitto.port)
        try:
            fleet = Fleet(options(gw, count=30, proto="ocpp2.0.1", scenario="idle", duration=0, source_addresses=3))
            task = asyncio.create_task(fleet.run())
            await eventually(lambda: len(gw.ctx.sessions) == 30 and fleet.stats.boots == 30, 15)
            peers = {session.peer[0] for session in gw.ctx.sessions.values()}
            await eventually(lambda: fleet.stats.sent["Heartbeat"] >= 30, 10)
            fleet.stop()
            summary = await task
            await assert_totals_match(gw, summary)
        finally:
            csms.close()
    assert peers == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
    assert summary["source_addresses"] == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert summary["nofile"] > 0
    assert set(summary["actions"]) == {"BootNotification", "StatusNotification", "Heartbeat"}
    assert summary["actions"]["StatusNotification"]["sent"] == 30 * 2  # one per EVSE
    assert summary["transactions_started"] == 0


async def test_boot_scenario_ends_when_every_charge_point_booted(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, conf(interval=1)) as gw:
        csms = CsmsBackend(mosquitto.port)
        try:
            summary = await run_fleet(options(gw, count=50, proto="ocpp2.1", scenario="boot", duration=60))
            await assert_totals_match(gw, summary)
        finally:
            csms.close()
    assert summary["elapsed_s"] < 60
    assert summary["boots"] == 50 and summary["connects"] == 50
    assert summary["actions"]["BootNotification"]["answered"] == 50
    assert summary["actions"]["StatusNotification"]["answered"] == 100
    assert gw.node.ocpp.metrics.connections_total == 50


async def test_commands_are_answered_like_a_charger_ocpp16(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, conf(interval=2)) as gw:
        csms = CsmsBackend(mosquitto.port)
        try:
            fleet = Fleet(options(gw, count=2, proto="ocpp1.6", scenario="idle", duration=0, meter_interval=0.3,
                                  session_duration=3600))
            task = asyncio.create_task(fleet.run())
            await eventually(lambda: fleet.stats.boots == 2 and fleet.stats.calls_answered >= 2 * 4, 10)
            cid = "SIM00001"

            got = (await csms.ask(cid, "GetConfiguration", {"key": ["HeartbeatInterval", "Nope"]}))["Payload"]
            assert got == {"configurationKey": [{"key": "HeartbeatInterval", "readonly": False, "value": "2"}],
                           "unknownKey": ["Nope"]}
            assert (await csms.ask(cid, "ChangeConfiguration", {"key": "HeartbeatInterval", "value": "1"}))["Payload"] == {"status": "Accepted"}
            assert (await csms.ask(cid, "ChangeConfiguration", {"key": "NumberOfConnectors", "value": "5"}))["Payload"] == {"status": "Rejected"}
            assert (await csms.ask(cid, "ChangeConfiguration", {"key": "Colour", "value": "red"}))["Payload"] == {"status": "NotSupported"}
            got = (await csms.ask(cid, "GetConfiguration", {"key": ["HeartbeatInterval"]}))["Payload"]
            assert got["configurationKey"][0]["value"] == "1"
            assert fleet.chargers[0].state.heartbeat_interval == 1

            seen = len(csms.actions_of(cid))
            assert (await csms.ask(cid, "TriggerMessage", {"requestedMessage": "StatusNotification", "connectorId": 2}))["Payload"] == {"status": "Accepted"}
            status = await csms.next_call(cid, "StatusNotification", seen)
            assert status["connectorId"] == 2 and status["status"] == "Available"
            assert (await csms.ask(cid, "TriggerMessage", {"requestedMessage": "StatusNotification", "connectorId": 7}))["Payload"] == {"status": "Rejected"}

            seen = len(csms.actions_of(cid))
            assert (await csms.ask(cid, "RemoteStartTransaction", {"connectorId": 1, "idTag": "REMOTE1"}))["Payload"] == {"status": "Accepted"}
            start = await csms.next_call(cid, "StartTransaction", seen)
            assert start["idTag"] == "REMOTE1" and start["connectorId"] == 1
            assert "Authorize" not in csms.actions_of(cid)[seen:]  # AuthorizeRemoteTxRequests is false
            await eventually(lambda: fleet.chargers[0].state.connectors[1].tx is not None)
            tx_id = fleet.chargers[0].state.connectors[1].tx.id
            await csms.next_call(cid, "MeterValues", seen)
            assert (await csms.ask(cid, "RemoteStartTransaction", {"connectorId": 1, "idTag": "REMOTE2"}))["Payload"] == {"status": "Rejected"}

            profile = {"chargingProfileId": 8, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
                       "chargingProfileKind": "Absolute",
                       "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6}]}}
            assert (await csms.ask(cid, "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": profile}))["Payload"] == {"status": "Accepted"}
            assert (await csms.ask(cid, "SetChargingProfile", {"connectorId": 2, "csChargingProfiles": profile}))["Payload"] == {"status": "Rejected"}
            assert fleet.chargers[0].state.connectors[1].limit_w == 6 * 230 * 3
            got = (await csms.ask(cid, "GetCompositeSchedule", {"connectorId": 1, "duration": 60, "chargingRateUnit": "W"}))["Payload"]
            assert got["status"] == "Accepted" and got["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 4140

            seen = len(csms.actions_of(cid))
            assert (await csms.ask(cid, "RemoteStopTransaction", {"transactionId": tx_id + 1000}))["Payload"] == {"status": "Rejected"}
            assert (await csms.ask(cid, "RemoteStopTransaction", {"transactionId": tx_id}))["Payload"] == {"status": "Accepted"}
            stop = await csms.next_call(cid, "StopTransaction", seen)
            assert stop["transactionId"] == tx_id and stop["reason"] == "Remote" and stop["meterStop"] >= start["meterStart"]
            await eventually(lambda: csms.actions_of(cid)[-1] == "StatusNotification"
                             and csms.calls[cid][-1][1]["status"] == "Available")

            got = (await csms.ask(cid, "InstallCertificate", {"certificateType": "CentralSystemRootCertificate", "certificate": "x"}))
            assert got["MessageTypeId"] == 4 and got["ErrorCode"] == "NotSupported"

            seen = len(csms.actions_of(cid))
            assert (await csms.ask(cid, "Reset", {"type": "Soft"}))["Payload"] == {"status": "Accepted"}
            await csms.next_call(cid, "BootNotification", seen)
            await eventually(lambda: fleet.stats.boots == 3 and cid in gw.ctx.sessions)
            assert fleet.stats.reconnects == 1 and fleet.stats.unexpected_closes == 0

            fleet.stop()
            summary = await task
            await assert_totals_match(gw, summary)
        finally:
            csms.close()
    assert summary["server_callerrors_sent"] == 1
    assert summary["server_actions"]["GetConfiguration"] == 2 and summary["server_actions"]["Reset"] == 1
    assert summary["connects"] == 3 and summary["reconnects"] == 1
    assert csms.check_transactions() == 1 and csms.problems == []


async def test_commands_are_answered_like_a_charger_ocpp201(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, conf(interval=2)) as gw:
        csms = CsmsBackend(mosquitto.port)
        try:
            fleet = Fleet(options(gw, count=1, proto="ocpp2.0.1", scenario="idle", duration=0, meter_interval=0.3,
                                  session_duration=3600))
            task = asyncio.create_task(fleet.run())
            await eventually(lambda: fleet.stats.boots == 1 and fleet.stats.calls_answered >= 3, 10)
            cid = "SIM00001"
            cp = fleet.chargers[0].state

            got = (await csms.ask(cid, "GetVariables", {"getVariableData": [
                {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}},
                {"component": {"name": "Nope"}, "variable": {"name": "x"}}]}))["Payload"]["getVariableResult"]
            assert got[0]["attributeStatus"] == "Accepted" and got[0]["attributeValue"] == "2"
            assert got[1]["attributeStatus"] == "UnknownComponent"
            got = (await csms.ask(cid, "SetVariables", {"setVariableData": [
                {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}, "attributeValue": "1"},
                {"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": "ProfileStackLevel"}, "attributeValue": "1"}]}))
            assert [r["attributeStatus"] for r in got["Payload"]["setVariableResult"]] == ["Accepted", "Rejected"]
            assert cp.heartbeat_interval == 1

            seen = len(csms.actions_of(cid))
            assert (await csms.ask(cid, "GetBaseReport", {"requestId": 7, "reportBase": "ConfigurationInventory"}))["Payload"] == {"status": "Accepted"}
            report = await csms.next_call(cid, "NotifyReport", seen)
            assert report["requestId"] == 7 and len(report["reportData"]) == len(handlers.VARIABLES_2)

            seen = len(csms.actions_of(cid))
            got = await csms.ask(cid, "RequestStartTransaction", {"evseId": 2, "remoteStartId": 42,
                                                                  "idToken": {"idToken": "REMOTE1", "type": "ISO14443"}})
            assert got["Payload"] == {"status": "Accepted"}
            started = await csms.next_call(cid, "TransactionEvent", seen)
            assert started["eventType"] == "Started" and started["triggerReason"] == "RemoteStart"
            assert started["transactionInfo"]["remoteStartId"] == 42 and started["evse"] == {"id": 2, "connectorId": 1}
            tx_id = started["transactionInfo"]["transactionId"]

            seen = len(csms.actions_of(cid))
            assert (await csms.ask(cid, "TriggerMessage", {"requestedMessage": "TransactionEvent", "evse": {"id": 2}}))["Payload"] == {"status": "Accepted"}
            triggered = await csms.next_call(cid, "TransactionEvent", seen)
            assert triggered["triggerReason"] == "Trigger" and triggered["transactionInfo"]["transactionId"] == tx_id
            assert (await csms.ask(cid, "TriggerMessage", {"requestedMessage": "TransactionEvent", "evse": {"id": 1}}))["Payload"] == {"status": "Rejected"}

            profile = {"id": 3, "stackLevel": 0, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative",
                       "chargingSchedule": [{"id": 1, "chargingRateUnit": "W", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 3000}]}]}
            assert (await csms.ask(cid, "SetChargingProfile", {"evseId": 2, "chargingProfile": profile}))["Payload"] == {"status": "Accepted"}
            assert (await csms.ask(cid, "SetChargingProfile", {"evseId": 1, "chargingProfile": profile}))["Payload"] == {"status": "Rejected"}

            seen = len(csms.actions_of(cid))
            assert (await csms.ask(cid, "RequestStopTransaction", {"transactionId": tx_id}))["Payload"] == {"status": "Accepted"}
            ended = await csms.next_call(cid, "TransactionEvent", seen)
            while ended["eventType"] != "Ended":
                seen += csms.actions_of(cid)[seen:].index("TransactionEvent") + 1
                ended = await csms.next_call(cid, "TransactionEvent", seen)
            assert ended["triggerReason"] == "RemoteStop" and ended["transactionInfo"]["stoppedReason"] == "Remote"

            seen = len(csms.actions_of(cid))
            assert (await csms.ask(cid, "Reset", {"type": "Immediate"}))["Payload"] == {"status": "Accepted"}
            boot = await csms.next_call(cid, "BootNotification", seen)
            assert boot["reason"] == "RemoteReset"
            await eventually(lambda: fleet.stats.boots == 2 and cid in gw.ctx.sessions)

            fleet.stop()
            summary = await task
            await assert_totals_match(gw, summary)
        finally:
            csms.close()
    assert summary["reconnects"] == 1 and summary["server_callerrors_sent"] == 0
    assert csms.check_transactions() == 1 and csms.problems == []


async def test_reconnects_after_the_gateway_drops_the_connection(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, conf(interval=2)) as gw:
        csms = CsmsBackend(mosquitto.port)
        try:
            fleet = Fleet(options(gw, count=3, proto="ocpp1.6", scenario="charge", duration=0, session_duration=30))
            task = asyncio.create_task(fleet.run())
            await eventually(lambda: fleet.stats.tx_started == 6, 10)
            gw.ctx.sessions["SIM00002"].close("kicked", 1000)
            await eventually(lambda: fleet.stats.boots == 4 and fleet.stats.connected == 3, 10)
            fleet.stop()
            summary = await task
            await eventually(lambda: gw.node.ocpp.metrics.connections == 0)
        finally:
            csms.close()
    assert summary["reconnects"] == 1 and summary["unexpected_closes"] == 1
    assert summary["protocol_error_kinds"] == {"unexpected_close": 1}
    # the two sessions cut off were stopped after the reconnection, as a charger delivers its queued messages
    stops = [p for a, p in csms.calls["SIM00002"] if a == "StopTransaction"]
    assert [p["reason"] for p in stops].count("Other") == 2
    assert all(p["reason"] == "Local" for p in stops[2:])
    assert summary["transactions_started"] == summary["transactions_stopped"] >= 6
    assert csms.check_transactions() == summary["transactions_started"] and csms.problems == []


async def test_basic_authentication(tmp_path, mosquitto):
    store = UserStore.in_data_dir(tmp_path / "data", PasswordHashSettings(name="pbkdf2", iterations=1000))
    for i in (1, 2, 3):
        store.add(f"SIM0000{i}", "pw-secret")
    extra = "gateway.ocpp.authentication { enable = true, password_hash_algorithm { name = pbkdf2, iterations = 1000 } }"
    async with running_gateway(tmp_path, mosquitto.port, conf(interval=2, extra=extra)) as gw:
        csms = CsmsBackend(mosquitto.port)
        try:
            summary = await run_fleet(options(gw, count=3, scenario="boot", auth="{cid}:pw-secret"))
            await assert_totals_match(gw, summary)
            fleet = Fleet(options(gw, count=1, scenario="boot", auth="{cid}:wrong", duration=0.5))
            refused = await fleet.run()
        finally:
            csms.close()
    assert summary["boots"] == 3 and {s for s in gw.node.ocpp.metrics.refused} == {"bad_username_or_password"}
    assert refused["connects"] == 0 and refused["connect_errors"].get("http 401", 0) >= 1


async def test_mutual_tls_with_a_certificate_per_charge_point(tmp_path, mosquitto):
    from tests.certs import CertAuthority

    (tmp_path / "pki").mkdir()
    ca = CertAuthority(tmp_path / "pki")
    server = ca.server()
    for cid in ("SIM00001", "SIM00002"):
        ca.client(cid)
    port = free_port()
    extra = f"""
    gateway.ocpp.listeners.wss.mutual {{ bind = "127.0.0.1:{port}", ssl_options {{
      certfile = "{server.cert}", keyfile = "{server.key}", cacertfile = "{ca.cert_path}",
      verify = verify_peer, fail_if_no_peer_cert = true, cn_must_match_cid = true }} }}
    """
    async with running_gateway(tmp_path, mosquitto.port, conf(interval=2, extra=extra)) as gw:
        csms = CsmsBackend(mosquitto.port)
        try:
            summary = await run_fleet(options(
                gw, url=f"wss://localhost:{port}/ocpp", count=2, scenario="boot", tls_ca=str(ca.cert_path),
                tls_cert=str(tmp_path / "pki" / "client-{cid}.pem"), tls_key=str(tmp_path / "pki" / "client-{cid}.key")))
            await assert_totals_match(gw, summary)
        finally:
            csms.close()
    assert summary["boots"] == 2 and summary["connects"] == 2


async def test_cli_json_summary(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, conf(interval=1)) as gw:
        csms = CsmsBackend(mosquitto.port)
        try:
            process = await asyncio.create_subprocess_exec(
                BIN, "simulate", "--url", f"ws://127.0.0.1:{gw.ocpp_port}/ocpp", "--count", "20", "--proto", "ocpp1.6",
                "--scenario", "charge", "--rate", "200", "--duration", "2", "--meter-interval", "0.5",
                "--session-duration", "1", "--session-pause", "0.2", "--prefix", "CLI", "--json",
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
            assert process.returncode == 0, stderr.decode()
            summary = json.loads(stdout)
            await assert_totals_match(gw, summary)
        finally:
            csms.close()
    assert summary["count"] == summary["connected"] == 20 and summary["transactions_started"] > 0
    for key in ("calls_sent", "calls_answered", "callerrors_received", "protocol_errors", "server_calls_answered",
                "reconnects", "p50_ms", "p99_ms", "latency_ms", "actions", "calls_per_s", "energy_wh"):
        assert key in summary, key
    assert min(csms.calls) == "CLI00001"
    assert "connected 20/20" in stderr.decode()  # the progress line


def test_cli_help_and_bad_options():
    out = subprocess.run([BIN, "simulate", "--help"], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0
    for option in ("--url", "--count", "--proto", "--scenario", "--rate", "--auth", "--heartbeat", "--meter-interval",
                   "--source-addresses", "--tls-ca", "--json"):
        assert option in out.stdout, option
    out = subprocess.run([BIN, "simulate", "--url", "http://x/ocpp", "--count", "0"], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 2 and "ws://" in out.stderr and "--count" in out.stderr
    out = subprocess.run([BIN, "simulate", "--url", "ws://x/ocpp", "--scenario", "dance"], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 2
