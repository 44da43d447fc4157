"""The fixed bounds that became config keys: each is honoured at a small configured value (and its
counter moves), a reload applies it where said, and a hostile value is a clear config error.

- gateway.ocpp.max_connectors_per_client: connector statuses kept per charge point (dashboard)
- gateway.ocpp.max_remembered_results: OCPP 2.1 CALLRESULTs kept per direction for a CALLRESULTERROR
- dashboard.max_filter_length: characters of a clients-list filter value
- alarm.size_limit (EMQX's): deactivated alarms kept for GET /api/v5/alarms

Real gateway node, real charge points over WebSocket, a real broker (mosquitto), the real admin API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from engine.config import ConfigError, load_settings, load_settings_with_warnings
from tests.ocpp_support import Backend, Gateway, eventually, recv_json, running_gateway, subscribed

pytestmark = pytest.mark.timeout(90)

CREDS = ("admin", "public")
NOW = "2026-01-01T00:00:00Z"
KEYS = {  # key → today's default
    "gateway.ocpp.max_connectors_per_client": 256,
    "gateway.ocpp.max_remembered_results": 32,
    "dashboard.max_filter_length": 256,
    "alarm.size_limit": 1000,
}


def setting(settings: Any, key: str) -> Any:
    for part in key.split("."):
        settings = getattr(settings, part)
    return settings


async def metric(gw: Gateway, name: str, **labels: str) -> float:
    async with httpx.AsyncClient(auth=CREDS, timeout=10) as http:
        response = await http.get(f"{gw.admin_url}/prometheus/stats")
    assert response.status_code == 200, response.text
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    raise AssertionError(f"no sample {name}{labels}")


async def reload_with(gw: Gateway, tmp_path: Path, extra: str) -> None:
    path = tmp_path / "gateway.conf"
    path.write_text(path.read_text() + extra)
    await gw.node.reload(load_settings(path, {}))


# --- config: defaults and hostile values ----------------------------------------------------------------


def test_the_defaults_are_the_former_constants(tmp_path):
    from engine.admin.fleet import MAX_FILTER
    from engine.alarms import MAX_HISTORY
    from engine.ocpp.downstream import MAX_RECENT_RESULTS
    from engine.ocpp.fleet import MAX_CONNECTORS

    (tmp_path / "empty.conf").write_text("")
    settings = load_settings(tmp_path / "empty.conf", {})
    assert {key: setting(settings, key) for key in KEYS} == KEYS
    assert (MAX_CONNECTORS, MAX_RECENT_RESULTS, MAX_FILTER, MAX_HISTORY) == tuple(KEYS.values())


@pytest.mark.parametrize("key", sorted(KEYS))
@pytest.mark.parametrize("value", ["0", "-1", "1000000000", '"many"'])
def test_a_hostile_value_is_a_config_error_naming_the_key(tmp_path, key, value):
    path = tmp_path / "gw.conf"
    path.write_text(f"{key} = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, {})
    [error] = info.value.errors
    assert f"{key} = {value}: " in error, error
    assert ("out of range 1.." if value != '"many"' else "expected an integer") in error, error


def test_emqx_alarm_keys_without_effect_are_accepted_with_a_warning(tmp_path):
    path = tmp_path / "gw.conf"
    path.write_text("alarm { size_limit = 5, validity_period = 24h, actions = [log, publish] }\n")
    loaded = load_settings_with_warnings(path, {})
    assert loaded.settings.alarm.size_limit == 5
    warned = " ".join(loaded.warnings)
    assert "alarm.validity_period" in warned and "alarm.actions" in warned


# --- gateway.ocpp.max_connectors_per_client ---------------------------------------------------------------


async def test_connector_statuses_beyond_the_bound_are_not_kept_and_counted(tmp_path, mosquitto):
    key = "gateway.ocpp.max_connectors_per_client"
    async with running_gateway(tmp_path, mosquitto.port, f"{key} = 2\n") as gw:
        async with httpx.AsyncClient(base_url=gw.admin_url, auth=CREDS, timeout=10) as http:

            async def connectors(cid: str) -> list[tuple[int, str]]:
                response = await http.get(f"/gateways/ocpp/clients/{cid}")
                assert response.status_code == 200, response.text
                return [(c["connector_id"], c["status"]) for c in response.json()["connectors"]]

            async def statuses(ws: Any, cid: str, sent: list[tuple[int, str]], want: list[tuple[int, str]]) -> None:
                for n, (connector, status) in enumerate(sent):
                    await ws.send(orjson.dumps([2, f"s{n}", "StatusNotification", {
                        "connectorId": connector, "errorCode": "NoError", "status": status}]).decode())
                await eventually(lambda: gw.ctx.metrics.frames_in >= len(sent))
                await eventually(lambda: gw.ctx.sessions[cid].fleet is not None
                                 and len(gw.ctx.sessions[cid].fleet.connectors) == len(want))
                last = sent[-1]
                await eventually(lambda: gw.ctx.sessions[cid].fleet.connectors.get((None, last[0]), [""])[0] == last[1])
                assert await connectors(cid) == want

            async with websockets.connect(gw.url("CPA"), subprotocols=["ocpp1.6"]) as ws:
                await eventually(lambda: "CPA" in gw.ctx.sessions)
                # connector 3 is one too many; 1 is already known, so its new status is kept
                await statuses(ws, "CPA", [(1, "Available"), (2, "Available"), (3, "Faulted"), (1, "Charging")],
                               [(1, "Charging"), (2, "Available")])
                assert gw.ctx.metrics.bounded[key] == 1
                assert await metric(gw, "ocppgw_bound_dropped_total", key=key) == 1
            # a reload applies to the charge points that connect afterwards
            await reload_with(gw, tmp_path, f"{key} = 1\n")
            async with websockets.connect(gw.url("CPB"), subprotocols=["ocpp1.6"]) as ws:
                await eventually(lambda: "CPB" in gw.ctx.sessions)
                await statuses(ws, "CPB", [(1, "Available"), (2, "Faulted"), (1, "Preparing")], [(1, "Preparing")])
                assert await metric(gw, "ocppgw_bound_dropped_total", key=key) == 2


# --- gateway.ocpp.max_remembered_results ----------------------------------------------------------------


async def test_callresults_beyond_the_bound_are_forgotten_and_counted(tmp_path, mosquitto):
    key = "gateway.ocpp.max_remembered_results"
    async with running_gateway(tmp_path, mosquitto.port, f"{key} = 2\n") as gw:
        backend = Backend(mosquitto.port)
        try:
            async with websockets.connect(gw.url("R21"), subprotocols=["ocpp2.1"]) as ws:
                await subscribed(gw, "R21")
                uids = ["h0", "h1", "h2"]
                for uid in uids:  # the backend answers each Heartbeat: 3 CALLRESULTs sent, 2 remembered
                    await ws.send(f'[2,"{uid}","Heartbeat",{{}}]')
                    assert (await backend.next())[1]["UniqueId"] == uid
                    backend.publish("ocpp/cs/R21", {"MessageTypeId": 3, "UniqueId": uid,
                                                    "Payload": {"currentTime": NOW}})
                    assert (await recv_json(ws))[1] == uid
                assert gw.ctx.metrics.bounded[key] == 1
                await ws.send('[5,"h0","GenericError","",{}]')  # the oldest: forgotten
                assert "Action" not in (await backend.next())[1]
                await ws.send('[5,"h1","GenericError","",{}]')
                assert (await backend.next())[1]["Action"] == "Heartbeat"
                assert await metric(gw, "ocppgw_bound_dropped_total", key=key) == 1
        finally:
            backend.close()


# --- dashboard.max_filter_length ---------------------------------------------------------------------------


async def test_a_filter_value_over_the_bound_is_a_400_and_counted(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, "dashboard.max_filter_length = 8\n") as gw:
        async with httpx.AsyncClient(base_url=gw.admin_url, auth=CREDS, timeout=10) as http:
            ok = await http.get("/gateways/ocpp/clients", params={"like_clientid": "x" * 8})
            assert ok.status_code == 200, ok.text
            for name in ("like_clientid", "clientid", "status"):
                refused = await http.get("/gateways/ocpp/clients", params={name: "x" * 9})
                assert refused.status_code == 400, refused.text
                assert refused.json()["code"] == "BAD_REQUEST"
                assert name in refused.json()["message"] and "8 characters" in refused.json()["message"]
            reason = {"reason": "filter_too_long"}
            assert await metric(gw, "ocppgw_admin_requests_refused_total", **reason) == 3
            # read per request: a reload applies at once
            await reload_with(gw, tmp_path, "dashboard.max_filter_length = 16\n")
            ok = await http.get("/gateways/ocpp/clients", params={"like_clientid": "x" * 9})
            assert ok.status_code == 200, ok.text
            assert await metric(gw, "ocppgw_admin_requests_refused_total", **reason) == 3


# --- alarm.size_limit ------------------------------------------------------------------------------------


async def test_deactivated_alarms_beyond_the_size_limit_go_and_are_counted(tmp_path, mosquitto):
    key = "alarm.size_limit"
    async with running_gateway(tmp_path, mosquitto.port, f"{key} = 2\n") as gw:
        alarms = gw.node.monitor.alarms
        for name in ("a", "b", "c"):  # each activated, then deactivated
            alarms.update({name: (f"alarm {name}", {})})
            alarms.update({})
        async with httpx.AsyncClient(base_url=gw.admin_url, auth=CREDS, timeout=10) as http:
            response = await http.get("/alarms", params={"activated": "false"})
            assert response.status_code == 200, response.text
            assert [a["name"] for a in response.json()["data"]] == ["c", "b"]
        assert await metric(gw, "ocppgw_bound_dropped_total", key=key) == 1
        # a reload applies at the monitor's next check
        await reload_with(gw, tmp_path, f"{key} = 1\n")
        gw.node.monitor.tick()
        assert [a.name for a in gw.node.monitor.alarms.listing(False)] == ["c"]
        assert await metric(gw, "ocppgw_bound_dropped_total", key=key) == 2
