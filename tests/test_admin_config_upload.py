"""PUT /api/v5/configs takes HOCON from the network: no includes (nothing fetched, no file echoed), no
environment substitution, a body size limit, and parsing that does not stop the gateway."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest

from tests.ocpp_support import running_gateway

pytestmark = pytest.mark.timeout(120)

AUTH = ("admin", "public")


class HoldingServer:
    """A TCP server that accepts and never answers; it records every connection."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> HoldingServer:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            await asyncio.sleep(3600)

        self.server = await asyncio.start_server(hold, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


@pytest.mark.parametrize("directive", [
    'include url("http://127.0.0.1:{port}/x.conf")',
    'include "http://127.0.0.1:{port}/x.conf"',
    'include required(url("http://127.0.0.1:{port}/x.conf"))',
    'gateway {{ Include url("http://127.0.0.1:{port}/x.conf") }}',
])
async def test_include_url_is_refused_and_never_fetched(tmp_path, mosquitto, directive):
    async with HoldingServer() as holder, running_gateway(tmp_path, mosquitto.port) as gw, \
            httpx.AsyncClient(base_url=gw.admin_url, auth=AUTH, timeout=30) as api:
        put = asyncio.create_task(api.put("/configs", content=directive.format(port=holder.port)))
        assert (await api.get("/status")).status_code == 200  # the gateway answers others meanwhile
        r = await put
        assert r.status_code == 400 and r.json()["code"] == "BAD_CONFIG"
        assert "include is not accepted over the API" in r.json()["message"]
        await asyncio.sleep(0.2)
        assert holder.connections == 0
        assert (await api.get("/status")).status_code == 200


@pytest.mark.parametrize("directive", [
    'include file("{path}")', 'include "{path}"', 'include required(file("{path}"))',
    'include classpath("{path}")', 'include package("{path}")', 'a = 1, include file("{path}")',
])
async def test_include_file_is_refused_without_echoing_the_file(tmp_path, mosquitto, directive):
    secret = tmp_path / "secret.conf"
    secret.write_text("this-is-the-secret-content = 42\n")
    async with running_gateway(tmp_path, mosquitto.port) as gw, httpx.AsyncClient(base_url=gw.admin_url, auth=AUTH) as api:
        r = await api.put("/configs", content=directive.format(path=secret))
        assert r.status_code == 400 and "include is not accepted" in r.json()["message"]
        assert "this-is-the-secret-content" not in r.text
        assert "this-is-the-secret-content" not in (await api.get("/configs")).text


@pytest.mark.parametrize("body", ["node.name = ${HOME}", "node.name = ${?HOME}", 'node.name = "x"${HOME}',
                                  "gateway.ocpp.mountpoint = ${PATH}", "PATH += x"])
async def test_environment_substitutions_are_refused(tmp_path, mosquitto, body):
    async with running_gateway(tmp_path, mosquitto.port) as gw, httpx.AsyncClient(base_url=gw.admin_url, auth=AUTH) as api:
        r = await api.put("/configs", content=body)
        assert r.status_code == 400 and "substitutions are not accepted over the API" in r.json()["message"]
        shown = (await api.get("/configs")).text + r.text
        for name in ("HOME", "PATH"):
            assert os.environ[name] not in shown
        assert gw.node.settings.node.name == "gw-test"


async def test_quoted_substitution_text_is_plain_text(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, httpx.AsyncClient(base_url=gw.admin_url, auth=AUTH) as api:
        r = await api.put("/configs", content='gateway.ocpp.upstream.topic = "up/${cid}/include"')
        assert r.status_code == 200, r.text
        assert gw.node.settings.gateway.ocpp.upstream.topic == "up/${cid}/include"


async def test_a_body_above_the_default_limit_gets_413(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, httpx.AsyncClient(base_url=gw.admin_url, auth=AUTH) as api:
        r = await api.put("/configs", content="# " + "x" * (1024 * 1024) + "\n")
        assert r.status_code == 413 and r.json()["code"] == "PAYLOAD_TOO_LARGE"
        assert (await api.get("/status")).status_code == 200


async def test_a_slow_to_parse_body_does_not_stop_the_gateway(tmp_path, mosquitto):
    """A large body takes pyhocon seconds to parse (here all of the answer's cost: it is a syntax error at
    the very end): the status request sent after it is answered before it."""
    body = "x {\n" + "".join(f"  k{i} = [1, 2, {{a = b}}]\n" for i in range(2000))  # no closing brace
    async with running_gateway(tmp_path, mosquitto.port) as gw, \
            httpx.AsyncClient(base_url=gw.admin_url, auth=AUTH, timeout=120) as api:
        put = asyncio.create_task(api.put("/configs", content=body))
        await asyncio.sleep(0.3)
        status = await asyncio.wait_for(api.get("/status"), 60)
        assert status.status_code == 200 and not put.done()
        r = await put
        assert r.status_code == 400 and "HOCON syntax error" in r.json()["message"]


def test_the_include_scan_errs_towards_refusing():
    from engine.config.untrusted import find_include

    refused = ['include "x"', 'INCLUDE "x"', "\u0131nclude \"x\"", 'a = \\", include "x"', 'a = "\\\\" include "x"',
               '\\include "x"', 'a { b = 1\n  include required(file("f")) }', "# include", 'a = [include]']
    allowed = ['a = "include"', 'a = "x\\" include"', "includes = 1", "x_include = 1", '"include" = 1', 'a = """ include """']
    assert [t for t in refused if find_include(t) is None] == []
    assert [t for t in allowed if find_include(t) is not None] == []


async def test_concurrent_merges_keep_both_changes(tmp_path, mosquitto, monkeypatch):
    async with running_gateway(tmp_path, mosquitto.port) as gw, httpx.AsyncClient(base_url=gw.admin_url, auth=AUTH) as api:
        real_reload = gw.node.reload

        async def slow_reload(settings):  # widens the window between one change's read and its write
            await asyncio.sleep(0.5)
            return await real_reload(settings)

        monkeypatch.setattr(gw.node, "reload", slow_reload)
        a, b = await asyncio.gather(api.put("/configs", content="gateway.ocpp.dnstream.max_mqueue_len = 7"),
                                    api.put("/configs", content="gateway.ocpp.idle_timeout = 31s"))
        assert a.status_code == b.status_code == 200
        ocpp = gw.node.settings.gateway.ocpp
        assert ocpp.dnstream.max_mqueue_len == 7 and ocpp.idle_timeout == 31
        stored = (tmp_path / "data" / "cluster.hocon").read_text()
        assert '"max_mqueue_len" = 7' in stored and '"idle_timeout" = "31s"' in stored


async def test_the_effective_config_sent_back_keeps_its_masked_secrets(tmp_path, mosquitto):
    """GET /configs prints secrets as "******"; PUT of that very text (a round trip, the dashboard's
    or a script's) keeps each secret's value instead of storing six stars as the password. A masked
    secret with no current value to stand for is refused."""
    conf = 'dashboard.default_password = "s3cret-pw"\nmqtt.password = "broker-pw"\n'
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        auth = ("admin", "s3cret-pw")
        async with httpx.AsyncClient(base_url=gw.admin_url, auth=auth) as api:
            text = (await api.get("/configs")).text
            assert 'default_password = "******"' in text and "s3cret-pw" not in text
            for mode in ("merge", "replace"):
                r = await api.put(f"/configs?mode={mode}", content=text)
                assert r.status_code == 200, r.text
                assert gw.node.settings.dashboard.default_password == "s3cret-pw"
                assert gw.node.settings.mqtt.password == "broker-pw"
            assert (await api.get("/configs")).status_code == 200  # the password still logs in
            r = await api.put("/configs", content='connectors.pgsql.db { database = "x", password = "******" }')
            assert r.status_code == 400 and "connectors.pgsql.db.password" in r.text and "masked" in r.text
            r = await api.post("/configs/validate", content=text)
            assert r.status_code == 200 and r.json()["valid"] is True, r.text
