"""The upgrade handshake: every refusal answers its HTTP status, and everyone else is still served."""

from __future__ import annotations

import asyncio
import base64

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from engine.auth import UserStore
from engine.config.schema import PasswordHashSettings
from tests.ocpp_support import Backend, running_gateway, subscribed

pytestmark = pytest.mark.timeout(60)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def refused(url: str, status: int, **kwargs) -> str:
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(url, **kwargs):
            pass
    assert info.value.response.status_code == status, info.value.response.body
    return info.value.response.body.decode()


async def still_serving(gw, backend: Backend, ws, cid: str) -> None:
    """A charge point connected before the refusals still gets its frames through."""
    await ws.send('[2,"ping-1","Heartbeat",{}]')
    topic, body = await backend.next()
    assert topic == f"ocpp/cp/{cid}" and body["UniqueId"] == "ping-1"


async def test_refusals_of_path_cid_and_subprotocol(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        backend = Backend(mosquitto.port)
        base = f"ws://127.0.0.1:{gw.ocpp_port}"
        async with websockets.connect(gw.url("GOOD"), subprotocols=["ocpp1.6"]) as ws:
            await subscribed(gw, "GOOD")
            p = ["ocpp1.6"]
            assert "no OCPP endpoint" in await refused(f"{base}/other/CP1", 404, subprotocols=p)
            assert "empty" in await refused(f"{base}/ocpp/", 400, subprotocols=p)
            assert "without '/', '+' or '#'" in await refused(f"{base}/ocpp/a/b", 400, subprotocols=p)
            await refused(f"{base}/ocpp/a%2Fb", 400, subprotocols=p)
            await refused(f"{base}/ocpp/a+b", 400, subprotocols=p)
            await refused(f"{base}/ocpp/a%23b", 400, subprotocols=p)
            await refused(f"{base}/ocpp/{'x' * 300}", 400, subprotocols=p)
            assert "no Sec-WebSocket-Protocol" in await refused(gw.url("CP1"), 400)
            assert "none of the offered" in await refused(gw.url("CP1"), 400, subprotocols=["ocpp1.5", "mqtt"])
            connacks = [e["reason_code"] for e in gw.events.named("client_connack") if e["clientid"] != "GOOD"]
            assert connacks == ["client_identifier_not_valid"] * 6 + ["unsupported_protocol_version"] * 2
            assert not gw.events.named("client_connected")[1:]  # only GOOD ever connected
            assert list(gw.ctx.sessions) == ["GOOD"]
            await still_serving(gw, backend, ws, "GOOD")
        backend.close()


async def test_percent_decoded_cid_and_query_string(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        async with websockets.connect(gw.url("CP%20one") + "?token=abc", subprotocols=["ocpp1.6"]):
            assert list(gw.ctx.sessions) == ["CP one"]


async def test_no_subprotocol_is_ocpp16_without_echo_when_allowed(tmp_path, mosquitto):
    conf = "gateway.ocpp.listeners.ws.default.websocket.fail_if_no_subprotocol = false\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        async with websockets.connect(gw.url("OLD")) as ws:
            assert ws.subprotocol is None  # nothing echoed: strict clients reject a protocol they did not offer
            assert gw.ctx.sessions["OLD"].proto_ver == "ocpp1.6"


async def test_subprotocol_choice_respects_supported_list(tmp_path, mosquitto):
    conf = 'gateway.ocpp.listeners.ws.default.websocket.supported_subprotocols = ["ocpp1.6", "ocpp2.0.1"]\n'
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        async with websockets.connect(gw.url("A"), subprotocols=["ocpp2.1", "ocpp2.0.1", "ocpp1.6"]) as ws:
            assert ws.subprotocol == "ocpp2.0.1"
        await refused(gw.url("B"), 400, subprotocols=["ocpp2.1"])


async def test_authentication(tmp_path, mosquitto):
    hashing = PasswordHashSettings(name="pbkdf2", iterations=1000)
    store = UserStore.in_data_dir(tmp_path / "data", hashing)
    store.add("CP1", "secret1")
    store.add("shared-user", "secret2")
    async with running_gateway(tmp_path, mosquitto.port, """
    gateway.ocpp.authentication { enable = true, password_hash_algorithm { name = pbkdf2, iterations = 1000 } }
    """) as gw:
        backend = Backend(mosquitto.port)
        p = ["ocpp1.6"]
        async with websockets.connect(gw.url("CP1"), subprotocols=p, additional_headers=basic("CP1", "secret1")) as ws:
            await subscribed(gw, "CP1")
            assert gw.ctx.sessions["CP1"].username == "CP1"
            body = await refused(gw.url("CP2"), 401, subprotocols=p)
            assert "credentials are required" in body
            await refused(gw.url("CP1"), 401, subprotocols=p, additional_headers=basic("CP1", "wrong"))
            await refused(gw.url("CP9"), 401, subprotocols=p, additional_headers=basic("CP9", "secret1"))
            # security profile 1/2: the username must be the charge point id
            assert "must be the charge point id" in await refused(
                gw.url("CP7"), 401, subprotocols=p, additional_headers=basic("shared-user", "secret2"))
            await refused(gw.url("CP1"), 401, subprotocols=p, additional_headers={"Authorization": "Basic %%%"})
            await refused(gw.url("CP1"), 401, subprotocols=p, additional_headers={"Authorization": "Bearer abc"})
            reasons = [e["reason_code"] for e in gw.events.named("client_connack") if e["reason_code"] != "success"]
            assert reasons == ["not_authorized", "bad_username_or_password", "bad_username_or_password",
                               "bad_username_or_password", "not_authorized", "not_authorized"]
            assert list(gw.ctx.sessions) == ["CP1"]
            await still_serving(gw, backend, ws, "CP1")
        backend.close()


async def test_username_mismatch_allowed_and_listener_without_authn(tmp_path, mosquitto):
    from tests.servers import free_port

    store = UserStore.in_data_dir(tmp_path / "data")
    store.add("shared-user", "pw")
    open_port, main_port = free_port(), free_port()
    conf = f"""
    gateway.ocpp.authentication {{ enable = true, allow_username_mismatch = true }}
    gateway.ocpp.listeners.ws {{
      main {{ bind = "127.0.0.1:{main_port}" }}
      open {{ bind = "127.0.0.1:{open_port}", enable_authn = false, websocket.path = "/open" }}
    }}
    """
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        p = ["ocpp1.6"]
        async with websockets.connect(f"ws://127.0.0.1:{main_port}/ocpp/CP5", subprotocols=p,
                                      additional_headers=basic("shared-user", "pw")):
            assert gw.ctx.sessions["CP5"].username == "shared-user"
        await refused(f"ws://127.0.0.1:{main_port}/ocpp/CP6", 401, subprotocols=p)
        async with websockets.connect(f"ws://127.0.0.1:{open_port}/open/CP6", subprotocols=p):
            assert gw.ctx.sessions["CP6"].listener == "ocpp:ws:open"


async def test_max_connections_and_max_conn_rate(tmp_path, mosquitto):
    from tests.servers import free_port

    a, b = free_port(), free_port()
    conf = f"""
    gateway.ocpp.listeners.ws {{
      capped {{ bind = "127.0.0.1:{a}", max_connections = 2 }}
      slow {{ bind = "127.0.0.1:{b}", max_conn_rate = 2 }}
    }}
    """
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        p = ["ocpp1.6"]
        capped = f"ws://127.0.0.1:{a}/ocpp/"
        async with websockets.connect(capped + "C1", subprotocols=p):
            async with websockets.connect(capped + "C2", subprotocols=p) as ws2:
                assert "max_connections" in await refused(capped + "C3", 503, subprotocols=p)
                await ws2.close()
                await asyncio.sleep(0.2)
                async with websockets.connect(capped + "C3", subprotocols=p):
                    assert sorted(gw.ctx.sessions) == ["C1", "C3"]
        slow = f"ws://127.0.0.1:{b}/ocpp/"
        async with websockets.connect(slow + "S1", subprotocols=p), websockets.connect(slow + "S2", subprotocols=p):
            assert "max_conn_rate" in await refused(slow + "S3", 503, subprotocols=p)
            await asyncio.sleep(1.1)  # the bucket refills at max_conn_rate per second
            async with websockets.connect(slow + "S3", subprotocols=p):
                pass
        assert gw.ctx.metrics.refused["server_unavailable"] == 2


async def test_plain_http_request_is_told_to_upgrade(tmp_path, mosquitto):
    import httpx

    async with running_gateway(tmp_path, mosquitto.port) as gw:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{gw.ocpp_port}/ocpp/CP1")
        assert response.status_code == 426 and "WebSocket" in response.text
