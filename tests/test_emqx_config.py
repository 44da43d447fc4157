"""An EMQX 5 config (gateway, rules, connectors and actions in EMQX's shape) works unchanged: keys EMQX
has are honoured or accepted with one warning each, shown once per load by check-config, `run` and
every reload; keys EMQX does not have are still errors naming the key and the file."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import orjson
import pytest
import websockets

from engine.config import ConfigError, load_settings_with_warnings
from tests.gateway import BIN, GatewayProcess
from tests.ocpp_support import running_gateway
from tests.servers import free_port

pytestmark = pytest.mark.timeout(120)

NO_EFFECT = "accepted for EMQX compatibility, has no effect here"

# What an EMQX 5 user brings: the keys of emqx_ocpp_schema / emqx_gateway_schema at gateway level,
# a built_in_database authenticator, rules with metadata, connectors and actions in EMQX 5's shape.
EMQX_CONFIG = '''
gateway.ocpp {
  mountpoint = "ocpp/"
  enable = true
  enable_stats = true
  idle_timeout = 30s
  clientinfo_override { username = "${ConnInfo.username}", password = "", clientid = "" }
  default_heartbeat_interval = 60s
  heartbeat_checking_times_backoff = 1
  message_format_checking = disable
  upstream { topic = "cp/${cid}", reply_topic = "cp/${cid}/Reply", error_topic = "cp/${cid}/Reply" }
  dnstream { topic = "cs/${cid}", max_mqueue_len = 100 }
}
rule_engine {
  ignore_sys_message = true
  jq_function_default_timeout = 10s
  rules.boots {
    name = "boots"
    sql = """SELECT clientid, payload.Payload.chargePointVendor AS vendor FROM "ocpp/cp/+"
             WHERE payload.Action = 'BootNotification'"""
    actions = ["sqlite:boots"]
    enable = true
    description = "boot notifications into SQLite"
    metadata { created_at = 1733472000000, last_modified_at = 1733472000000 }
  }
}
connectors.sqlite.local {
  enable = true
  description = "the gateway's own database"
  path = "DB_PATH"
  resource_opts { health_check_interval = 15s, start_after_created = true, start_timeout = 5s }
}
actions.sqlite.boots {
  enable = true
  connector = local
  description = "one row per BootNotification"
  local_topic = ""
  parameters { sql = "INSERT INTO boots (clientid, vendor) VALUES (${clientid}, ${vendor})" }
  resource_opts {
    batch_size = 1
    batch_time = 0ms
    buffer_mode = memory_only
    buffer_seg_bytes = 10MB
    health_check_interval = 15s
    inflight_window = 100
    max_buffer_bytes = 256MB
    metrics_flush_interval = 5s
    query_mode = async
    request_ttl = 45s
    worker_pool_size = 16
    start_after_created = true
    start_timeout = 5s
  }
}
'''

# every key above that has no effect here: each must be named by exactly one warning line
NO_EFFECT_KEYS = [
    "gateway.ocpp.enable_stats", "gateway.ocpp.clientinfo_override", "rule_engine.ignore_sys_message",
    "connectors.sqlite.local.resource_opts.start_after_created", "connectors.sqlite.local.resource_opts.start_timeout",
    "actions.sqlite.boots.local_topic",
] + [f"actions.sqlite.boots.resource_opts.{key}" for key in (
    "metrics_flush_interval", "query_mode", "worker_pool_size",
    "start_after_created", "start_timeout")]


def emqx_config(tmp_path: Path) -> tuple[str, Path]:
    db = tmp_path / "boots.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE boots (clientid TEXT, vendor TEXT)")
    return EMQX_CONFIG.replace("DB_PATH", str(db)), db


def warning_lines(text: str, key: str) -> list[str]:
    return [line for line in text.splitlines() if f" {key}: {NO_EFFECT}" in line]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gw.conf"
    path.write_text(text)
    return path


# --- check-config ----------------------------------------------------------------------------


def test_check_config_accepts_an_emqx_5_config_and_prints_each_warning_once(tmp_path):
    text, _ = emqx_config(tmp_path)
    conf = write(tmp_path, text)
    done = subprocess.run([BIN, "check-config", "-c", str(conf)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for key in NO_EFFECT_KEYS:
        lines = warning_lines(done.stderr, key)
        assert len(lines) == 1, (key, done.stderr)
        assert lines[0].startswith(f"config warning: {conf}: ")
    assert "config error" not in done.stderr
    # the effective config: the action in EMQX's shape, without the keys that do nothing
    assert 'sql = "INSERT INTO boots' in done.stdout and "parameters {" in done.stdout
    assert "worker_pool_size" not in done.stdout and "enable_stats" not in done.stdout
    assert "max_buffer_bytes" in done.stdout


def test_check_config_prints_the_deprecated_sql_spelling_once_and_exits_0(tmp_path):
    conf = write(tmp_path, '''
        connectors.pgsql.pg { server = "db.example", database = ocpp }
        actions.pgsql.tx { connector = pg, sql = "INSERT INTO t (a) VALUES (${a})" }
    ''')
    done = subprocess.run([BIN, "check-config", "-c", str(conf)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    expected = (f"config warning: {conf}: actions.pgsql.tx.sql is deprecated: write it as "
                "actions.pgsql.tx.parameters.sql (EMQX 5's shape)")
    assert done.stderr.splitlines() == [expected]
    assert 'sql = "INSERT INTO t (a) VALUES (${a})"' in done.stdout


# --- the loader ----------------------------------------------------------------------------------


def test_the_old_sql_shape_loads_into_parameters_with_one_warning(tmp_path):
    conf = write(tmp_path, '''
        connectors.sqlite.local.path = "x.db"
        actions.sqlite.a { connector = local, sql = "INSERT INTO t VALUES (${x})" }
        actions.sqlite.b { connector = local, parameters { sql = "INSERT INTO t VALUES (${y})" } }
    ''')
    loaded = load_settings_with_warnings(conf, {})
    assert loaded.settings.actions.sqlite["a"].parameters.sql == "INSERT INTO t VALUES (${x})"
    assert loaded.settings.actions.sqlite["b"].parameters.sql == "INSERT INTO t VALUES (${y})"
    assert loaded.warnings == [f"{conf}: actions.sqlite.a.sql is deprecated: write it as "
                               "actions.sqlite.a.parameters.sql (EMQX 5's shape)"]


def test_the_sql_in_both_places_is_an_error(tmp_path):
    conf = write(tmp_path, '''actions.pgsql.a { connector = c, sql = "A ${x}", parameters.sql = "B ${x}" }''')
    with pytest.raises(ConfigError) as info:
        load_settings_with_warnings(conf, {})
    assert info.value.errors == [f"{conf}: actions.pgsql.a.sql: set twice, here and as actions.pgsql.a.parameters.sql: "
                                 "keep actions.pgsql.a.parameters.sql only"]


def test_each_no_effect_key_warns_once_per_load_even_if_repeated(tmp_path):
    conf = write(tmp_path, '''
        gateway.ocpp.enable_stats = true
        gateway.ocpp { enable_stats = false }
        rule_engine.jq_implementation_module = jq_nif
    ''')
    for _ in range(2):  # every load says it again, once
        warnings = load_settings_with_warnings(conf, {}).warnings
        assert warnings == [
            f"{conf}: gateway.ocpp.enable_stats: {NO_EFFECT}: connection statistics are always kept",
            f"{conf}: rule_engine.jq_implementation_module: {NO_EFFECT}: jq runs in a sandboxed child process",
        ]


def test_a_warning_names_the_environment_variable_it_came_from(tmp_path):
    conf = write(tmp_path, "")
    warnings = load_settings_with_warnings(conf, {"OCPPGW_GATEWAY__OCPP__ENABLE_STATS": "false"}).warnings
    assert warnings == [f"environment OCPPGW_GATEWAY__OCPP__ENABLE_STATS: gateway.ocpp.enable_stats: {NO_EFFECT}: "
                        "connection statistics are always kept"]


@pytest.mark.parametrize("text,key", [
    ('actions.pgsql.a { connector = c, parameters { sql = "I ${x}", sqll = "" } }', "actions.pgsql.a.parameters.sqll"),
    ('actions.sqlite.a { connector = c, parameters.sql = "I ${x}", resource_opts.worker_pool = 4 }',
     "actions.sqlite.a.resource_opts.worker_pool"),
    ('connectors.pgsql.c { database = d, resource_opts { batch_size = 10 } }', "connectors.pgsql.c.resource_opts.batch_size"),
    ('connectors.pgsql.c { database = d, ssl { enable = true, sni = "x" } }', "connectors.pgsql.c.ssl.sni"),
    ('connectors.http.h { url = "http://x", pool_typ = random }', "connectors.http.h.pool_typ"),
    ('gateway.ocpp.clientinfo_override { user = "x" }', "gateway.ocpp.clientinfo_override.user"),
    ('gateway.ocpp.enable_statistics = true', "gateway.ocpp.enable_statistics"),
    ('gateway.ocpp.authentication.bootstrap = "x.csv"', "gateway.ocpp.authentication.bootstrap"),
    ('gateway.ocpp.authentication.password_hash_algorithm { name = pbkdf2, dk_len = 32 }',
     "gateway.ocpp.authentication.password_hash_algorithm.dk_len"),
    ('rule_engine.rules.r { sql = "SELECT 1 FROM \\"t\\"", metdata {} }', "rule_engine.rules.r.metdata"),
    ('rule_engine.ignore_sys_messages = true', "rule_engine.ignore_sys_messages"),
])
def test_a_key_emqx_does_not_have_is_an_error_naming_it_and_its_file(tmp_path, text, key):
    conf = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings_with_warnings(conf, {})
    assert any(line.startswith(f"{conf}: {key} = ") and "unknown key" in line for line in info.value.errors), info.value.errors


def test_emqx_authentication_keys_load_with_their_warnings(tmp_path):
    conf = write(tmp_path, '''gateway.ocpp.authentication {
        backend = built_in_database, mechanism = password_based, user_id_type = clientid
        password_hash_algorithm { name = pbkdf2, mac_fun = sha512, iterations = 100, dk_length = 64 }
        bootstrap_file = "etc/auth.csv", bootstrap_type = hash
    }''')
    loaded = load_settings_with_warnings(conf, {})
    auth = loaded.settings.gateway.ocpp.authentication
    assert (auth.enable, auth.user_id_type, auth.password_hash_algorithm.iterations) == (True, "clientid", 100)
    keys = [line.split(": ")[1] for line in loaded.warnings]
    assert keys == ["gateway.ocpp.authentication.password_hash_algorithm.dk_length",
                    "gateway.ocpp.authentication.bootstrap_file", "gateway.ocpp.authentication.bootstrap_type"]


def test_metadata_and_name_are_kept(tmp_path):
    conf = write(tmp_path, 'rule_engine.rules.r { sql = "SELECT 1 FROM \\"t\\"", name = "R", metadata { a = 1, b { c = "d" } } }')
    rule = load_settings_with_warnings(conf, {}).settings.rule_engine.rules["r"]
    assert (rule.name, rule.metadata) == ("R", {"a": 1, "b": {"c": "d"}})


async def test_the_rules_api_takes_and_keeps_emqx_s_name_and_metadata(tmp_path, mosquitto):
    sql = 'SELECT 1 AS x FROM "t/#"'
    async with running_gateway(tmp_path, mosquitto.port) as gw, httpx.AsyncClient(base_url=gw.admin_url, auth=("admin", "public")) as api:
        r = await api.post("/rules", json={"id": "r1", "sql": sql, "name": "one", "metadata": {"created_at": 1, "by": "me"}})
        assert r.status_code == 201, r.text
        assert (r.json()["name"], r.json()["metadata"]) == ("one", {"created_at": 1, "by": "me"})
        r = await api.put("/rules/r1", json={"metadata": {"by": "you"}})
        assert r.status_code == 200 and r.json()["metadata"] == {"by": "you"}
        assert (await api.put("/rules/r1", json={"metadata": []})).status_code == 400
    async with running_gateway(tmp_path, mosquitto.port) as gw, httpx.AsyncClient(base_url=gw.admin_url, auth=("admin", "public")) as api:
        rule = (await api.get("/rules/r1")).json()  # kept in the overlay across a restart
        assert (rule["name"], rule["metadata"]) == ("one", {"by": "you"})


# --- run and reload: the warnings reach the operator once per load, on the node --------------------


def count(gw: GatewayProcess, key: str) -> int:
    return len(warning_lines(gw.log, key))


def wait_count(gw: GatewayProcess, key: str, wanted: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while count(gw, key) < wanted:
        if time.monotonic() > deadline:
            raise AssertionError(f"{key}: {count(gw, key)} warnings, wanted {wanted}; log:\n{gw.log}")
        time.sleep(0.05)
    assert count(gw, key) == wanted, gw.log


async def test_run_with_an_emqx_5_config_writes_rows_and_every_load_warns_once(tmp_path):
    text, db = emqx_config(tmp_path)
    admin_port = free_port()
    gw = GatewayProcess(tmp_path, config=text, env={"OCPPGW_DASHBOARD__LISTENERS__HTTP__BIND": f"127.0.0.1:{admin_port}"})
    conf = tmp_path / "gateway.conf"
    api = f"http://127.0.0.1:{admin_port}/api/v5"
    gw.start()
    try:
        for key in NO_EFFECT_KEYS:  # at start, once each
            assert count(gw, key) == 1, (key, gw.log)
        # the action in EMQX 5's shape writes a row
        url = f"ws://127.0.0.1:{gw.ocpp_port}/ocpp/CP-EMQX"
        async with websockets.connect(url, subprotocols=["ocpp1.6"]) as ws:
            await ws.send(orjson.dumps([2, "b1", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}]).decode())
            deadline = time.monotonic() + 20
            while True:
                with sqlite3.connect(db) as conn:
                    rows = conn.execute("SELECT clientid, vendor FROM boots").fetchall()
                if rows or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
        assert rows == [("CP-EMQX", "V")]
        async with httpx.AsyncClient(auth=("admin", "public"), timeout=30) as client:
            rule = (await client.get(f"{api}/rules/boots")).json()
            assert rule["metadata"] == {"created_at": 1733472000000, "last_modified_at": 1733472000000}
            assert rule["name"] == "boots"

            # SIGHUP: the file is read again (in the worker process); its warnings are logged on the node
            conf.write_text(text + "\nrule_engine.jq_implementation_module = jq_nif\n")
            gw.signal(signal.SIGHUP)
            wait_count(gw, "rule_engine.jq_implementation_module", 1)
            wait_count(gw, "gateway.ocpp.enable_stats", 2)

            # POST /configs/reload
            assert (await client.post(f"{api}/configs/reload")).status_code == 200
            wait_count(gw, "rule_engine.jq_implementation_module", 2)
            wait_count(gw, "gateway.ocpp.enable_stats", 3)

            # `ocpp-gateway ctl reload`
            done = await asyncio.to_thread(subprocess.run, [
                BIN, "ctl", "reload", "--url", f"127.0.0.1:{admin_port}", "--user", "admin", "--password", "public"],
                capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stdout + done.stderr
            wait_count(gw, "rule_engine.jq_implementation_module", 3)

            # PUT /configs: a body with a key of its own, checked in the worker, logged on the node
            r = await client.put(f"{api}/configs", content="actions.sqlite.boots.resource_opts.worker_pool_size = 8")
            assert r.status_code == 200, r.text
            wait_count(gw, "actions.sqlite.boots.resource_opts.worker_pool_size", 5)
            assert any(line.endswith(f"the admin API's config: actions.sqlite.boots.resource_opts.worker_pool_size: "
                                     f"{NO_EFFECT}: one delivery loop per action; inflight_window sets the requests "
                                     "in flight") for line in gw.lines), gw.log
        assert "Traceback" not in gw.log
    finally:
        assert gw.stop() == 0
