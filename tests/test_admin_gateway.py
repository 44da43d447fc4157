"""The admin API of the OCPP gateway: the gateway, listeners, connected charge points (list,
look up, kick, send a CALL) and the users of the built-in authenticator, over real sockets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import orjson
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.ocpp_support import (
    Gateway,
    closed_with,
    eventually,
    nothing_sent,
    recv_json,
    running_gateway,
)

pytestmark = pytest.mark.timeout(60)

CREDS = ("admin", "public")
OCPP = "/gateways/ocpp"
USERS = f"{OCPP}/authentication/users"


@contextlib.asynccontextmanager
async def admin(gw: Gateway, auth: object = CREDS) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gw.admin_url, auth=auth, timeout=15) as client:
        yield client


@contextlib.asynccontextmanager
async def charge_point(gw: Gateway, cid: str, proto: str = "ocpp1.6", **kwargs) -> AsyncIterator[websockets.ClientConnection]:
    async with websockets.connect(gw.url(cid), subprotocols=[proto], **kwargs) as ws:
        await eventually(lambda: cid in gw.ctx.sessions)
        yield ws


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def bad_request(response: httpx.Response, field: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "BAD_REQUEST" and field in body["message"], body


async def send_json(http: httpx.AsyncClient, method: str, path: str, raw: bytes) -> httpx.Response:
    return await http.request(method, path, content=raw, headers={"content-type": "application/json"})


# --- authentication of the admin API ------------------------------------------------------------


ENDPOINTS = [
    ("GET", OCPP, None),
    ("GET", f"{OCPP}/listeners", None),
    ("GET", f"{OCPP}/listeners/ocpp:ws:default", None),
    ("GET", f"{OCPP}/clients", None),
    ("GET", f"{OCPP}/clients/CP1", None),
    ("DELETE", f"{OCPP}/clients/CP1", None),
    ("POST", f"{OCPP}/clients/CP1/call", {"action": "Reset", "payload": {"type": "Soft"}}),
    ("GET", USERS, None),
    ("POST", USERS, {"user_id": "u1", "password": "p1"}),
    ("GET", f"{USERS}/u1", None),
    ("PUT", f"{USERS}/u1", {"password": "p2"}),
    ("DELETE", f"{USERS}/u1", None),
]


async def test_every_endpoint_needs_credentials(tmp_path, mosquitto):
    no_lockout = "dashboard.unsuccessful_login_max_attempts = 0\n"  # 24 wrong logins here: each must be a 401
    async with running_gateway(tmp_path, mosquitto.port, no_lockout) as gw, charge_point(gw, "CP1") as ws:
        for auth in (None, ("admin", "wrong"), ("nobody", "public")):
            async with admin(gw, auth) as http:
                for method, path, body in ENDPOINTS:
                    response = await http.request(method, path, json=body)
                    assert response.status_code == 401, (auth, method, path, response.text)
                    assert response.json()["code"] == "BAD_USERNAME_OR_PWD"
                    assert response.headers["www-authenticate"].startswith("Basic")
        async with admin(gw, None) as http:
            response = await http.get(OCPP, headers={"Authorization": "Basic !!not-base64"})
            assert response.status_code == 401
        # nothing happened: the charge point is still there and got no CALL, no user was added
        await nothing_sent(ws, 0.2)
        assert "CP1" in gw.ctx.sessions and len(gw.node.user_store) == 0


# --- the gateway and its listeners --------------------------------------------------------------


async def test_gateway_and_listeners(tmp_path, mosquitto):
    conf = "gateway.ocpp { dnstream.awaiting_timeout = 7s, listeners.ws.default.max_conn_rate = 50 }\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw, admin(gw) as http:
        response = await http.get(OCPP)
        assert response.status_code == 200
        body = response.json()
        assert body["name"] == "ocpp" and body["status"] == "running" and body["enable"] is True
        assert body["current_connections"] == 0
        assert body["mountpoint"] == "ocpp/"
        assert body["message_format_checking"] == "disable"
        assert body["dnstream"] == {"topic": "cs/${cid}", "max_mqueue_len": 100, "awaiting_timeout": "7s",
                                    "offline_queue": {"enable": False, "max_len": 10, "ttl": "1h", "boot_wait": "5s",
                                                      "max_payload_size": "64KB", "max_clients": 10000, "max_pending": 1000}}
        assert body["upstream"]["topic"] == "cp/${cid}"
        assert body["default_heartbeat_interval"] == "1m"
        assert body["authentication"]["enable"] is False
        datetime.fromisoformat(body["started_at"])
        assert [li["id"] for li in body["listeners"]] == ["ocpp:ws:default"]

        async with charge_point(gw, "CPG1"), charge_point(gw, "CPG2", "ocpp2.0.1"):
            assert (await http.get(OCPP)).json()["current_connections"] == 2
            response = await http.get(f"{OCPP}/listeners")
            assert response.status_code == 200
            [listener] = response.json()
            assert listener == {
                **listener,
                "id": "ocpp:ws:default", "type": "ws", "name": "default", "enable": True,
                "bind": f"127.0.0.1:{gw.ocpp_port}", "running": True, "current_connections": 2,
                "max_connections": 1_024_000, "max_conn_rate": 50, "mountpoint": "ocpp/",
            }
            assert listener["websocket"]["path"] == "/ocpp"
            one = await http.get(f"{OCPP}/listeners/ocpp:ws:default")
            assert one.status_code == 200 and one.json()["current_connections"] == 2
        await eventually(lambda: not gw.ctx.sessions)
        assert (await http.get(f"{OCPP}/listeners")).json()[0]["current_connections"] == 0

        response = await http.get(f"{OCPP}/listeners/ocpp:ws:nope")
        assert response.status_code == 404 and "ocpp:ws:nope" in response.json()["message"]
        assert (await http.get("/gateways/stomp")).status_code == 404
        assert (await http.post(OCPP, json={})).status_code == 405


# --- clients --------------------------------------------------------------------------------------


async def test_clients_list_filters_and_pages(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        empty = await http.get(f"{OCPP}/clients")
        assert empty.status_code == 200
        assert empty.json() == {"data": [], "meta": {"page": 1, "limit": 100, "count": 0, "hasnext": False}}
        async with (charge_point(gw, "CP-B1") as b1, charge_point(gw, "CP-A2", "ocpp2.0.1"),
                    charge_point(gw, "CP-A1")):
            await b1.send('[2,"h1","Heartbeat",{}]')
            await eventually(lambda: gw.ctx.sessions["CP-B1"].recv_cnt == 1)

            body = (await http.get(f"{OCPP}/clients")).json()
            assert [c["clientid"] for c in body["data"]] == ["CP-A1", "CP-A2", "CP-B1"]
            assert body["meta"] == {"page": 1, "limit": 100, "count": 3, "hasnext": False}
            b = body["data"][2]
            assert b["username"] is None and b["ip_address"] == "127.0.0.1" and isinstance(b["port"], int)
            assert b["proto_name"] == "OCPP" and b["proto_ver"] == "ocpp1.6"
            assert b["keepalive"] == 60 and b["mqueue_len"] == 0 and b["inflight_cnt"] == 0
            assert b["recv_cnt"] == 1 and b["send_cnt"] == 0  # nothing answers Heartbeat here (no backend)
            assert b["connected"] is True and b["node"] == "gw-test" and b["listener"] == "ocpp:ws:default"
            connected_at = datetime.fromisoformat(b["connected_at"])
            assert connected_at.utcoffset() == UTC.utcoffset(None)
            assert b["connected_at"].endswith("+00:00") and "." in b["connected_at"]  # milliseconds
            assert "password" not in b

            page = (await http.get(f"{OCPP}/clients", params={"page": 2, "limit": 2})).json()
            assert [c["clientid"] for c in page["data"]] == ["CP-B1"]
            assert page["meta"] == {"page": 2, "limit": 2, "count": 3, "hasnext": False}
            page = (await http.get(f"{OCPP}/clients", params={"page": 1, "limit": 2})).json()
            assert page["meta"]["hasnext"] is True and len(page["data"]) == 2

            async def ids(**params) -> list[str]:
                response = await http.get(f"{OCPP}/clients", params=params)
                assert response.status_code == 200, response.text
                return [c["clientid"] for c in response.json()["data"]]

            assert await ids(like_clientid="-A") == ["CP-A1", "CP-A2"]
            assert await ids(like_clientid="nomatch") == []
            assert await ids(proto_ver="ocpp2.0.1") == ["CP-A2"]
            assert await ids(like_clientid="CP", proto_ver="ocpp1.6") == ["CP-A1", "CP-B1"]
            assert await ids(username="someone") == []
            assert await ids(clientid="CP-A1") == ["CP-A1"]
            assert await ids(ip_address="127.0.0.1") == ["CP-A1", "CP-A2", "CP-B1"]
            assert await ids(gte_connected_at="2000-01-01T00:00:00Z") == ["CP-A1", "CP-A2", "CP-B1"]
            assert await ids(lte_connected_at="946684800000") == []  # 2000-01-01 in epoch ms

            await bad_request(await http.get(f"{OCPP}/clients", params={"gte_connected_at": "yesterday"}),
                              "gte_connected_at")
            await bad_request(await http.get(f"{OCPP}/clients", params={"page": "x"}), "page")
            await bad_request(await http.get(f"{OCPP}/clients", params={"limit": 0}), "limit")


async def test_get_one_client_and_kick(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        async with charge_point(gw, "CPK") as ws:
            response = await http.get(f"{OCPP}/clients/CPK")
            assert response.status_code == 200
            assert response.json()["clientid"] == "CPK" and response.json()["proto_ver"] == "ocpp1.6"

            response = await http.delete(f"{OCPP}/clients/CPK")
            assert response.status_code == 204 and response.content == b""
            await closed_with(ws, 1000)
            event = await gw.events.wait("client_disconnected", lambda e: e["clientid"] == "CPK")
            assert event["reason"] == "kicked"

        for method in ("GET", "DELETE"):
            response = await http.request(method, f"{OCPP}/clients/CPK")
            assert response.status_code == 404, response.text
            assert response.json()["code"] == "RESOURCE_NOT_FOUND" and "CPK" in response.json()["message"]
        assert (await http.get(f"{OCPP}/clients/nobody")).status_code == 404


# --- sending a CALL ---------------------------------------------------------------------------------


async def test_call_returns_the_charge_points_answer(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        async with charge_point(gw, "CPC") as ws:
            request = asyncio.create_task(
                http.post(f"{OCPP}/clients/CPC/call", json={"action": "Reset", "payload": {"type": "Soft"}}))
            frame = await recv_json(ws)
            assert frame[0] == 2 and frame[2:] == ["Reset", {"type": "Soft"}]
            await ws.send(orjson.dumps([3, frame[1], {"status": "Accepted"}]).decode())
            response = await request
            assert response.status_code == 200, response.text
            assert response.json() == {"MessageTypeId": 3, "UniqueId": frame[1], "Action": "Reset",
                                       "Payload": {"status": "Accepted"}}

            # a CALLERROR answer is an answer too; the payload defaults to {}
            request = asyncio.create_task(http.post(f"{OCPP}/clients/CPC/call", json={"action": "ClearCache"}))
            frame = await recv_json(ws)
            assert frame[2:] == ["ClearCache", {}]
            await ws.send(orjson.dumps([4, frame[1], "NotSupported", "no cache here", {"why": "none"}]).decode())
            response = await request
            assert response.status_code == 200, response.text
            assert response.json() == {"MessageTypeId": 4, "UniqueId": frame[1], "Action": "ClearCache",
                                       "ErrorCode": "NotSupported", "ErrorDescription": "no cache here",
                                       "ErrorDetails": {"why": "none"}}
            # the CALL went through the session's accounting and was announced as delivered
            assert gw.ctx.sessions["CPC"].info()["inflight_cnt"] == 0


async def test_call_times_out(tmp_path, mosquitto):
    conf = "gateway.ocpp.dnstream.awaiting_timeout = 300ms\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw, admin(gw) as http:
        async with charge_point(gw, "CPS") as ws:
            # the API's own timeout
            response = await http.post(f"{OCPP}/clients/CPS/call", json={"action": "Reset", "payload": {"type": "Soft"},
                                                                        "timeout": 0.2})
            assert response.status_code == 504, response.text
            assert response.json()["code"] == "TIMEOUT" and "CPS" in response.json()["message"]
            assert (await recv_json(ws))[2] == "Reset"  # it was sent; the charge point just did not answer
            # the gateway's awaiting_timeout drops the CALL (no timeout given: the default is awaiting_timeout)
            await gw.events.wait("message_dropped", lambda e: e["reason"] == "timeout")
            response = await http.post(f"{OCPP}/clients/CPS/call", json={"action": "ClearCache", "timeout": 30})
            assert response.status_code == 504, response.text
            assert "awaiting_timeout" in response.json()["message"]
            assert (await recv_json(ws))[2] == "ClearCache"


async def test_call_on_a_full_queue_is_a_conflict(tmp_path, mosquitto):
    conf = "gateway.ocpp.dnstream.max_mqueue_len = 1\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw, admin(gw) as http:
        async with charge_point(gw, "CPQ") as ws:
            url = f"{OCPP}/clients/CPQ/call"
            first = asyncio.create_task(http.post(url, json={"action": "Reset", "payload": {"type": "Soft"}}))
            assert (await recv_json(ws))[2] == "Reset"  # in flight, never answered
            second = asyncio.create_task(http.post(url, json={"action": "ClearCache"}))
            session = gw.ctx.sessions["CPQ"]
            await eventually(lambda: session.info()["mqueue_len"] == 1)
            response = await http.post(url, json={"action": "ClearCache"})
            assert response.status_code == 409, response.text
            assert response.json()["code"] == "QUEUE_FULL"
            await nothing_sent(ws, 0.2)  # one in flight: the queued CALL waits
        # the charge point went away: both waiting requests end with 504, saying why
        for task in (first, second):
            response = await task
            assert response.status_code == 504 and "disconnected" in response.json()["message"], response.text


async def test_call_not_connected_and_bad_bodies(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        response = await http.post(f"{OCPP}/clients/NOPE/call", json={"action": "Reset"})
        assert response.status_code == 404 and response.json()["code"] == "RESOURCE_NOT_FOUND"
        async with charge_point(gw, "CPB") as ws:
            url = f"{OCPP}/clients/CPB/call"
            await bad_request(await send_json(http, "POST", url, b'{"action": "Reset",'), "JSON")
            await bad_request(await send_json(http, "POST", url, b""), "JSON body")
            await bad_request(await http.post(url, json=["Reset"]), "object")
            await bad_request(await http.post(url, json={"payload": {}}), "action")
            await bad_request(await http.post(url, json={"action": 3}), "action")
            await bad_request(await http.post(url, json={"action": ""}), "action")
            await bad_request(await http.post(url, json={"action": "Reset", "payload": [1]}), "payload")
            await bad_request(await http.post(url, json={"action": "Reset", "timeout": "1"}), "timeout")
            await bad_request(await http.post(url, json={"action": "Reset", "timeout": True}), "timeout")
            await bad_request(await http.post(url, json={"action": "Reset", "timeout": 0}), "timeout")
            await bad_request(await http.post(url, json={"action": "Reset", "timeout": -1}), "timeout")
            await bad_request(await http.post(url, json={"action": "Reset", "Payload": {}}), "Payload")
            await nothing_sent(ws, 0.2)  # nothing refused was sent


async def test_call_that_cannot_travel_is_a_400_and_the_next_goes_out(tmp_path, mosquitto):
    conf = "gateway.ocpp.listeners.ws.default.websocket.max_frame_size = 4KB\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw, admin(gw) as http:
        async with charge_point(gw, "CPX") as ws:
            url = f"{OCPP}/clients/CPX/call"
            deep: dict = {}
            for _ in range(300):  # orjson reads it, but will not write more than 254 levels
                deep = {"d": deep}
            await bad_request(await http.post(url, json={"action": "DataTransfer", "payload": deep}), "payload")
            await bad_request(await http.post(url, json={"action": "DataTransfer", "payload": {"data": "x" * 5000}}),
                              "payload")
            # orjson would read 2**70 as a float: refused, not rounded
            raw = b'{"action": "DataTransfer", "payload": {"vendorId": "v", "n": 1180591620717411303424}}'
            await bad_request(await send_json(http, "POST", url, raw), "integer")
            # one found when its turn came: queued behind a CALL in flight
            first = asyncio.create_task(http.post(url, json={"action": "Reset", "payload": {"type": "Soft"}}))
            frame = await recv_json(ws)
            queued = asyncio.create_task(http.post(url, json={"action": "DataTransfer", "payload": deep}))
            await asyncio.sleep(0.2)
            await ws.send(orjson.dumps([3, frame[1], {"status": "Accepted"}]).decode())
            assert (await first).status_code == 200
            await bad_request(await queued, "payload")
            # nothing of it reached the charge point, and the next CALL goes out
            request = asyncio.create_task(http.post(url, json={"action": "ClearCache"}))
            frame = await recv_json(ws)
            assert frame[2] == "ClearCache"
            await ws.send(orjson.dumps([3, frame[1], {"status": "Accepted"}]).decode())
            assert (await request).status_code == 200


async def test_call_payload_is_checked_when_downstream_checking_is_on(tmp_path, mosquitto):
    conf = "gateway.ocpp { message_format_checking = dnstream_only, lenient_clients = [CPL] }\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw, admin(gw) as http:
        async with charge_point(gw, "CPV") as ws, charge_point(gw, "CPL") as lenient:
            url = f"{OCPP}/clients/CPV/call"
            await bad_request(await http.post(url, json={"action": "Reset", "payload": {"type": "Sideways"}}), "payload")
            await bad_request(await http.post(url, json={"action": "Reset"}), "payload")  # type is required
            await bad_request(await http.post(url, json={"action": "NoSuchAction"}), "action")
            await nothing_sent(ws, 0.2)
            # a valid one goes through
            request = asyncio.create_task(http.post(url, json={"action": "Reset", "payload": {"type": "Hard"}}))
            frame = await recv_json(ws)
            await ws.send(orjson.dumps([3, frame[1], {"status": "Rejected"}]).decode())
            assert (await request).json()["Payload"] == {"status": "Rejected"}
            # a lenient client is not checked, as on the MQTT path
            request = asyncio.create_task(http.post(f"{OCPP}/clients/CPL/call",
                                                    json={"action": "Reset", "payload": {"type": "Sideways"}}))
            frame = await recv_json(lenient)
            assert frame[2:] == ["Reset", {"type": "Sideways"}]
            await lenient.send(orjson.dumps([3, frame[1], {"status": "Accepted"}]).decode())
            assert (await request).status_code == 200


async def test_call_payload_is_not_checked_when_checking_is_off(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        async with charge_point(gw, "CPO") as ws:
            request = asyncio.create_task(http.post(f"{OCPP}/clients/CPO/call",
                                                    json={"action": "Reset", "payload": {"type": "Sideways"}}))
            frame = await recv_json(ws)
            assert frame[2:] == ["Reset", {"type": "Sideways"}]
            await ws.send(orjson.dumps([4, frame[1], "FormationViolation", "bad type", {}]).decode())
            assert (await request).json()["ErrorCode"] == "FormationViolation"


# --- users of the built-in authenticator -----------------------------------------------------------


async def test_users_crud(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        empty = await http.get(USERS)
        assert empty.status_code == 200
        assert empty.json() == {"data": [], "meta": {"page": 1, "limit": 100, "count": 0, "hasnext": False}}

        response = await http.post(USERS, json={"user_id": "CP-1", "password": "s3cret"})
        assert response.status_code == 201, response.text
        assert response.json() == {"user_id": "CP-1", "is_superuser": False}
        response = await http.post(USERS, json={"user_id": "CP-2", "password": "other", "is_superuser": True})
        assert response.json() == {"user_id": "CP-2", "is_superuser": True}
        await http.post(USERS, json={"user_id": "station/7", "password": "x"})

        response = await http.post(USERS, json={"user_id": "CP-1", "password": "again"})
        assert response.status_code == 409 and response.json()["code"] == "ALREADY_EXISTS"

        response = await http.get(f"{USERS}/CP-1")
        assert response.status_code == 200 and response.json() == {"user_id": "CP-1", "is_superuser": False}
        assert (await http.get(f"{USERS}/station%2F7")).json()["user_id"] == "station/7"
        assert (await http.get(f"{USERS}/station/7")).json()["user_id"] == "station/7"

        listed = (await http.get(USERS)).json()
        assert listed["data"] == [{"user_id": "CP-1", "is_superuser": False}, {"user_id": "CP-2", "is_superuser": True},
                                  {"user_id": "station/7", "is_superuser": False}]
        assert listed["meta"] == {"page": 1, "limit": 100, "count": 3, "hasnext": False}
        page = (await http.get(USERS, params={"page": 1, "limit": 2})).json()
        assert len(page["data"]) == 2 and page["meta"] == {"page": 1, "limit": 2, "count": 3, "hasnext": True}
        like = (await http.get(USERS, params={"like_user_id": "CP-"})).json()
        assert [u["user_id"] for u in like["data"]] == ["CP-1", "CP-2"] and like["meta"]["count"] == 2
        supers = (await http.get(USERS, params={"is_superuser": "true"})).json()
        assert [u["user_id"] for u in supers["data"]] == ["CP-2"] and supers["meta"]["count"] == 1
        await bad_request(await http.get(USERS, params={"is_superuser": "maybe"}), "is_superuser")
        await bad_request(await http.get(USERS, params={"page": 0}), "page")

        response = await http.put(f"{USERS}/CP-1", json={"is_superuser": True})
        assert response.status_code == 200 and response.json() == {"user_id": "CP-1", "is_superuser": True}
        response = await http.put(f"{USERS}/CP-1", json={"password": "new-secret"})
        assert response.status_code == 200 and response.json() == {"user_id": "CP-1", "is_superuser": True}
        assert gw.node.user_store._record("CP-1").matches("new-secret")

        for method, body in (("GET", None), ("PUT", {"password": "x"}), ("DELETE", None)):
            response = await http.request(method, f"{USERS}/nobody", json=body)
            assert response.status_code == 404, (method, response.text)
            assert response.json()["code"] == "NOT_FOUND" and "nobody" in response.json()["message"]

        response = await http.delete(f"{USERS}/CP-2")
        assert response.status_code == 204 and response.content == b""
        assert (await http.get(f"{USERS}/CP-2")).status_code == 404
        assert (await http.delete(f"{USERS}/CP-2")).status_code == 404

        # nothing the API answers carries a password or hash
        everything = (await http.get(USERS)).text + (await http.get(f"{USERS}/CP-1")).text
        assert "hash" not in everything and "salt" not in everything and "password" not in everything


async def test_user_bodies_are_checked(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        await bad_request(await send_json(http, "POST", USERS, b'{"user_id": "a"'), "JSON")
        await bad_request(await http.post(USERS, json="user"), "object")
        await bad_request(await http.post(USERS, json={"password": "p"}), "user_id")
        await bad_request(await http.post(USERS, json={"user_id": "a"}), "password")
        await bad_request(await http.post(USERS, json={"user_id": 7, "password": "p"}), "user_id")
        await bad_request(await http.post(USERS, json={"user_id": "a", "password": 7}), "password")
        await bad_request(await http.post(USERS, json={"user_id": "a", "password": "p", "is_superuser": "yes"}),
                          "is_superuser")
        await bad_request(await http.post(USERS, json={"user_id": "a", "password": "p", "passwd": "p"}), "passwd")
        await bad_request(await http.post(USERS, json={"user_id": "", "password": "p"}), "user_id")
        await bad_request(await http.post(USERS, json={"user_id": "x" * 300, "password": "p"}), "user_id")
        await bad_request(await http.post(USERS, json={"user_id": "a", "password": ""}), "password")
        assert len(gw.node.user_store) == 0

        assert (await http.post(USERS, json={"user_id": "a", "password": "p"})).status_code == 201
        url = f"{USERS}/a"
        await bad_request(await send_json(http, "PUT", url, b"{nope"), "JSON")
        await bad_request(await http.put(url, json={"password": 1}), "password")
        await bad_request(await http.put(url, json={"password": ""}), "password")
        await bad_request(await http.put(url, json={"is_superuser": 1}), "is_superuser")
        await bad_request(await http.put(url, json={"user_id": "b"}), "user_id")
        assert (await http.get(url)).json() == {"user_id": "a", "is_superuser": False}


async def test_users_persist_and_authenticate_across_a_restart(tmp_path, mosquitto):
    conf = ("gateway.ocpp.authentication { enable = true, "
            "password_hash_algorithm { name = bcrypt, salt_rounds = 4 } }\n")
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw, admin(gw) as http:
        response = await http.post(USERS, json={"user_id": "CPA", "password": "first"})
        assert response.status_code == 201, response.text
        await bad_request(await http.post(USERS, json={"user_id": "CPX", "password": "y" * 100}), "password")
        async with charge_point(gw, "CPA", additional_headers=basic("CPA", "first")):
            pass
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw, admin(gw) as http:
        assert (await http.get(f"{USERS}/CPA")).json() == {"user_id": "CPA", "is_superuser": False}
        assert (await http.get(f"{USERS}/CPX")).status_code == 404
        async with charge_point(gw, "CPA", additional_headers=basic("CPA", "first")):
            pass
        assert (await http.put(f"{USERS}/CPA", json={"password": "second"})).status_code == 200
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(gw.url("CPA"), subprotocols=["ocpp1.6"],
                                          additional_headers=basic("CPA", "first")):
                pass
        assert refused.value.response.status_code == 401
        async with charge_point(gw, "CPA", additional_headers=basic("CPA", "second")):
            pass
        assert (await http.delete(f"{USERS}/CPA")).status_code == 204
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw, admin(gw) as http:
        assert (await http.get(USERS)).json()["data"] == []
