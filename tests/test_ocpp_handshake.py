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


async def raw_upgrade(port: int, path: str, extra: str = "") -> tuple[str, dict[str, str], bytes]:
    """One upgrade request on a bare socket: (status line, headers, body read until the server closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                 f"Sec-WebSocket-Protocol: ocpp1.6\r\n{extra}\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), 5)  # to EOF: a refusal closes the connection
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    return status, {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}, body


async def test_refusals_are_complete_http_answers_and_log_no_error(tmp_path, mosquitto, caplog):
    """Refusals on the path or the capacity are answered before any WebSocket machinery exists, the
    others (subprotocol, login) after it: either way a whole HTTP answer, the connection closed,
    counted, announced, and no ERROR in the log (uvicorn logs one per denial unless told the
    handshake is over)."""
    from tests.servers import free_port

    port = free_port()
    conf = f"""
    gateway.ocpp.listeners.ws.default {{ bind = "127.0.0.1:{port}", max_conn_rate = 1 }}
    gateway.ocpp.authentication {{ enable = true, password_hash_algorithm {{ name = pbkdf2, iterations = 1000 }} }}
    """
    caplog.set_level("WARNING")
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        status, headers, body = await raw_upgrade(port, "/elsewhere/CP1")
        assert status == "HTTP/1.1 404 Not Found" and b"no OCPP endpoint" in body
        assert headers["connection"] == "close" and int(headers["content-length"]) == len(body)
        assert headers["content-type"] == "text/plain; charset=utf-8"
        status, _, body = await raw_upgrade(port, "/ocpp/a%2Fb")
        assert status == "HTTP/1.1 400 Bad Request" and b"without '/'" in body
        # the only token of the bucket goes to a handshake that then fails its login (no credentials):
        # a 401 from the ASGI side, with its challenge
        status, headers, body = await raw_upgrade(port, "/ocpp/CPA")
        assert status == "HTTP/1.1 401 Unauthorized" and headers["www-authenticate"].startswith("Basic")
        status, headers, body = await raw_upgrade(port, "/ocpp/CPB")
        assert status == "HTTP/1.1 503 Service Unavailable" and b"max_conn_rate" in body
        assert int(headers["content-length"]) == len(body)
        await asyncio.sleep(0.1)
        refused = dict(gw.ctx.metrics.refused)
        assert refused == {"not_found": 1, "client_identifier_not_valid": 1, "not_authorized": 1,
                           "server_unavailable": 1}, refused
        connacks = {e["clientid"]: e["reason_code"] for e in gw.events.named("client_connack")}
        assert connacks == {"a/b": "client_identifier_not_valid", "CPA": "not_authorized",
                            "CPB": "server_unavailable"}, connacks
        assert not gw.ctx.sessions
        # odd request targets: each gets its answer and nothing breaks ("ocpp/CP1" is not even HTTP:
        # uvicorn answers it before the listener sees it)
        for target, answer in (("*", "404"), ("http://h/ocpp/CP1", "404"), ("//x", "404"),
                               ("ocpp/CP1", "400"), ("/ocpp/CP%00", "400"), ("/ocpp/CP1#frag", "400")):
            status, _, _ = await raw_upgrade(port, target)
            assert status.startswith(f"HTTP/1.1 {answer} "), (target, status)
        refused = dict(gw.ctx.metrics.refused)
        assert refused["not_found"] == 4 and refused["client_identifier_not_valid"] == 3, refused
        assert not gw.ctx.sessions
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [], errors


async def test_capacity_holds_exactly_under_a_burst_and_nothing_stays_reserved(tmp_path, mosquitto):
    """Handshakes are let through when their headers arrive but their sessions start later, so a
    burst must count the ones in between: 40 at once against max_connections = 5 give exactly 5
    sessions. Handshakes that vanish halfway (the client closes right after its request) give their
    place and their max_conn_rate token back."""
    from tests.servers import free_port

    port = free_port()
    conf = f"""gateway.ocpp.listeners.ws.default {{ bind = "127.0.0.1:{port}", max_connections = 5, max_conn_rate = 50 }}"""
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        listener = gw.node.listeners["ocpp:ws:default"].app
        url = f"ws://127.0.0.1:{port}/ocpp/"
        opened: list = []

        async def one(i: int) -> int:
            try:
                opened.append(await websockets.connect(url + f"B{i}", subprotocols=["ocpp1.6"]))
                return 101
            except InvalidStatus as exc:
                assert b"max_connections" in exc.response.body
                return exc.response.status_code

        statuses = await asyncio.gather(*(one(i) for i in range(40)))
        assert statuses.count(101) == 5 and statuses.count(503) == 35
        assert len(gw.ctx.sessions) == 5
        for ws in opened:
            await ws.close()
        await asyncio.sleep(0.2)

        async def vanish(i: int) -> None:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /ocpp/V{i} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                         f"Sec-WebSocket-Protocol: ocpp1.6\r\n\r\n".encode())
            writer.transport.abort()

        await asyncio.gather(*(vanish(i) for i in range(20)))
        deadline = asyncio.get_running_loop().time() + 5
        while (listener.admitting or listener.connections) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert listener.admitting == 0 and listener.connections == 0 and listener.rate.reserved == 0
        assert not gw.ctx.sessions


async def test_compression_only_when_configured(tmp_path, mosquitto):
    """A client offering permessage-deflate (websockets does by default) does not get it unless the
    listener says websocket.compress = true; with it, frames still flow both ways."""
    from tests.servers import free_port

    port = free_port()
    conf = f'gateway.ocpp.listeners.ws.packed {{ bind = "127.0.0.1:{port}", websocket.compress = true }}\n'
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("PLAIN"), subprotocols=["ocpp1.6"], compression="deflate") as ws:
            assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
        url = f"ws://127.0.0.1:{port}/ocpp/PACKED"
        async with websockets.connect(url, subprotocols=["ocpp1.6"], compression="deflate") as ws:
            assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
            await subscribed(gw, "PACKED")
            await still_serving(gw, backend, ws, "PACKED")
        backend.close()


async def test_authentication_block_without_enable_is_on(tmp_path, mosquitto):
    """Issue 12 #1: an authenticator written without `enable` used to let everyone in."""
    UserStore.in_data_dir(tmp_path / "data").add("CP1", "secret1")
    conf = """gateway.ocpp.authentication {
      backend = built_in_database, mechanism = password_based, password_hash_algorithm { name = sha256 }
    }"""
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        p = ["ocpp1.6"]
        await refused(gw.url("CP1"), 401, subprotocols=p)
        await refused(gw.url("CP1"), 401, subprotocols=p, additional_headers=basic("CP1", "wrong"))
        async with websockets.connect(gw.url("CP1"), subprotocols=p, additional_headers=basic("CP1", "secret1")):
            assert list(gw.ctx.sessions) == ["CP1"]


async def test_authentication_enable_false_is_open(tmp_path, mosquitto):
    UserStore.in_data_dir(tmp_path / "data").add("CP1", "secret1")
    async with running_gateway(tmp_path, mosquitto.port, "gateway.ocpp.authentication { enable = false }") as gw:
        async with websockets.connect(gw.url("CP2"), subprotocols=["ocpp1.6"]):
            assert list(gw.ctx.sessions) == ["CP2"]


async def test_user_id_type_clientid_logs_in_as_the_charge_point_id(tmp_path, mosquitto):
    """user_id_type = clientid: the user is the charge point id, whatever the Basic username says."""
    UserStore.in_data_dir(tmp_path / "data").add("CP1", "secret1")
    async with running_gateway(tmp_path, mosquitto.port, "gateway.ocpp.authentication.user_id_type = clientid") as gw:
        p = ["ocpp1.6"]
        async with websockets.connect(gw.url("CP1"), subprotocols=p, additional_headers=basic("anything", "secret1")):
            assert gw.ctx.sessions["CP1"].username == "anything"
        await refused(gw.url("CP1"), 401, subprotocols=p, additional_headers=basic("CP1", "wrong"))
        await refused(gw.url("CP2"), 401, subprotocols=p, additional_headers=basic("CP1", "secret1"))
        await refused(gw.url("CP1"), 401, subprotocols=p)  # still no credentials, no login


async def test_start_warns_once_per_open_listener_beyond_loopback(tmp_path, mosquitto, caplog):
    """One WARNING per listener reachable beyond loopback that lets charge points in without a
    login; none for loopback listeners or those that ask for a login."""
    from tests.servers import free_port

    def warned() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.levelname == "WARNING" and "without a login" in r.getMessage()]

    caplog.set_level("WARNING")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    conf = f"""
    gateway.ocpp.authentication {{ password_hash_algorithm.name = sha256 }}
    gateway.ocpp.listeners.ws {{
      public_open {{ bind = "0.0.0.0:{free_port()}", enable_authn = false }}
      public_login {{ bind = "0.0.0.0:{free_port()}" }}
      local_open {{ bind = "127.0.0.1:{free_port()}", enable_authn = false }}
    }}
    """
    async with running_gateway(tmp_path / "a", mosquitto.port, conf):
        pass
    found = warned()
    assert len(found) == 1 and "ocpp:ws:public_open" in found[0], found
    caplog.clear()
    conf = f'gateway.ocpp.listeners.ws.public {{ bind = "0.0.0.0:{free_port()}" }}'  # no authenticator at all
    async with running_gateway(tmp_path / "b", mosquitto.port, conf):
        pass
    found = warned()
    assert len(found) == 1 and "ocpp:ws:public" in found[0], found
