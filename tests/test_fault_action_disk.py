"""Faults with real processes: `ocpp-gateway run` with a pgsql action while PostgreSQL is down,
SIGKILLed or stopped; charge points over real WebSockets whose MeterValues a rule answers locally
(the pgsql action listed before the `republish` answer). After the restart every row is there."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from pathlib import Path

import orjson
import psycopg
import pytest
import websockets

from connectors.action_store import decode
from tests.gateway import GatewayProcess, scrape, start_with_dashboard
from tests.servers import Postgres

pytestmark = pytest.mark.timeout(300)
NODE = "fault-act"
CHARGE_POINTS = 3
PER_CP = 40


def config(pg_port: int, mode: str, extra: str = "") -> str:
    return f'''
node.name = "{NODE}"
prometheus.enable_basic_auth = false
connectors.pgsql.db {{
  server = "127.0.0.1:{pg_port}", database = postgres, connect_timeout = 2s
  resource_opts.health_check_interval = 1s
}}
actions.pgsql.rows {{
  connector = db
  parameters.sql = "INSERT INTO meter (uid, cid, value) VALUES (${{id}}, ${{clientid}}, ${{value}})"
  resource_opts {{ buffer_mode = {mode}, request_ttl = 10m, retry_interval = 200ms{extra} }}
}}
rule_engine.rules.meter {{
  sql = """SELECT clientid, payload.UniqueId AS id, payload.Payload.meterValue[1].sampledValue[1].value AS value
           FROM "ocpp/cp/#" WHERE payload.Action = 'MeterValues'"""
  actions = ["pgsql:rows", {{
    function = republish
    args {{ topic = "ocpp/cs/${{clientid}}", payload = """{{"MessageTypeId": 3, "UniqueId": "${{id}}", "Payload": {{}}}}""" }}
  }}]
}}
'''


def start_gateway(workdir: Path, pg_port: int, mode: str, extra: str = "") -> tuple[GatewayProcess, int]:
    return start_with_dashboard(workdir, config(pg_port, mode, extra))


def metric(dashboard: int, name: str) -> float:
    return scrape(dashboard, name, '{action="pgsql:rows"}')


def store_path(workdir: Path) -> Path:
    return workdir / "data" / "buffers" / NODE / "action_pgsql_rows.db"


def on_disk(workdir: Path) -> set[str]:
    """The UniqueIds in the action's file, read beside the running node (WAL)."""
    if not store_path(workdir).exists():
        return set()
    db = sqlite3.connect(store_path(workdir))
    try:
        return {decode(raw)[0][0] for (raw,) in db.execute("SELECT data FROM items")}
    except sqlite3.OperationalError:
        return set()
    finally:
        db.close()


def meter_values(uid: str, i: int) -> str:
    values = {"connectorId": 1, "meterValue": [{"timestamp": "2026-12-06T12:00:00Z",
                                                "sampledValue": [{"value": str(i)}]}]}
    return orjson.dumps([2, uid, "MeterValues", values]).decode()


async def charge_points(port: int, workdir: Path | None) -> int:
    """Each sends PER_CP MeterValues, one at a time, and waits for its answer. With `workdir`, each
    answer is checked to come after the row is in the action's file. Returns the answers."""
    answered = 0

    async def one(n: int) -> None:
        nonlocal answered
        cid = f"CP{n}"
        async with websockets.connect(f"ws://127.0.0.1:{port}/ocpp/{cid}", subprotocols=["ocpp1.6"]) as ws:
            for i in range(PER_CP):
                uid = f"{cid}-{i:04d}"
                await ws.send(meter_values(uid, i))
                answer = orjson.loads(await asyncio.wait_for(ws.recv(), 20))
                assert answer[:2] == [3, uid], answer
                if workdir is not None:
                    assert uid in on_disk(workdir), f"{uid} answered before it was on disk"
                answered += 1
    await asyncio.gather(*(one(n) for n in range(CHARGE_POINTS)))
    return answered


def all_ids() -> set[str]:
    return {f"CP{n}-{i:04d}" for n in range(CHARGE_POINTS) for i in range(PER_CP)}


@pytest.fixture
def pg():
    server = Postgres()
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE meter (n SERIAL, uid TEXT, cid TEXT, value TEXT)")
    server.stop()
    try:
        yield server
    finally:
        server.cleanup()


def rows(pg: Postgres) -> list[str]:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        return [uid for (uid,) in conn.execute("SELECT uid FROM meter ORDER BY n")]


def wait_rows(pg: Postgres, count: int, timeout: float = 90) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(set(got := rows(pg))) < count:
        assert time.monotonic() < deadline, f"{len(set(got))} of {count} rows"
        time.sleep(0.2)
    return got


def test_disk_answers_after_the_row_is_on_disk_and_a_sigkill_loses_nothing(tmp_path, pg):
    gw, _ = start_gateway(tmp_path, pg.port, "disk")
    answered = asyncio.run(charge_points(gw.ocpp_port, tmp_path))
    assert answered == CHARGE_POINTS * PER_CP
    gw.signal(signal.SIGKILL)  # right after the last answer, PostgreSQL still down
    gw.wait()
    assert on_disk(tmp_path) == all_ids()

    gw, dashboard = start_gateway(tmp_path, pg.port, "disk")
    restored = int(gw.wait_log(r"action pgsql:rows: (\d+) requests kept from the last run are delivered first")
                   .group(1))
    assert restored == CHARGE_POINTS * PER_CP
    pg.start()
    got = wait_rows(pg, CHARGE_POINTS * PER_CP)
    assert set(got) == all_ids()  # 0 lost
    duplicates = len(got) - len(set(got))
    deadline = time.monotonic() + 20
    while metric(dashboard, "action_disk_messages") > 0 or metric(dashboard, "action_redelivered_total") < restored:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    print(f"kept {restored}, redelivered {restored}, duplicate rows {duplicates}")
    assert duplicates == 0  # the database was down: none had reached it before the kill
    assert metric(dashboard, "action_restored_total") == restored
    assert gw.stop() == 0


def test_memory_only_sigterm_with_the_database_down_keeps_the_rest_for_the_next_start(tmp_path, pg):
    gw, dashboard = start_gateway(tmp_path, pg.port, "memory_only")
    asyncio.run(charge_points(gw.ocpp_port, None))
    assert metric(dashboard, "action_queuing") == CHARGE_POINTS * PER_CP
    assert not store_path(tmp_path).exists()  # memory_only: nothing written while running
    assert gw.stop() == 0
    kept = gw.wait_log(r"action pgsql:rows stopped with (\d+) messages not delivered: kept in \S+action_pgsql_rows.db")
    assert int(kept.group(1)) == CHARGE_POINTS * PER_CP

    gw, dashboard = start_gateway(tmp_path, pg.port, "memory_only")
    pg.start()
    got = wait_rows(pg, CHARGE_POINTS * PER_CP)
    assert set(got) == all_ids() and len(got) == len(set(got))
    assert gw.stop() == 0


def test_a_damaged_action_file_stops_the_start_with_one_line_naming_it(tmp_path, pg):
    path = store_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a queue at all " * 200)
    gw = GatewayProcess(tmp_path, config(pg.port, "disk"))
    gw.start(wait_for=None)
    assert gw.wait() != 0
    line = gw.wait_log(r"actions\.pgsql\.rows\.resource_opts\.buffer_mode = disk: .*action_pgsql_rows\.db: "
                       r"not a readable queue file")
    assert line
    assert "Traceback" not in gw.log


def test_volatile_offload_spills_delivers_in_order_and_keeps_nothing_after_a_sigkill(tmp_path, pg):
    gw, dashboard = start_gateway(tmp_path, pg.port, "volatile_offload", ", buffer_seg_bytes = 1KB")
    asyncio.run(charge_points(gw.ocpp_port, None))
    assert metric(dashboard, "action_queuing") == CHARGE_POINTS * PER_CP
    spilled = metric(dashboard, "action_disk_messages")
    assert 0 < spilled < CHARGE_POINTS * PER_CP  # the first 1KB in memory, the rest in the spill file
    pg.start()
    got = wait_rows(pg, CHARGE_POINTS * PER_CP)
    assert set(got) == all_ids()
    for n in range(CHARGE_POINTS):  # each charge point's rows in the order it sent them
        mine = [uid for uid in got if uid.startswith(f"CP{n}-")]
        assert mine == sorted(mine)
    pg.stop()

    asyncio.run(charge_points(gw.ocpp_port, None))  # again, with the database down
    assert metric(dashboard, "action_disk_messages") > 0
    gw.signal(signal.SIGKILL)
    gw.wait()
    gw, dashboard = start_gateway(tmp_path, pg.port, "volatile_offload", ", buffer_seg_bytes = 1KB")
    assert metric(dashboard, "action_disk_messages") == 0 and metric(dashboard, "action_queuing") == 0
    assert "kept from the last run" not in gw.log  # volatile: the spill file is emptied at the start
    assert gw.stop() == 0
