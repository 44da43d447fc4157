"""Admin API: configs (read, change, reload) and rules (CRUD that survives a restart, metrics, tester)."""

from __future__ import annotations

import httpx
import pytest

from engine.bus import Message
from tests.ocpp_support import running_gateway

pytestmark = pytest.mark.timeout(60)

AUTH = ("admin", "public")


async def test_configs_read_change_and_reload(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, httpx.AsyncClient(base_url=gw.admin_url, auth=AUTH) as api:
        r = await api.get("/configs")
        assert r.status_code == 200 and 'mountpoint = "ocpp/"' in r.text and "public" not in r.text
        r = await api.put("/configs", params={"mode": "merge"}, content='gateway.ocpp.upstream.topic = "in/${cid}"')
        assert r.status_code == 200 and "gateway.ocpp" in r.json()["changed"]
        assert gw.node.settings.gateway.ocpp.upstream.topic == "in/${cid}"
        assert (tmp_path / "data" / "cluster.hocon").is_file()
        # refusals change nothing and name the problem
        r = await api.put("/configs", content="gateway.ocpp.idle_timeout = soon")
        assert r.status_code == 400 and r.json()["code"] == "BAD_CONFIG"
        assert "gateway.ocpp.idle_timeout" in r.json()["message"]
        r = await api.put("/configs", content="{ not hocon")
        assert r.status_code == 400 and "HOCON syntax error" in r.json()["message"]
        r = await api.put("/configs", params={"mode": "sideways"}, content="a = 1")
        assert r.status_code == 400 and "mode" in r.json()["message"]
        r = await api.put("/configs", content="")
        assert r.status_code == 400
        assert gw.node.settings.gateway.ocpp.upstream.topic == "in/${cid}"
        # edit the file, reload it
        conf = tmp_path / "gateway.conf"
        conf.write_text(conf.read_text() + 'gateway.ocpp.dnstream.max_mqueue_len = 7\n')
        r = await api.post("/configs/reload")
        assert r.status_code == 200 and gw.node.settings.gateway.ocpp.dnstream.max_mqueue_len == 7
        conf.write_text(conf.read_text() + 'rule_engine.rules.x { sql = "SELECT" }\n')
        r = await api.post("/configs/reload")
        assert r.status_code == 400 and "rule x" in r.json()["message"]


async def test_rules_crud_persists_across_restart(tmp_path, mosquitto):
    sql = 'SELECT payload.n AS n FROM "in/#"'
    async with running_gateway(tmp_path, mosquitto.port) as gw, httpx.AsyncClient(base_url=gw.admin_url, auth=AUTH) as api:
        r = await api.post("/rules", json={"id": "r1", "sql": sql, "actions": [{"function": "console"}], "description": "d"})
        assert r.status_code == 201, r.text
        assert r.json()["id"] == "r1" and r.json()["from"] == ["in/#"] and r.json()["enable"] is True
        assert (await api.post("/rules", json={"id": "r1", "sql": sql})).status_code == 409
        gw.node.bus.publish(Message("in/1", b'{"n": 1}', origin="test"))
        r = await api.get("/rules/r1/metrics")
        assert r.json()["metrics"]["matched"] == 1 and r.json()["metrics"]["passed"] == 1
        r = await api.put("/rules/r1", json={"enable": False})
        assert r.status_code == 200 and r.json()["enable"] is False
        r = await api.post("/rules", json={"sql": 'SELECT 1 AS x FROM "a/#"'})
        generated = r.json()["id"]
        assert r.status_code == 201 and generated.startswith("rule_")
        listed = (await api.get("/rules")).json()
        assert [x["id"] for x in listed["data"]] == sorted(["r1", generated]) and listed["meta"]["count"] == 2
        assert (await api.delete(f"/rules/{generated}")).status_code == 204
        # bad SQL is refused with the rule and position, and changes nothing
        r = await api.put("/rules/r1", json={"sql": "SELECT upper() FROM \"t\""})
        assert r.status_code == 400 and "rule r1: line 1, column 8: upper() takes 1 argument" in r.json()["message"]
        assert gw.node.settings.rule_engine.rules["r1"].sql == sql
    # a new gateway on the same data dir has the rules the API made
    async with running_gateway(tmp_path, mosquitto.port) as gw, httpx.AsyncClient(base_url=gw.admin_url, auth=AUTH) as api:
        assert list(gw.node.settings.rule_engine.rules) == ["r1"]
        assert (await api.get("/rules/r1")).json()["enable"] is False


@pytest.mark.parametrize(
    "method,path,body,status,needle",
    [
        ("post", "/rules", b"{not json", 400, "not JSON"),
        ("post", "/rules", b'{"sql": 5}', 400, "sql: expected a string"),
        ("post", "/rules", b'{"sql": "SELECT 1 AS x FROM \\"t\\"", "colour": 1}', 400, "unknown field: colour"),
        ("post", "/rules", b'{"actions": []}', 400, "sql: required"),
        ("post", "/rules", b'{"sql": "SELECT 1 AS x FROM \\"t\\"", "actions": "console"}', 400, "actions: expected a list"),
        ("post", "/rules", b'{"sql": "SELECT 1 AS x FROM \\"t\\"", "actions": ["http:none"]}', 400, "unknown action 'http:none'"),
        ("put", "/rules/nope", b'{"enable": true}', 404, "rule nope not found"),
        ("put", "/rules/nope", b'{"enable": "yes"}', 400, "enable: expected true or false"),
        ("get", "/rules/nope", None, 404, "not found"),
        ("delete", "/rules/nope", None, 404, "not found"),
        ("get", "/rules/nope/metrics", None, 404, "not found"),
        ("get", "/rules?page=0", None, 400, "page"),
        ("get", "/nothing/here", None, 404, "NOT_FOUND"),
    ],
)
async def test_rule_api_errors(tmp_path, mosquitto, method, path, body, status, needle):
    async with running_gateway(tmp_path, mosquitto.port) as gw, httpx.AsyncClient(base_url=gw.admin_url, auth=AUTH) as api:
        r = await api.request(method.upper(), path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == status, r.text
        assert needle in r.text


async def test_rule_test_actions_connectors_and_auth(tmp_path, mosquitto):
    conf = 'connectors.http.hook.url = "http://127.0.0.1:9"\nactions.http.a.connector = hook\n'
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        async with httpx.AsyncClient(base_url=gw.admin_url, auth=AUTH) as api:
            r = await api.post("/rule_test", json={"sql": 'SELECT payload.msg AS m FROM "t/#"', "context": {}})
            assert (r.status_code, r.json()) == (200, {"m": "hello"})
            r = await api.post("/rule_test", json={"sql": 'SELECT 1 AS x FROM "x/#"', "context": {}})
            assert (r.status_code, r.json()["code"]) == (412, "NOT_MATCH")
            assert (await api.post("/rule_test", json={"sql": "SELECT"})).status_code == 400
            actions = (await api.get("/actions")).json()
            assert [(a["id"], a["connector"]) for a in actions] == [("http:a", "http:hook")]
            assert set(actions[0]["metrics"]) >= {"matched", "success", "failed", "dropped", "queuing"}
            connectors = (await api.get("/connectors")).json()
            assert connectors[0]["id"] == "http:hook" and connectors[0]["status"] in ("connecting", "disconnected")
            assert (await api.get("/status")).json()["status"] == "running"
        async with httpx.AsyncClient(base_url=gw.admin_url) as anonymous:
            for path in ("/status", "/rules", "/configs", "/actions"):
                r = await anonymous.get(path)
                assert r.status_code == 401 and r.json()["code"] == "BAD_USERNAME_OR_PWD"
                assert r.headers["www-authenticate"].startswith("Basic")
            r = await anonymous.get("/rules", auth=("admin", "wrong"))
            assert r.status_code == 401 and "bad username or password" in r.text


async def test_put_configs_replace_mode_replaces_the_overlay(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, httpx.AsyncClient(base_url=gw.admin_url, auth=AUTH) as api:
        r = await api.put("/configs", params={"mode": "merge"}, content="gateway.ocpp.dnstream.max_mqueue_len = 5")
        assert r.status_code == 200 and gw.node.settings.gateway.ocpp.dnstream.max_mqueue_len == 5
        r = await api.put("/configs", params={"mode": "merge"}, content="gateway.ocpp.idle_timeout = 9s")
        assert gw.node.settings.gateway.ocpp.dnstream.max_mqueue_len == 5  # merge keeps what was there
        r = await api.put("/configs", params={"mode": "replace"}, content="gateway.ocpp.idle_timeout = 8s")
        assert r.status_code == 200
        s = gw.node.settings.gateway.ocpp
        assert s.idle_timeout == 8 and s.dnstream.max_mqueue_len == 100  # replace dropped the earlier change


async def test_rule_changes_at_once_all_count(tmp_path, mosquitto):
    """Rule changes sent together (and with a PUT /configs) are applied in turn: none undoes another."""
    import asyncio

    async with running_gateway(tmp_path, mosquitto.port) as gw, \
            httpx.AsyncClient(base_url=gw.admin_url, auth=AUTH, timeout=60) as api:
        sql = 'SELECT * FROM "t/#"'
        answers = await asyncio.gather(
            *(api.post("/rules", json={"id": f"r{i}", "sql": sql}) for i in range(4)),
            api.put("/configs", content="gateway.ocpp.dnstream.max_mqueue_len = 9"),
        )
        assert [r.status_code for r in answers] == [201] * 4 + [200], [r.text for r in answers]
        assert sorted(gw.node.settings.rule_engine.rules) == ["r0", "r1", "r2", "r3"]
        assert gw.node.settings.gateway.ocpp.dnstream.max_mqueue_len == 9
        answers = await asyncio.gather(api.delete("/rules/r0"), api.delete("/rules/r1"),
                                       api.put("/rules/r2", json={"description": "two"}), api.delete("/rules/r0"))
        assert sorted(r.status_code for r in answers) == [200, 204, 204, 404], [r.text for r in answers]
        assert sorted(gw.node.settings.rule_engine.rules) == ["r2", "r3"]
        assert gw.node.settings.rule_engine.rules["r2"].description == "two"
