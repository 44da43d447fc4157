"""EMQX's `/gateways/ocpp/authentication` (GET|POST|PUT|DELETE), hot-applied to real charge points
logging in or not; durations as strings in the call API; `prometheus.enable_basic_auth`."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from engine.config import load_settings
from tests.ocpp_support import Gateway, eventually, recv_json, running_gateway
from tests.servers import free_port

pytestmark = pytest.mark.timeout(90)

CREDS = ("admin", "public")
AUTHN = "/gateways/ocpp/authentication"
EMQX_AUTHN = {"mechanism": "password_based", "backend": "built_in_database", "user_id_type": "username",
              "password_hash_algorithm": {"name": "sha256", "salt_position": "suffix"}, "enable": True}


@contextlib.asynccontextmanager
async def admin(gw: Gateway, auth: object = CREDS) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gw.admin_url, auth=auth, timeout=30) as client:
        yield client


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def login_status(gw: Gateway, cid: str, headers: dict[str, str] | None = None, port: int | None = None) -> int:
    """101 when the charge point gets in, else the handshake's HTTP status."""
    url = f"ws://127.0.0.1:{port or gw.ocpp_port}/ocpp/{cid}"
    try:
        async with websockets.connect(url, subprotocols=["ocpp1.6"], additional_headers=headers or {}):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


async def test_authenticator_create_update_delete_with_real_charge_points(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        r = await http.get(AUTHN)
        assert r.status_code == 204  # none yet (EMQX's answer)
        assert await login_status(gw, "CP1") == 101  # no login needed

        r = await http.post(AUTHN, json=EMQX_AUTHN)
        assert r.status_code == 201, r.text
        assert r.json()["backend"] == "built_in_database" and r.json()["enable"] is True
        assert await login_status(gw, "CP1") == 401
        assert (await http.post(f"{AUTHN}/users", json={"user_id": "CP1", "password": "s3cret"})).status_code == 201
        assert await login_status(gw, "CP1", basic("CP1", "s3cret")) == 101
        r = await http.post(AUTHN, json=EMQX_AUTHN)
        assert r.status_code == 400 and "already exists" in r.json()["message"]

        r = await http.get(AUTHN)
        assert r.status_code == 200 and r.json()["password_hash_algorithm"]["name"] == "sha256"
        r = await http.put(AUTHN, json={**EMQX_AUTHN, "user_id_type": "clientid", "allow_username_mismatch": True})
        assert r.status_code == 200 and r.json()["user_id_type"] == "clientid", r.text
        assert gw.node.settings.gateway.ocpp.authentication.user_id_type == "clientid"
        assert await login_status(gw, "CP1", basic("anyone", "s3cret")) == 101  # the charge point id names the user

        r = await http.delete(AUTHN)
        assert r.status_code == 204, r.text
        assert await login_status(gw, "CP2") == 101  # no login needed again
        assert (await http.get(AUTHN)).status_code == 204
        assert (await http.delete(AUTHN)).status_code == 404
        assert (await http.put(AUTHN, json=EMQX_AUTHN)).status_code == 404
        # users stay in the built-in database for the next authenticator
        assert (await http.get(f"{AUTHN}/users/CP1")).status_code == 200
        assert load_settings(gw.node.config_path, {}).gateway.ocpp.authentication.enable is False


async def test_authenticator_from_the_conf_file_deleted_and_recreated(tmp_path, mosquitto):
    conf = "gateway.ocpp.authentication { enable = true, password_hash_algorithm { name = bcrypt, salt_rounds = 4 } }\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw, admin(gw) as http:
        assert (await http.get(AUTHN)).json()["password_hash_algorithm"]["name"] == "bcrypt"
        assert await login_status(gw, "CPF") == 401
        assert (await http.delete(AUTHN)).status_code == 204
        assert await login_status(gw, "CPF") == 101
        assert load_settings(gw.node.config_path, {}).gateway.ocpp.authentication.enable is False
        r = await http.post(AUTHN, json=EMQX_AUTHN)
        assert r.status_code == 201, r.text
        # the body replaces the file's block: its bcrypt is gone, the body's sha256 is in
        assert r.json()["password_hash_algorithm"]["name"] == "sha256"
        assert await login_status(gw, "CPF") == 401


async def test_authenticator_bodies_are_checked(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        for body, named in [
            ({"backend": "built_in_database"}, "mechanism"),
            ({**EMQX_AUTHN, "backend": "http"}, "backend"),
            ({**EMQX_AUTHN, "mechanism": "scram"}, "mechanism"),
            ({**EMQX_AUTHN, "password_hash_algorithm": {"name": "md4"}}, "password_hash_algorithm.name"),
            ({**EMQX_AUTHN, "pasword": "x"}, "pasword"),
            ("password_based", "JSON object"),
        ]:
            r = await http.post(AUTHN, json=body)
            assert r.status_code == 400 and named in r.json()["message"], (body, r.text)
        assert (await http.get(AUTHN)).status_code == 204
        assert await login_status(gw, "OPEN") == 101


async def test_removing_the_authenticator_warns_about_open_listeners(tmp_path, mosquitto, caplog):
    port = free_port()
    conf = (f'gateway.ocpp.listeners.ws.public.bind = "0.0.0.0:{port}"\n'
            "gateway.ocpp.authentication { enable = true, password_hash_algorithm { name = bcrypt, salt_rounds = 4 } }\n")
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw, admin(gw) as http:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ocppgw.admin"):
            assert (await http.delete(AUTHN)).status_code == 204
        warned = [r.getMessage() for r in caplog.records if "without a login" in r.getMessage()]
        assert len(warned) == 1 and "ocpp:ws:public" in warned[0], warned
        assert await login_status(gw, "ANY", port=port) == 101


# --- durations as strings -------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", ["300ms", "1s", 0.3])
async def test_call_timeout_takes_a_duration_string(tmp_path, mosquitto, timeout):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        async with websockets.connect(gw.url("CPT"), subprotocols=["ocpp1.6"]) as ws:
            await eventually(lambda: "CPT" in gw.ctx.sessions)
            r = await http.post("/gateways/ocpp/clients/CPT/call",
                                json={"action": "ClearCache", "timeout": timeout})
            assert r.status_code == 504, r.text
            late = await recv_json(ws)
            assert late[2] == "ClearCache"
            await ws.send(orjson.dumps([3, late[1], {"status": "Accepted"}]).decode())  # frees the session
            await eventually(lambda: gw.ctx.sessions["CPT"].info()["inflight_cnt"] == 0)
            # and an answer within the timeout comes back
            request = asyncio.create_task(http.post("/gateways/ocpp/clients/CPT/call",
                                                    json={"action": "ClearCache", "timeout": "1m"}))
            frame = await recv_json(ws)
            await ws.send(orjson.dumps([3, frame[1], {"status": "Accepted"}]).decode())
            assert (await request).status_code == 200


async def test_call_timeout_strings_are_checked(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        async with websockets.connect(gw.url("CPU"), subprotocols=["ocpp1.6"]):
            await eventually(lambda: "CPU" in gw.ctx.sessions)
            for bad in ("5", "soon", "5 parsecs", "0s", "2d", ""):
                r = await http.post("/gateways/ocpp/clients/CPU/call", json={"action": "ClearCache", "timeout": bad})
                assert r.status_code == 400 and "timeout" in r.json()["message"], (bad, r.text)


# --- prometheus.enable_basic_auth ---------------------------------------------------------------


async def test_scrape_needs_credentials_by_default(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        async with admin(gw, None) as http:
            r = await http.get("/prometheus/stats")
            assert r.status_code == 401
        async with admin(gw) as http:
            assert (await http.get("/prometheus/stats")).status_code == 200


async def test_scrape_without_credentials_when_basic_auth_is_off(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, "prometheus { enable_basic_auth = false }\n") as gw:
        async with admin(gw, None) as http:
            r = await http.get("/prometheus/stats")
            assert r.status_code == 200 and "ocppgw_" in r.text
            # everything else still needs them
            for method, path in (("GET", "/status"), ("GET", "/gateways/ocpp"), ("GET", "/configs"),
                                 ("PUT", "/configs"), ("POST", "/prometheus/stats"), ("GET", "/prometheus/stats/")):
                r = await http.request(method, path)
                assert r.status_code == 401, (method, path, r.status_code)
