"""SQLite and PostgreSQL actions: real databases, outages, locks, batching, injection."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import orjson
import psycopg
import pytest
import websockets

from engine.bus import Message
from engine.node import NodeError
from tests.ocpp_support import eventually, running_gateway

pytestmark = pytest.mark.timeout(90)

METER_RULE = '''
rule_engine.rules.meter {
  sql = """SELECT clientid, payload.UniqueId AS id, payload.Payload.connectorId AS connector,
                  payload.Payload.meterValue[1].sampledValue[1].value AS value
           FROM "ocpp/cp/+" WHERE payload.Action = 'MeterValues'"""
  actions = ["%s:meter"]
}
'''


def meter_message(i: int, cid: str = "CP1") -> Message:
    body = {"MessageTypeId": 2, "UniqueId": f"m{i}", "Action": "MeterValues",
            "Payload": {"connectorId": 1 + i % 2, "meterValue": [{"timestamp": "2026-01-01T00:00:00Z",
                                                                    "sampledValue": [{"value": str(1000 + i)}]}]}}
    return Message(f"ocpp/cp/{cid}", orjson.dumps(body), origin="ocpp", decoded=body,
                   headers={"clientid": cid, "username": None, "peerhost": "127.0.0.1", "proto_ver": "ocpp1.6", "node": "t"})


def invariant(m) -> None:
    assert m.matched == m.success + m.failed + m.dropped + m.inflight + m.queuing, m


# --- SQLite ------------------------------------------------------------------------------


def sqlite_conf(db, opts: str = "batch_size = 100, batch_time = 50ms") -> str:
    return f'''
    connectors.sqlite.local {{ path = "{db}", busy_timeout = 100ms }}
    actions.sqlite.meter {{
      connector = local
      sql = "INSERT INTO meter (clientid, id, connector, value) VALUES (${{clientid}}, ${{id}}, ${{connector}}, ${{value}})"
      resource_opts {{ {opts}, retry_interval = 50ms }}
    }}
    ''' + METER_RULE % "sqlite"


def make_sqlite(path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE meter (clientid TEXT, id TEXT, connector INTEGER, value REAL)")


async def test_sqlite_batches_many_messages_into_few_transactions(tmp_path, mosquitto):
    db = tmp_path / "meter.db"
    make_sqlite(db)
    async with running_gateway(tmp_path, mosquitto.port, sqlite_conf(db)) as gw:
        for i in range(1000):
            gw.node.bus.publish(meter_message(i))
            if i % 100 == 99:
                await asyncio.sleep(0)  # let the worker run between bursts, as real traffic would
        action = gw.node.resources.actions["sqlite:meter"]
        await eventually(lambda: action.metrics.success == 1000)
        connector = gw.node.resources.connectors["sqlite:local"]
        assert connector.transactions <= 40, connector.transactions  # 1,000 messages, far fewer transactions
        invariant(action.metrics)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT count(*), count(DISTINCT id), min(value), max(value), typeof(value), typeof(connector) FROM meter").fetchone()
    assert rows == (1000, 1000, 1000.0, 1999.0, "real", "integer")


async def test_sqlite_locked_file_loses_nothing(tmp_path, mosquitto):
    db = tmp_path / "meter.db"
    make_sqlite(db)
    release = threading.Event()
    locked = threading.Event()

    def hold_lock():
        conn = sqlite3.connect(db, timeout=5, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        locked.set()
        release.wait(10)
        conn.execute("COMMIT")
        conn.close()

    async with running_gateway(tmp_path, mosquitto.port, sqlite_conf(db, "batch_size = 20, batch_time = 10ms")) as gw:
        action = gw.node.resources.actions["sqlite:meter"]
        connector = gw.node.resources.connectors["sqlite:local"]
        await eventually(lambda: connector.status == "connected")  # the lock comes while writing, not before
        thread = threading.Thread(target=hold_lock)
        thread.start()
        await asyncio.to_thread(locked.wait, 5)
        for i in range(200):
            gw.node.bus.publish(meter_message(i))
        await asyncio.sleep(1.0)
        assert action.metrics.success == 0 and action.metrics.retried > 0  # locked: retried, not lost
        release.set()
        await asyncio.to_thread(thread.join, 10)
        await eventually(lambda: action.metrics.success == 200, timeout=20)
        assert action.metrics.failed == 0 and action.metrics.dropped == 0
        invariant(action.metrics)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT id) FROM meter").fetchone() == (200, 200)


async def test_sql_injection_is_stored_literally(tmp_path, mosquitto):
    db = tmp_path / "boot.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (clientid TEXT, vendor TEXT)")
    conf = f'''
    connectors.sqlite.local.path = "{db}"
    actions.sqlite.boots {{ connector = local, sql = "INSERT INTO t (clientid, vendor) VALUES ('${{clientid}}', '${{vendor}}')" }}
    rule_engine.rules.boots {{
      sql = """SELECT clientid, payload.Payload.chargePointVendor AS vendor FROM "ocpp/cp/+"
               WHERE payload.Action = 'BootNotification'"""
      actions = ["sqlite:boots"]
    }}
    '''
    evil = "x'); DROP TABLE t; --"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        async with websockets.connect(gw.url("EVIL"), subprotocols=["ocpp1.6"]) as ws:
            await ws.send(orjson.dumps([2, "b1", "BootNotification", {"chargePointVendor": evil, "chargePointModel": "m"}]).decode())
            action = gw.node.resources.actions["sqlite:boots"]
            await eventually(lambda: action.metrics.success == 1)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT clientid, vendor FROM t").fetchall() == [("EVIL", evil)]


async def test_a_statement_the_database_refuses_fails_without_retry(tmp_path, mosquitto):
    db = tmp_path / "empty.db"
    sqlite3.connect(db).close()  # no table
    async with running_gateway(tmp_path, mosquitto.port, sqlite_conf(db, "batch_size = 1")) as gw:
        for i in range(3):
            gw.node.bus.publish(meter_message(i))
        action = gw.node.resources.actions["sqlite:meter"]
        await eventually(lambda: action.metrics.failed == 3)
        assert action.metrics.retried == 0
        invariant(action.metrics)


@pytest.mark.parametrize(
    "text,expected",
    [
        ('actions.sqlite.a { connector = local }', "actions.sqlite.a.parameters.sql: missing, required"),
        ('actions.sqlite.a { connector = other, parameters.sql = "INSERT INTO t VALUES (${x})" }', "actions.sqlite.a.connector = 'other': no connectors.sqlite.other"),
        ('actions.sqlite.a { connector = local, parameters.sql = "INSERT INTO t VALUES (${})" }', "actions.sqlite.a.parameters.sql: empty placeholder"),
        ('actions.sqlite.a { connector = local, parameters.sql = "INSERT INTO t VALUES (1)" }', "actions.sqlite.a.parameters.sql: the SQL has no ${...} placeholders"),
        # the deprecated shape (sql beside connector) is checked the same, named where it now lives
        ('actions.sqlite.a { connector = local, sql = "INSERT INTO t VALUES (1)" }', "actions.sqlite.a.parameters.sql: the SQL has no ${...} placeholders"),
        ("""actions.sqlite.a { connector = local, parameters.sql = "INSERT INTO t VALUES ('id-${x}')" }""", "a placeholder must be a whole value"),
        ('actions.sqlite.a { connector = local, parameters.sql = "INSERT INTO t VALUES (${x}" }', None),
        ('actions.pgsql.a { connector = pg, parameters.sql = "INSERT INTO t VALUES (${x})" }\nconnectors.pgsql.pg { database = d, server = "h:99999" }',
         "connectors.pgsql.pg.server = 'h:99999': the port is not a number in 1..65535"),
        ('actions.pgsql.a { connector = pg, parameters.sql = "INSERT INTO t VALUES (${x})" }\nconnectors.pgsql.pg { database = d, server = "::1:5432" }',
         "connectors.pgsql.pg.server = '::1:5432': write an IPv6 address in brackets"),
        ('actions.pgsql.a { connector = pg, parameters.sql = "INSERT INTO t VALUES (${x})" }\nconnectors.pgsql.pg { server = "h:1" }',
         "connectors.pgsql.pg.database: missing, required"),
    ],
)
async def test_bad_sql_action_config(tmp_path, mosquitto, text, expected):
    conf = 'connectors.sqlite.local.path = "x.db"\n' + text
    if expected is None:  # an unbalanced statement is the database's to refuse: it loads, then fails per message
        async with running_gateway(tmp_path, mosquitto.port, conf):
            return
    with pytest.raises((NodeError, Exception)) as info:
        async with running_gateway(tmp_path, mosquitto.port, conf):
            pass
    assert expected in str(info.value)


# --- PostgreSQL --------------------------------------------------------------------------


def pg_conf(pg, opts: str = "batch_size = 50, batch_time = 20ms") -> str:
    return f'''
    connectors.pgsql.main {{ server = "127.0.0.1:{pg.port}", database = gw, username = postgres, connect_timeout = 2s, pool_size = 2 }}
    actions.pgsql.meter {{
      connector = main
      sql = "INSERT INTO meter (clientid, id, connector, value) VALUES (${{clientid}}, ${{id}}, ${{connector}}, ${{value}})"
      resource_opts {{ {opts}, retry_interval = 100ms, health_check_interval = 300ms, request_ttl = 60s }}
    }}
    ''' + METER_RULE % "pgsql"


@pytest.fixture
def pg_db(postgres):
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS gw")
        conn.execute("CREATE DATABASE gw")
    with psycopg.connect(postgres.dsn("gw"), autocommit=True) as conn:
        conn.execute("CREATE TABLE meter (clientid text, id text, connector integer, value numeric)")
    return postgres


async def test_pgsql_rows_land_with_their_types(tmp_path, mosquitto, pg_db):
    with psycopg.connect(pg_db.dsn("gw"), autocommit=True) as conn:
        conn.execute("CREATE TABLE typed (cid text, n integer, x double precision, ok boolean, data jsonb, at timestamptz, missing text)")
    conf = f'''
    connectors.pgsql.main {{ server = "127.0.0.1:{pg_db.port}", database = gw }}
    actions.pgsql.typed {{
      connector = main
      sql = "INSERT INTO typed VALUES (${{cid}}, ${{n}}, ${{x}}, ${{ok}}, ${{data}}, ${{at}}, ${{nothing}})"
    }}
    rule_engine.rules.t {{
      sql = """SELECT payload.cid AS cid, payload.n AS n, payload.x AS x, payload.ok AS ok, payload.data AS data,
                      payload.at AS at FROM "typed/#" """
      actions = ["pgsql:typed"]
    }}
    '''
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        body = {"cid": "CP1", "n": 42, "x": 2.5, "ok": True, "data": {"a": [1, "b"]}, "at": "2026-01-01T10:00:00Z"}
        gw.node.bus.publish(Message("typed/1", orjson.dumps(body), origin="test"))
        action = gw.node.resources.actions["pgsql:typed"]
        await eventually(lambda: action.metrics.success == 1)
    with psycopg.connect(pg_db.dsn("gw")) as conn:
        row = conn.execute("SELECT cid, n, x, ok, data, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), missing FROM typed").fetchone()
    assert row == ("CP1", 42, 2.5, True, {"a": [1, "b"]}, "2026-01-01 10:00", None)


async def test_pgsql_restart_under_a_stream_loses_nothing(tmp_path, mosquitto, pg_db):
    async with running_gateway(tmp_path, mosquitto.port, pg_conf(pg_db)) as gw:
        action = gw.node.resources.actions["pgsql:meter"]
        connector = gw.node.resources.connectors["pgsql:main"]
        await eventually(lambda: connector.status == "connected")

        async def stream():
            for i in range(1000):
                gw.node.bus.publish(meter_message(i, f"CP{i % 7}"))
                await asyncio.sleep(0.007)  # about 7 s of traffic

        feeding = asyncio.create_task(stream())
        await asyncio.sleep(1.0)
        await asyncio.to_thread(pg_db.stop)
        await asyncio.sleep(5.0)
        assert connector.status == "disconnected"
        waiting = action.metrics.queuing + action.metrics.inflight
        await asyncio.to_thread(pg_db.start)
        await feeding
        await eventually(lambda: action.metrics.success == 1000, timeout=30)
        assert waiting > 0  # messages did wait for the database
        assert action.metrics.failed == 0 and action.metrics.dropped == 0
        invariant(action.metrics)
    with psycopg.connect(pg_db.dsn("gw")) as conn:
        total, distinct = conn.execute("SELECT count(*), count(DISTINCT id) FROM meter").fetchone()
    assert (total, distinct) == (1000, 1000)
