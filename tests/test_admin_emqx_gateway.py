"""EMQX's gateway REST paths over real sockets: GET /gateways, GET|PUT /gateways/ocpp, the enable
switch, and the listeners (GET|POST, GET|PUT|DELETE by id), hot-applied to real charge points."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
import websockets

from engine.config import load_settings
from engine.config.overlay import read_overlay
from tests.ocpp_support import Gateway, eventually, running_gateway
from tests.servers import free_port

pytestmark = pytest.mark.timeout(90)

CREDS = ("admin", "public")
OCPP = "/gateways/ocpp"
LISTENERS = f"{OCPP}/listeners"


@contextlib.asynccontextmanager
async def admin(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gw.admin_url, auth=CREDS, timeout=30) as client:
        yield client


def ws_url(port: int, cid: str, path: str = "/ocpp") -> str:
    return f"ws://127.0.0.1:{port}{path}/{cid}"


async def connects(port: int, cid: str, path: str = "/ocpp") -> bool:
    """A charge point can open a session on this port and path (and closes it again)."""
    try:
        async with websockets.connect(ws_url(port, cid, path), subprotocols=["ocpp1.6"], open_timeout=5):
            return True
    except (OSError, websockets.InvalidHandshake, TimeoutError):
        return False


def conf_path(gw: Gateway) -> str:
    path = gw.node.config_path
    assert path is not None
    return path


# --- the gateway ----------------------------------------------------------------------------------


async def test_gateways_list_and_status_filter(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        r = await http.get("/gateways")
        assert r.status_code == 200, r.text
        [ocpp] = r.json()
        assert ocpp["name"] == "ocpp" and ocpp["status"] == "running"
        assert ocpp["current_connections"] == 0 and ocpp["max_connections"] == 1_024_000
        assert ocpp["listeners"] == [{"id": "ocpp:ws:default", "type": "ws", "name": "default", "running": True}]
        assert ocpp["node_status"][0]["node"] == "gw-test"
        async with websockets.connect(gw.url("GW1"), subprotocols=["ocpp1.6"]):
            await eventually(lambda: "GW1" in gw.ctx.sessions)
            assert (await http.get("/gateways")).json()[0]["current_connections"] == 1
        assert [g["name"] for g in (await http.get("/gateways", params={"status": "running"})).json()] == ["ocpp"]
        assert (await http.get("/gateways", params={"status": "stopped"})).json() == []
        assert (await http.get("/gateways", params={"status": "unloaded"})).json() == []
        r = await http.get("/gateways", params={"status": "sleeping"})
        assert r.status_code == 400 and "running, stopped, unloaded" in r.json()["message"]


async def test_gateway_conf_has_listeners_as_a_list_with_ids(tmp_path, mosquitto):
    conf = 'gateway.ocpp.listeners.ws.other { bind = "127.0.0.1:%d", websocket.path = "/x" }\n' % free_port()
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw, admin(gw) as http:
        body = (await http.get(OCPP)).json()
        assert body["name"] == "ocpp" and body["enable"] is True and body["status"] == "running"
        assert body["dnstream"]["awaiting_timeout"] == "30s"
        ids = {li["id"]: li for li in body["listeners"]}
        assert set(ids) == {"ocpp:ws:default", "ocpp:ws:other"}
        assert ids["ocpp:ws:other"]["websocket"]["path"] == "/x" and ids["ocpp:ws:other"]["type"] == "ws"
        # keys EMQX has that do nothing here are not shown while they hold their default
        assert all(key not in body for key in ("enable_stats", "clientinfo_override"))


async def test_put_gateway_with_the_emqx_docs_body(tmp_path, mosquitto):
    """EMQX's docs enable the OCPP gateway with this body; "bind" is a port as a string."""
    port = free_port()
    docs_body = {
        "name": "ocpp", "enable": True, "mountpoint": "ocpp/",
        "listeners": [{"type": "ws", "name": "default", "bind": str(port), "websocket": {"path": "/ocpp"}}],
    }
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        old_port = gw.ocpp_port
        r = await http.put(OCPP, json=docs_body)
        assert r.status_code == 204, r.text
        [listener] = (await http.get(LISTENERS)).json()
        assert listener["bind"] == f"0.0.0.0:{port}" and listener["running"] is True
        assert await connects(port, "DOCS1")
        assert not await connects(old_port, "DOCS2")
        # the gateway's own keys: replaced one by one, kept for the next start
        r = await http.put(OCPP, json={"mountpoint": "charge/", "dnstream": {"awaiting_timeout": "9s"}})
        assert r.status_code == 204, r.text
        body = (await http.get(OCPP)).json()
        assert body["mountpoint"] == "charge/" and body["dnstream"]["awaiting_timeout"] == "9s"
        assert body["dnstream"]["max_mqueue_len"] == 100
        again = load_settings(conf_path(gw), {})
        assert again.gateway.ocpp.mountpoint == "charge/" and again.gateway.ocpp.listeners.ws["default"].bind.port == port


async def test_put_gateway_refuses_bad_bodies_and_applies_nothing(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        before = (await http.get(OCPP)).json()
        for body, named in [
            ({"mountpint": "x/"}, "mountpint"),
            ({"idle_timeout": "soon"}, "idle_timeout"),
            ({"name": "stomp"}, "name"),
            ({"listeners": {"ws": {}}}, "listeners"),
            ({"listeners": [{"type": "tcp", "name": "a"}]}, "listeners[0].type"),
            ({"listeners": [{"type": "ws", "name": "1bad"}]}, "listeners[0].name"),
            ({"listeners": [{"type": "ws", "name": "a", "bind": "nowhere"}]}, "bind"),
            ([], "JSON object"),
        ]:
            r = await http.put(OCPP, json=body)
            assert r.status_code == 400, (body, r.text)
            assert r.json()["code"] == "BAD_REQUEST" and named in r.json()["message"], (body, r.text)
        assert (await http.get(OCPP)).json() == before
        assert read_overlay(gw.node.settings.node.data_dir) == {}


async def test_enable_switch_load_and_unload(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        r = await http.put(f"{OCPP}/enable/maybe")
        assert r.status_code == 400 and "true or false" in r.json()["message"]
        r = await http.put(f"{OCPP}/enable/true")
        assert r.status_code == 204, r.text
        r = await http.put(f"{OCPP}/enable/false")
        assert r.status_code == 200 and r.json()["needs_restart"], r.text
        assert load_settings(conf_path(gw), {}).gateway.ocpp.enable is False
        assert (await http.get(OCPP)).json()["status"] == "stopped"
        r = await http.post("/gateways", json={"name": "ocpp"})
        assert r.status_code == 405 and "PUT /api/v5/gateways/ocpp" in r.json()["message"]
        r = await http.delete(OCPP)
        assert r.status_code == 405 and "enable/false" in r.json()["message"]


# --- listeners ------------------------------------------------------------------------------------


async def test_listener_added_over_the_api_accepts_a_charge_point(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        async with websockets.connect(gw.url("STAY"), subprotocols=["ocpp1.6"]) as stay:
            await eventually(lambda: "STAY" in gw.ctx.sessions)
            port = free_port()
            r = await http.post(LISTENERS, json={"type": "ws", "name": "extra", "bind": f"127.0.0.1:{port}",
                                                 "websocket": {"path": "/cs"}})
            assert r.status_code == 201, r.text
            body = r.json()
            assert body["id"] == "ocpp:ws:extra" and body["running"] is True and body["bind"] == f"127.0.0.1:{port}"
            assert await connects(port, "NEW1", "/cs")
            # the charge point on the other listener was not dropped
            await stay.ping()
            assert "STAY" in gw.ctx.sessions
        r = await http.get(f"{LISTENERS}/ocpp%3Aws%3Aextra")  # URL-encoded colons
        assert r.status_code == 200 and r.json()["websocket"]["path"] == "/cs"
        r = await http.post(LISTENERS, json={"type": "ws", "name": "extra", "bind": str(free_port())})
        assert r.status_code == 400 and "already exists" in r.json()["message"]
        # kept for the next start
        again = load_settings(conf_path(gw), {})
        assert again.gateway.ocpp.listeners.ws["extra"].bind.port == port


async def test_listener_put_moves_it_and_delete_stops_it(tmp_path, mosquitto):
    old_port = free_port()
    conf = f'gateway.ocpp.listeners.ws.side {{ bind = "127.0.0.1:{old_port}", max_conn_rate = 77 }}\n'
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw, admin(gw) as http:
        assert await connects(old_port, "SIDE1")
        new_port = free_port()
        r = await http.put(f"{LISTENERS}/ocpp:ws:side", json={"bind": f"127.0.0.1:{new_port}"})
        assert r.status_code == 200, r.text
        # a PUT replaces the listener: what the body leaves out is the default, not the file's value
        assert r.json()["bind"] == f"127.0.0.1:{new_port}" and r.json()["max_conn_rate"] == 1000
        assert await connects(new_port, "SIDE2")
        assert not await connects(old_port, "SIDE3")
        assert await connects(gw.ocpp_port, "DEFAULT1")

        r = await http.delete(f"{LISTENERS}/ocpp:ws:side")
        assert r.status_code == 204, r.text
        assert not await connects(new_port, "SIDE4")
        assert (await http.get(f"{LISTENERS}/ocpp:ws:side")).status_code == 404
        assert (await http.delete(f"{LISTENERS}/ocpp:ws:side")).status_code == 404
        assert [li["id"] for li in (await http.get(LISTENERS)).json()] == ["ocpp:ws:default"]
        # the conf file still defines it; the overlay's null keeps it deleted at the next start
        assert "side" not in load_settings(conf_path(gw), {}).gateway.ocpp.listeners.ws
        assert await connects(gw.ocpp_port, "DEFAULT2")


async def test_listener_get_put_round_trip_changes_nothing(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        before = (await http.get(f"{LISTENERS}/ocpp:ws:default")).json()
        r = await http.put(f"{LISTENERS}/ocpp:ws:default", json=before)
        assert r.status_code == 200, r.text
        assert r.json() == before
        assert gw.node.settings.gateway.ocpp.listeners.ws["default"].bind.port == gw.ocpp_port


async def test_listener_bodies_are_checked_and_nothing_is_applied(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        port = free_port()
        cases = [
            ("POST", LISTENERS, {"type": "ws", "name": "a", "bind": str(port), "acceptorz": 4}, "acceptorz"),
            ("POST", LISTENERS, {"type": "ws", "name": "a", "bind": str(port), "websocket": {"path": 5}}, "websocket.path"),
            ("POST", LISTENERS, {"type": "ws", "name": "a", "bind": str(port), "max_connections": "many"}, "max_connections"),
            ("POST", LISTENERS, {"type": "ws", "name": "a"}, "bind: required"),
            ("POST", LISTENERS, {"type": "tcp", "name": "a", "bind": str(port)}, "type"),
            ("POST", LISTENERS, {"type": "ws", "name": "a b", "bind": str(port)}, "name"),
            ("POST", LISTENERS, {"type": "ws", "name": "a", "bind": str(port), "id": "ocpp:ws:b"}, "id"),
            ("POST", LISTENERS, ["ws"], "JSON object"),
            ("PUT", f"{LISTENERS}/ocpp:ws:default", {"bind": "127.0.0.1:99999"}, "bind"),
            ("PUT", f"{LISTENERS}/ocpp:ws:default", {"name": "other"}, "name"),
            ("PUT", f"{LISTENERS}/ocpp:tcp:default", {}, "invalid listener id"),
            ("GET", f"{LISTENERS}/default", None, "invalid listener id"),
        ]
        for method, path, body, named in cases:
            r = await http.request(method, path, json=body)
            assert r.status_code == 400, (method, path, body, r.text)
            assert r.json()["code"] == "BAD_REQUEST" and named in r.json()["message"], (body, r.text)
        r = await http.put(f"{LISTENERS}/ocpp:ws:nope", json={"bind": str(port)})
        assert r.status_code == 404 and r.json()["code"] == "RESOURCE_NOT_FOUND"
        assert [li["id"] for li in (await http.get(LISTENERS)).json()] == ["ocpp:ws:default"]
        assert read_overlay(gw.node.settings.node.data_dir) == {}
        assert await connects(gw.ocpp_port, "STILL")


async def test_listener_on_a_busy_port_says_it_is_not_running(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        r = await http.post(LISTENERS, json={"type": "ws", "name": "clash", "bind": f"127.0.0.1:{gw.ocpp_port}"})
        assert r.status_code == 400 and "the same address as gateway.ocpp.listeners.ws.default" in r.text
        # a port another program holds (the broker's): kept, as EMQX keeps it, but reported not running
        r = await http.post(LISTENERS, json={"type": "ws", "name": "clash", "bind": f"127.0.0.1:{mosquitto.port}"})
        assert r.status_code == 201, r.text
        assert r.json()["running"] is False and "not started" in r.json()["running_error"]
        assert await connects(gw.ocpp_port, "FIRST")


async def test_every_new_endpoint_needs_credentials(tmp_path, mosquitto):
    endpoints = [
        ("GET", "/gateways", None), ("POST", "/gateways", {"name": "ocpp"}),
        ("PUT", OCPP, {"mountpoint": "x/"}), ("DELETE", OCPP, None), ("PUT", f"{OCPP}/enable/false", None),
        ("GET", LISTENERS, None), ("POST", LISTENERS, {"type": "ws", "name": "x", "bind": "127.0.0.1:1"}),
        ("GET", f"{LISTENERS}/ocpp:ws:default", None), ("PUT", f"{LISTENERS}/ocpp:ws:default", {"bind": "1"}),
        ("DELETE", f"{LISTENERS}/ocpp:ws:default", None),
        ("GET", f"{OCPP}/authentication", None), ("DELETE", f"{OCPP}/authentication", None),
        ("POST", f"{OCPP}/authentication", {"mechanism": "password_based", "backend": "built_in_database"}),
        ("PUT", f"{OCPP}/authentication", {"mechanism": "password_based", "backend": "built_in_database"}),
    ]
    no_lockout = "dashboard.unsuccessful_login_max_attempts = 0\n"
    async with running_gateway(tmp_path, mosquitto.port, no_lockout) as gw:
        for auth in (None, ("admin", "wrong")):
            async with httpx.AsyncClient(base_url=gw.admin_url, auth=auth, timeout=30) as http:
                for method, path, body in endpoints:
                    r = await http.request(method, path, json=body)
                    assert r.status_code == 401 and r.json()["code"] == "BAD_USERNAME_OR_PWD", (method, path, r.text)
        assert read_overlay(gw.node.settings.node.data_dir) == {}
        assert await connects(gw.ocpp_port, "UNTOUCHED")


async def test_gateway_get_put_round_trip_changes_nothing(tmp_path, mosquitto):
    wss_free = free_port()
    conf = f'gateway.ocpp.listeners.ws.b {{ bind = "127.0.0.1:{wss_free}", mountpoint = "b/" }}\n'
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw, admin(gw) as http:
        before = gw.node.settings
        body = (await http.get(OCPP)).json()
        r = await http.put(OCPP, json=body)
        assert r.status_code == 204, r.text
        assert gw.node.settings == before
        assert load_settings(conf_path(gw), {}) == before


async def test_wss_listener_over_the_api_and_its_masked_password(tmp_path, mosquitto):
    import ssl

    from tests.certs import CertAuthority

    (tmp_path / "pki").mkdir()
    ca = CertAuthority(tmp_path / "pki")
    server = ca.server()
    port = free_port()
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        r = await http.post(LISTENERS, json={
            "type": "wss", "name": "tls", "bind": f"127.0.0.1:{port}",
            "ssl_options": {"certfile": str(server.cert), "keyfile": str(server.key), "password": "k3y-pass"}})
        assert r.status_code == 201, r.text
        assert r.json()["id"] == "ocpp:wss:tls" and r.json()["ssl_options"]["password"] == "******"
        client = ssl.create_default_context(cafile=str(ca.cert_path))
        async with websockets.connect(f"wss://localhost:{port}/ocpp/TLS1", subprotocols=["ocpp1.6"], ssl=client):
            pass
        listener = (await http.get(f"{LISTENERS}/ocpp:wss:tls")).json()
        assert "k3y-pass" not in str(listener)
        listener["max_conn_rate"] = 10
        r = await http.put(f"{LISTENERS}/ocpp:wss:tls", json=listener)
        assert r.status_code == 200, r.text
        kept = gw.node.settings.gateway.ocpp.listeners.wss["tls"]
        assert kept.ssl_options.password == "k3y-pass" and kept.max_conn_rate == 10
        async with websockets.connect(f"wss://localhost:{port}/ocpp/TLS2", subprotocols=["ocpp1.6"], ssl=client):
            pass


async def test_hostile_bodies_on_the_new_endpoints(tmp_path, mosquitto):
    with_bodies = [("PUT", OCPP), ("POST", LISTENERS), ("PUT", f"{LISTENERS}/ocpp:ws:default"),
                   ("POST", f"{OCPP}/authentication"), ("PUT", f"{OCPP}/authentication")]
    async with running_gateway(tmp_path, mosquitto.port) as gw, admin(gw) as http:
        for method, path in with_bodies:
            for raw, status, named in [
                (b"{nope", 400, "not JSON"), (b"", 400, "JSON body is required"), (b"[1, 2]", 400, "JSON object"),
                (b'"text"', 400, "JSON object"), (b"\xff\xfe", 400, "not JSON"),
                (b'{"a": ' * 2000 + b"1" + b"}" * 2000, 400, "not JSON"),
                (b'{"x": "' + b"y" * (2 * 1024 * 1024) + b'"}', 413, "max_request_body"),
            ]:
                r = await http.request(method, path, content=raw, headers={"content-type": "application/json"})
                assert r.status_code == status and named in r.json()["message"], (method, path, raw[:20], r.text)
        deep: object = "x"
        for _ in range(600):
            deep = {"k": deep}
        r = await http.put(OCPP, json={"upstream": deep})
        assert r.status_code == 400 and "nested too deeply" in r.json()["message"], r.text
        r = await http.put(f"{LISTENERS}/ocpp:ws:default", json={"bind": str(gw.ocpp_port), "websocket": deep})
        assert r.status_code == 400, r.text
        assert read_overlay(gw.node.settings.node.data_dir) == {}
        assert (await http.get("/status")).status_code == 200
        assert await connects(gw.ocpp_port, "ALIVE")
