"""The example configs in conf/examples do what they say, against real databases and a real webhook."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import orjson
import psycopg
import pytest
import websockets

from tests.http_target import http_target
from tests.ocpp_support import eventually, running_gateway

pytestmark = pytest.mark.timeout(90)

EXAMPLES = Path(__file__).resolve().parent.parent / "conf" / "examples"
T0 = "2026-01-01T10:00:00Z"

FRAMES_16 = [
    [2, "s1", "StartTransaction", {"connectorId": 1, "idTag": "TAG1", "meterStart": 1000, "timestamp": T0}],
    [2, "m1", "MeterValues", {"connectorId": 1, "transactionId": 7, "meterValue": [{"timestamp": T0, "sampledValue": [
        {"value": "1500", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
        {"value": "7.2", "measurand": "Power.Active.Import", "unit": "kW"}, {"value": "230"}]}]}],
    [2, "e1", "StopTransaction", {"transactionId": 7, "meterStop": 2000, "timestamp": "2026-01-01T11:00:00Z"}],
]
FRAME_201 = [2, "t1", "TransactionEvent", {"eventType": "Started", "timestamp": T0, "triggerReason": "Authorized",
                                           "seqNo": 0, "transactionInfo": {"transactionId": "TX-9"},
                                           "evse": {"id": 1, "connectorId": 2}, "idToken": {"idToken": "T9", "type": "ISO14443"}}]


async def drive(gw) -> None:
    async with websockets.connect(gw.url("CP16"), subprotocols=["ocpp1.6"]) as ws:
        for frame in FRAMES_16:
            await ws.send(orjson.dumps(frame).decode())
    async with websockets.connect(gw.url("CS201"), subprotocols=["ocpp2.0.1"]) as ws:
        await ws.send(orjson.dumps(FRAME_201).decode())


async def test_ocpp_to_sqlite(tmp_path, mosquitto):
    db = tmp_path / "data" / "ocpp.db"
    db.parent.mkdir()
    with sqlite3.connect(db) as conn:
        conn.executescript((EXAMPLES / "schema-sqlite.sql").read_text())
    async with running_gateway(tmp_path, mosquitto.port, (EXAMPLES / "ocpp-to-sqlite.conf").read_text()) as gw:
        await drive(gw)
        actions = gw.node.resources.actions
        await eventually(lambda: actions["sqlite:transactions"].metrics.success == 3 and actions["sqlite:samples"].metrics.success == 3)
    with sqlite3.connect(db) as conn:
        tx = conn.execute("SELECT clientid, event, connector_id, transaction_id, id_tag, meter_wh, at FROM ocpp_transactions ORDER BY rowid").fetchall()
        samples = conn.execute("SELECT clientid, transaction_id, measurand, value, unit FROM ocpp_meter_samples ORDER BY rowid").fetchall()
    assert tx == [
        ("CP16", "StartTransaction", 1, None, "TAG1", 1000.0, T0),
        ("CP16", "StopTransaction", None, "7", None, 2000.0, "2026-01-01T11:00:00Z"),
        ("CS201", "Started", 2, "TX-9", "T9", None, T0),
    ]
    assert samples == [("CP16", "7", "Energy.Active.Import.Register", 1500.0, "Wh"),
                       ("CP16", "7", "Power.Active.Import", 7.2, "kW"),
                       ("CP16", "7", "Energy.Active.Import.Register", 230.0, None)]


async def test_ocpp_to_pgsql(tmp_path, mosquitto, postgres):
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS ocpp")
        conn.execute("CREATE DATABASE ocpp")
    with psycopg.connect(postgres.dsn("ocpp"), autocommit=True) as conn:
        conn.execute((EXAMPLES / "schema-pgsql.sql").read_text())
    conf = (EXAMPLES / "ocpp-to-pgsql.conf").read_text() + f'\nconnectors.pgsql.main.server = "127.0.0.1:{postgres.port}"\n'
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        await eventually(lambda: gw.node.resources.connectors["pgsql:main"].status == "connected")
        await drive(gw)
        actions = gw.node.resources.actions
        await eventually(lambda: actions["pgsql:transactions"].metrics.success == 3 and actions["pgsql:samples"].metrics.success == 3)
    with psycopg.connect(postgres.dsn("ocpp")) as conn:
        tx = conn.execute("SELECT event, connector_id, transaction_id, meter_wh, to_char(at AT TIME ZONE 'UTC', 'HH24:MI') "
                          "FROM ocpp_transactions ORDER BY at, event COLLATE \"C\"").fetchall()
        total = conn.execute("SELECT count(*), sum(value) FROM ocpp_meter_samples").fetchone()
    assert [(e, c, t, float(m) if m is not None else None, a) for e, c, t, m, a in tx] == [
        ("StartTransaction", 1, None, 1000.0, "10:00"), ("Started", 2, "TX-9", None, "10:00"),
        ("StopTransaction", None, "7", 2000.0, "11:00")]
    assert total[0] == 3 and float(total[1]) == pytest.approx(1737.2)


async def test_faults_to_a_webhook(tmp_path, mosquitto):
    async with http_target() as target:
        conf = (EXAMPLES / "faults-webhook.conf").read_text() + f'\nconnectors.http.alerts.url = "{target.url}"\n'
        async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
            async with websockets.connect(gw.url("CPF"), subprotocols=["ocpp1.6"]) as ws:
                for status in ("Available", "Faulted"):
                    await ws.send(orjson.dumps([2, status, "StatusNotification", {
                        "connectorId": 2, "errorCode": "GroundFailure" if status == "Faulted" else "NoError",
                        "status": status, "timestamp": T0}]).decode())
                await eventually(lambda: len(target.received) == 1)
                await asyncio.sleep(0.2)
        method, path, headers, body = target.received[0]
        assert (method, path, headers["authorization"]) == ("POST", "/ocpp/faults/CPF", "Bearer change-me")
        # a field the charge point did not send (info) is null in the JSON body
        assert orjson.loads(body) == {"clientid": "CPF", "connector": 2, "error": "GroundFailure", "info": None, "at": T0}
        assert len(target.received) == 1
