"""EMQX 5's connector and action keys that this gateway honours, against real servers where the
behaviour is about them: pgsql `server` forms, `disable_prepared_statements`, `resource_opts.max_buffer_bytes`,
HTTP `parameters.max_retries`."""

from __future__ import annotations

import httpx
import psycopg
import pytest

from connectors.resource import BufferedAction, Connector, rendered_size
from connectors.sql import PgsqlConnector, parse_server
from engine.config.schema import PgsqlConnectorSettings, ResourceOpts
from engine.config.types import Size
from tests.http_target import http_target
from tests.ocpp_support import eventually, running_gateway

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("server,expected", [
    ("db.example", ("db.example", 5432)),
    ("db.example:6432", ("db.example", 6432)),
    ("10.0.0.7", ("10.0.0.7", 5432)),
    ("[::1]:5433", ("::1", 5433)),
    ("[fe80::1]", ("fe80::1", 5432)),
])
def test_pgsql_server_takes_emqx_forms(server, expected):
    assert parse_server(server, 5432) == expected
    settings = PgsqlConnectorSettings(server=server, database="d")
    info = PgsqlConnector("c", settings).conninfo()
    assert f"host={expected[0]}" in info and f"port={expected[1]}" in info


@pytest.mark.parametrize("server", ["", ":5432", "h:0", "h:70000", "h:x", "::1", "[::1", "[::1]x"])
def test_pgsql_server_refuses_what_cannot_be_read(server):
    with pytest.raises(ValueError):
        parse_server(server, 5432)


async def test_max_buffer_bytes_drops_the_oldest_and_counts_it():
    connector = Connector("down")  # never started: every request waits in the buffer
    opts = ResourceOpts(max_buffer_bytes=Size(1000))
    action = BufferedAction("sqlite", "a", connector, opts, render=lambda out: [out["v"]], send=None)  # type: ignore[arg-type]
    for i in range(10):
        action.run({"v": f"{i}" * 300})  # 308 bytes rendered each: 3 fit in 1000
    assert rendered_size(["x" * 300]) == 308
    m = action.metrics
    assert (m.matched, m.queuing, m.dropped_queue_full) == (10, 3, 7)
    assert action.queued_bytes == 3 * 308
    assert [r.data[0][0] for r in action.take_queue()] == ["7", "8", "9"]  # the newest kept
    assert action.queued_bytes == 0
    action.run({"v": "x" * 2000})  # larger than the whole buffer: never queued
    assert (m.matched, m.queuing, m.dropped_queue_full) == (11, 0, 8)


async def test_max_buffer_bytes_in_prometheus(tmp_path, mosquitto):
    conf = '''
        connectors.http.h { url = "http://127.0.0.1:9" }
        actions.http.a { connector = h, resource_opts { max_buffer_bytes = 1KB, health_check_interval = 1h } }
    '''
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        action = gw.node.resources.actions["http:a"]
        for i in range(5):
            action.run({"n": "x" * 400})
        assert action.metrics.dropped_queue_full == 3
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"{gw.admin_url}/prometheus/stats", auth=("admin", "public"))).text
        assert f'ocppgw_action_queuing_bytes{{action="http:a"}} {float(action.queued_bytes)}' in text
        assert 'ocppgw_action_dropped_total{action="http:a",reason="queue_full"} 3.0' in text


@pytest.mark.parametrize("max_retries,attempts", [(0, 1), (2, 3)])
async def test_http_parameters_max_retries_is_emqx_s(tmp_path, mosquitto, max_retries, attempts):
    async with http_target() as target:
        target.answer = lambda attempt: 503
        conf = f'''
            connectors.http.h {{ url = "{target.url}" }}
            actions.http.a {{
              connector = h
              parameters {{ path = "/x", max_retries = {max_retries} }}
              resource_opts {{ retry_interval = 10ms, request_ttl = 60s }}
            }}
        '''
        async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
            action = gw.node.resources.actions["http:a"]
            action.run({"n": 1})
            await eventually(lambda: action.metrics.failed == 1)
            assert target.attempts == attempts and action.metrics.retried == max_retries


@pytest.mark.parametrize("disable,threshold", [(True, None), (False, 5)])
async def test_disable_prepared_statements_reaches_the_postgres_connections(tmp_path, mosquitto, postgres, disable, threshold):
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS emqxshape")
        conn.execute("CREATE DATABASE emqxshape")
    with psycopg.connect(postgres.dsn("emqxshape"), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (a text)")
    conf = f'''
        connectors.pgsql.pg {{
          server = "127.0.0.1:{postgres.port}", database = emqxshape, username = postgres
          disable_prepared_statements = {str(disable).lower()}
        }}
        actions.pgsql.w {{ connector = pg, parameters {{ sql = "INSERT INTO t (a) VALUES (${{a}})" }} }}
    '''
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        connector = gw.node.resources.connectors["pgsql:pg"]
        await eventually(lambda: connector.status == "connected")
        action = gw.node.resources.actions["pgsql:w"]
        for i in range(8):  # past psycopg's threshold: it would prepare the INSERT now
            action.run({"a": str(i)})
        await eventually(lambda: action.metrics.success == 8)
        async with connector.pool.connection() as conn:
            assert conn.prepare_threshold == threshold
    with psycopg.connect(postgres.dsn("emqxshape")) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (8,)
