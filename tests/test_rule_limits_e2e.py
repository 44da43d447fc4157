"""Rule limits on a running gateway process (issue 12, items 2, 3, 4, 12): hostile SQL, jq
programs and charge point data get 400s or rule errors, and everybody else is still served."""

from __future__ import annotations

import asyncio
import re

import httpx
import orjson
import pytest
import websockets

from tests.gateway import GatewayProcess

pytestmark = pytest.mark.timeout(120)

AUTH = ("admin", "public")
DEEP = "(" * 2000 + "1" + ")" * 2000

RULES = '''
rule_engine.jq_function_default_timeout = 150ms
rule_engine.rules.heartbeat {
  sql = """SELECT clientid, payload.UniqueId AS id FROM "ocpp/cp/+" WHERE payload.Action = 'Heartbeat'"""
  actions = [{
    function = republish
    args {
      topic = "ocpp/cs/${clientid}"
      payload = """{"MessageTypeId": 3, "UniqueId": "${id}", "Payload": {"currentTime": "2026-01-01T00:00:00Z"}}"""
    }
  }]
}
rule_engine.rules.check_data {
  sql = """SELECT regex_match(payload.Payload.data, '^([a-zA-Z0-9]+)+$') AS plain
           FROM "ocpp/cp/+" WHERE payload.Action = 'DataTransfer'"""
}
'''


def admin_url(gw: GatewayProcess) -> str:
    return f"http://{gw.env['OCPPGW_DASHBOARD__LISTENERS__HTTP__BIND']}/api/v5"


def ws_url(gw: GatewayProcess, cid: str) -> str:
    return f"ws://127.0.0.1:{gw.ocpp_port}/ocpp/{cid}"


@pytest.fixture
def gateway(tmp_path):
    gw = GatewayProcess(tmp_path, RULES, env={"JQ_CANARY_SECRET": "leaked"}).start()
    yield gw
    gw.stop()


async def heartbeat(gw: GatewayProcess, cid: str, uid: str) -> list:
    async with websockets.connect(ws_url(gw, cid), subprotocols=["ocpp1.6"]) as ws:
        await ws.send(orjson.dumps([2, uid, "Heartbeat", {}]).decode())
        return orjson.loads(await asyncio.wait_for(ws.recv(), 15))


async def test_a_backtracking_regex_does_not_stop_the_gateway(gateway):
    """A DataTransfer whose data would make a backtracking engine run for hours (40 letters and
    a `!`) goes through a rule with regex_match; a canary's Heartbeat is answered meanwhile."""
    async with websockets.connect(ws_url(gateway, "ATTACKER"), subprotocols=["ocpp1.6"]) as attacker:
        data = "a" * 40 + "!"
        await attacker.send(orjson.dumps([2, "dt1", "DataTransfer", {"vendorId": "x", "data": data}]).decode())
        await asyncio.sleep(0.3)  # the rule runs on the gateway's loop now
        assert await heartbeat(gateway, "CANARY", "hb1") == [3, "hb1", {"currentTime": "2026-01-01T00:00:00Z"}]
        async with httpx.AsyncClient(base_url=admin_url(gateway), auth=AUTH, timeout=15) as api:
            metrics = (await api.get("/rules/check_data/metrics")).json()["metrics"]
        assert metrics["passed"] == 1 and metrics["failed.exception"] == 0  # the DataTransfer went through it


async def test_jq_through_the_rule_tester(gateway):
    async with httpx.AsyncClient(base_url=admin_url(gateway), auth=AUTH, timeout=30) as api:
        async def rule_test(sql: str) -> httpx.Response:
            return await api.post("/rule_test", json={"sql": sql, "context": {}})

        # a program that never ends: a 400 with a message, and a request sent meanwhile is served
        hang, status = await asyncio.gather(
            rule_test('SELECT jq(\'def f: f; f\', 1) AS x FROM "t/#"'), api.get("/status"))
        assert status.status_code == 200
        assert hang.status_code == 400 and hang.json() == {
            "code": "BAD_REQUEST", "message": "jq(): jq program timed out after 150 ms"}  # the file's default
        r = await rule_test('SELECT jq(\'def f: f; f\', 1, 50) AS x FROM "t/#"')
        assert (r.status_code, r.json()["message"]) == (400, "jq(): jq program timed out after 50 ms")
        r = await rule_test('SELECT jq(\'[limit(30000000; repeat(1))]|length\', 1) AS x FROM "t/#"')
        assert r.status_code == 400 and re.search("timed out|out of memory", r.json()["message"])
        # the environment is not jq's to read
        r = await rule_test('SELECT jq(\'[$ENV.JQ_CANARY_SECRET, env.JQ_CANARY_SECRET, ($ENV | length)]\', 1) AS x '
                            'FROM "t/#"')
        assert (r.status_code, r.json()) == (200, {"x": [[None, None, 0]]})
        # and jq works after all that
        r = await rule_test('SELECT jq(\'.msg | ascii_upcase\', payload) AS x FROM "t/#"')
        assert (r.status_code, r.json()) == (200, {"x": ["HELLO"]})
        assert (await api.get("/status")).status_code == 200
        stats = (await api.get("/prometheus/stats")).text
        assert re.search(r'^ocppgw_rule_function_limits_total\{limit="jq_timeout"\} [1-9]', stats, re.M), stats


async def test_deep_sql_and_big_strings_are_400s(gateway):
    async with httpx.AsyncClient(base_url=admin_url(gateway), auth=AUTH, timeout=30) as api:
        r = await api.post("/rule_test", json={"sql": f'SELECT {DEEP} AS x FROM "t/#"', "context": {}})
        assert r.status_code == 400 and "nested too deeply (the limit is 200 levels)" in r.json()["message"]
        case = "CASE WHEN true THEN " * 500 + "1" + " END" * 500
        r = await api.post("/rule_test", json={"sql": f'SELECT {case} AS x FROM "t/#"', "context": {}})
        assert r.status_code == 400 and "nested too deeply" in r.json()["message"]
        r = await api.post("/rules", json={"id": "deep", "sql": f'SELECT {DEEP} AS x FROM "t/#"'})
        assert r.status_code == 400 and "rule deep: line 1" in r.text and "nested too deeply" in r.text
        r = await api.post("/rules", json={"id": "fine", "sql": 'SELECT 1 AS x FROM "t/#"'})
        assert r.status_code == 201
        r = await api.put("/rules/fine", json={"sql": f'SELECT {case} AS x FROM "t/#"'})
        assert r.status_code == 400 and "nested too deeply" in r.text
        assert (await api.get("/rules/fine")).json()["sql"] == 'SELECT 1 AS x FROM "t/#"'
        # the pad: 2 GB refused from the sizes, before anything is built
        sql = 'SELECT pad(\'abc\', 1000000, \'trailing\', payload.filler) AS x FROM "t/#"'
        r = await api.post("/rule_test", json={"sql": sql, "context": {"payload": {"filler": "x" * 2000}}})
        assert r.status_code == 400 and "over the limit of 8388608" in r.json()["message"]
        # the cap follows a config change without a restart
        r = await api.put("/configs", params={"mode": "merge"}, content="rule_engine.max_string_size = 100")
        assert r.status_code == 200, r.text
        sql = 'SELECT concat(payload.a, payload.a) AS x FROM "t/#"'
        r = await api.post("/rule_test", json={"sql": sql, "context": {"payload": {"a": "y" * 60}}})
        assert (r.status_code, r.json()["message"]) == (400, "concat(): the result would be 120 characters, over "
                                                              "the limit of 100 (rule_engine.max_string_size)")
        stats = (await api.get("/prometheus/stats")).text
        for limit in ("sql_depth", "string_size"):
            assert re.search(rf'^ocppgw_rule_function_limits_total{{limit="{limit}"}} [1-9]', stats, re.M), limit
    assert "Traceback" not in gateway.log and "RecursionError" not in gateway.log
