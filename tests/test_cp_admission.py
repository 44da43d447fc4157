"""Per-client admission (issue 12 #7): one client must not lock everybody out.

The per-source and per-cid rates, the failed-login ban per source and flapping_detect per cid are
checked before the listener-wide max_conn_rate bucket; the clients that arrive from other
addresses (127.0.0.2 and up: the whole of 127/8 is loopback) or as other charge points are served.
Loopback is exempt from the per-source limits by default (`per_source_exempt`), so the tests of
those limits empty that list.
"""

from __future__ import annotations

import asyncio
import base64

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from engine.auth import UserStore
from engine.metrics import node_registry, render
from engine.ocpp.admission import KeyedBuckets, WindowBan, networks, source_key
from tests.ocpp_support import running_gateway
from tests.servers import free_port

pytestmark = pytest.mark.timeout(120)
P = ["ocpp1.6"]


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def connect(url: str, source: str = "127.0.0.1", headers: dict[str, str] | None = None):
    return websockets.connect(url, subprotocols=P, additional_headers=headers, local_addr=(source, 0))


async def status_of(url: str, source: str = "127.0.0.1", headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """101 (and the connection closed again) or the refusal's status, with the answer's headers."""
    try:
        async with connect(url, source, headers):
            return 101, {}
    except InvalidStatus as exc:
        return exc.response.status_code, dict(exc.response.headers)


async def upgrade(port: int, cid: str, auth: str) -> bytes:
    """One upgrade request on a bare socket from 127.0.0.1: the status line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /ocpp/{cid} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                 f"Sec-WebSocket-Protocol: ocpp1.6\r\nAuthorization: Basic {auth}\r\n\r\n".encode())
    try:
        line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.transport.abort()
    return line


async def test_a_flood_of_failed_logins_from_one_address_does_not_lock_others_out(tmp_path, mosquitto):
    """The issue's case: thousands of failed charge point logins from one address used to drain the
    shared max_conn_rate bucket, and a correct login from elsewhere got 503."""
    UserStore.in_data_dir(tmp_path / "data").add("GOOD", "right")
    port = free_port()
    conf = f"""
    gateway.ocpp.authentication {{ password_hash_algorithm {{ name = pbkdf2, iterations = 1000 }},
                                   max_failed_logins_per_source = 5 }}
    gateway.ocpp.listeners.ws.default {{ bind = "127.0.0.1:{port}", max_conn_rate = 50, max_conn_rate_per_source = 5,
                                         per_source_exempt = [] }}
    """
    wrong = base64.b64encode(b"GOOD:wrong").decode()
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        answers: dict[bytes, int] = {}
        done = asyncio.Event()

        async def attacker(n: int) -> None:
            for i in range(n):
                line = await upgrade(port, f"X{i % 7}", wrong)
                key = line.split(b" ")[1] if line else b"closed"
                answers[key] = answers.get(key, 0) + 1

        async def good_logins() -> list[int]:
            statuses = []
            while not done.is_set():
                status, _ = await status_of(f"ws://127.0.0.1:{port}/ocpp/GOOD", "127.0.0.2", basic("GOOD", "right"))
                statuses.append(status)
                await asyncio.sleep(0.3)  # under GOOD's own max_conn_rate_per_clientid (5/s)
            return statuses

        checker = asyncio.create_task(good_logins())
        await asyncio.gather(*(attacker(100) for _ in range(30)))  # 3,000 attempts
        done.set()
        statuses = await checker
        assert statuses and set(statuses) == {101}, statuses
        assert sum(answers.values()) == 3000
        assert answers.get(b"401", 0) <= 6 and b"503" not in answers, answers  # the 6th failure bans
        refused = gw.ctx.metrics.refused
        assert answers[b"429"] == (refused["too_many_failed_logins"] + refused["source_rate_exceeded"]
                                   + refused["clientid_rate_exceeded"])
        assert refused["server_unavailable"] == 0
        text = render(node_registry(gw.node)).decode()
        assert 'ocppgw_admission_bans_total{kind="failed_logins"} 1.0' in text
        assert 'ocppgw_handshakes_refused_total{reason="too_many_failed_logins"}' in text


async def test_failed_login_ban_is_per_source_and_expires(tmp_path, mosquitto):
    UserStore.in_data_dir(tmp_path / "data").add("CP1", "right")
    conf = """gateway.ocpp.authentication { max_failed_logins_per_source = 2, failed_login_ban_time = 1s }
    gateway.ocpp.listeners.ws.default.per_source_exempt = []"""
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        url = gw.url("CP1")
        for _ in range(3):  # the third failure is one too many
            assert (await status_of(url, headers=basic("CP1", "wrong")))[0] == 401
        status, headers = await status_of(url, headers=basic("CP1", "right"))
        assert status == 429 and int(headers["retry-after"]) >= 1
        assert (await status_of(url, "127.0.0.2", basic("CP1", "right")))[0] == 101
        await asyncio.sleep(1.2)
        assert (await status_of(url, headers=basic("CP1", "right")))[0] == 101
        connacks = [e["reason_code"] for e in gw.events.named("client_connack")]
        assert connacks.count("too_many_failed_logins") == 1


async def test_per_source_and_per_clientid_rates(tmp_path, mosquitto):
    port = free_port()
    conf = f"""gateway.ocpp.listeners.ws.default {{
      bind = "127.0.0.1:{port}", max_conn_rate_per_source = 2, max_conn_rate_per_clientid = 2, per_source_exempt = [] }}"""
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        url = f"ws://127.0.0.1:{port}/ocpp/"
        assert [(await status_of(url + f"S{i}"))[0] for i in range(3)] == [101, 101, 429]
        assert (await status_of(url + "S3", "127.0.0.2"))[0] == 101  # another address has its own bucket
        assert [(await status_of(url + "X", f"127.0.0.{3 + i}"))[0] for i in range(3)] == [101, 101, 429]
        assert (await status_of(url + "Y", "127.0.0.5"))[0] == 101  # another charge point is served
        refused = gw.ctx.metrics.refused
        assert refused["source_rate_exceeded"] == 1 and refused["clientid_rate_exceeded"] == 1
        assert refused["server_unavailable"] == 0


async def test_flapping_charge_point_is_banned_others_are_not_and_the_ban_expires(tmp_path, mosquitto):
    conf = "flapping_detect { enable = true, max_count = 3, window_time = 1m, ban_time = 1s }"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        url = gw.url("FLAP")
        assert [(await status_of(url, f"127.0.0.{1 + i}"))[0] for i in range(3)] == [101] * 3
        status, headers = await status_of(url, "127.0.0.4")  # the 4th login within the window
        assert status == 429 and headers["retry-after"] == "1"
        assert (await status_of(url, "127.0.0.5"))[0] == 429  # refused before the handshake now
        assert (await status_of(gw.url("OTHER"), "127.0.0.5"))[0] == 101
        flapping = gw.events.named("client_flapping")
        assert len(flapping) == 1 and flapping[0]["clientid"] == "FLAP" and flapping[0]["max_count"] == 3
        assert gw.ctx.metrics.refused["banned"] == 2
        text = render(node_registry(gw.node)).decode()
        assert 'ocppgw_admission_bans_total{kind="flapping"} 1.0' in text
        assert 'ocppgw_admission_bans_active{kind="flapping"} 1.0' in text
        await asyncio.sleep(1.2)
        assert (await status_of(url, "127.0.0.6"))[0] == 101


async def test_flapping_detect_off_by_default(tmp_path, mosquitto):
    conf = "gateway.ocpp.listeners.ws.default.max_conn_rate_per_clientid = 0"  # 0: off
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        for i in range(20):  # well over max_count = 15, each from its own address
            assert (await status_of(gw.url("CP"), f"127.0.1.{i + 1}"))[0] == 101


async def test_loopback_is_exempt_from_per_source_limits_by_default(tmp_path, mosquitto):
    """A reverse proxy on the same host (or the simulator) brings every charge point from loopback:
    the per-source limits do not apply to it unless per_source_exempt says otherwise."""
    UserStore.in_data_dir(tmp_path / "data").add("CP1", "right")
    conf = """gateway.ocpp.authentication.max_failed_logins_per_source = 1
    gateway.ocpp.listeners.ws.default.max_conn_rate_per_source = 1"""
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        assert [(await status_of(gw.url(f"S{i}"), headers=basic(f"S{i}", "x")))[0] for i in range(4)] == [401] * 4
        assert (await status_of(gw.url("CP1"), headers=basic("CP1", "right")))[0] == 101
        assert not gw.ctx.metrics.refused["source_rate_exceeded"] and not gw.ctx.metrics.refused["too_many_failed_logins"]


def test_per_source_exempt_is_checked(tmp_path):
    from engine.config import ConfigError, load_settings

    path = tmp_path / "gateway.conf"
    path.write_text('gateway.ocpp.listeners.ws.default.per_source_exempt = ["10.0.0.0/8", "2001:db8::/32", "not-a-net"]')
    with pytest.raises(ConfigError, match=r"per_source_exempt\[2\]"):
        load_settings(path, {}, overlay=False)


def test_source_key_groups_ipv6_by_64_and_skips_exempt_networks():
    assert source_key("192.0.2.7") == "192.0.2.7"
    assert source_key("2001:db8:1:2:aaaa::1") == source_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:3::1") != source_key("2001:db8:1:2::1")
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_key("fe80::1%eth0") == "fe80::/64"
    exempt = networks(["127.0.0.0/8", "::1/128", "10.1.0.0/16"])
    assert source_key("127.0.0.9", exempt) is None and source_key("::1", exempt) is None
    assert source_key("::ffff:10.1.2.3", exempt) is None
    assert source_key("10.2.0.1", exempt) == "10.2.0.1"


def test_tables_are_bounded_and_forget_leniently():
    buckets = KeyedBuckets(max_keys=100)
    for i in range(10_000):  # a spray of addresses
        buckets.take(f"k{i}", 1, 0.0)
    assert len(buckets) == 100
    assert buckets.take("k0", 1, 0.0)  # forgotten: a full bucket again
    assert not buckets.take("k0", 1, 0.0)
    bans = WindowBan(max_keys=100)
    for i in range(10_000):
        bans.record(f"c{i}", 0.0, 0, 60, 300)  # max_count 0: every key banned at once
    assert len(bans) <= 100 and bans.bans_total == 10_000
    assert bans.banned("c9999", 1.0) and not bans.banned("c0", 1.0)
    assert not bans.banned("c9999", 301.0)  # expired
    # the window: more than max_count events within it ban; a new window starts afresh
    bans = WindowBan()
    assert [bans.record("x", t, 2, 10, 5) for t in (0, 1, 2)] == [False, False, True]
    assert [bans.record("y", t, 2, 10, 5) for t in (0, 1, 11, 12)] == [False, False, False, False]


async def test_flapping_detect_applies_on_reload(tmp_path, mosquitto):
    from engine.config import load_settings

    async with running_gateway(tmp_path, mosquitto.port, "") as gw:
        assert not gw.ctx.guards.flapping_settings.enable
        path = tmp_path / "gateway.conf"
        path.write_text(path.read_text() + "\nflapping_detect { enable = true, max_count = 1, ban_time = 1m }\n")
        await gw.node.reload(load_settings(path, {}, overlay=False))
        assert gw.ctx.guards.flapping_settings.max_count == 1
        assert (await status_of(gw.url("R")))[0] == 101
        assert (await status_of(gw.url("R")))[0] == 429
