"""A charge point that moves between nodes (engine/ocpp/takeover.py): takeover in the broker's
order of claims, with and without `cluster.enable`, and the commands published while it moves.

Real node processes on a real mosquitto (one can run with its wall clock skewed, or with its
claims held back by the `OCPP_GATEWAY_TEST_CLAIM_DELAY` test hook); charge points are websockets
clients; commands are published by a paho backend.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import orjson
import pytest
import websockets

from engine.ocpp.takeover import TEST_DELAY_ENV
from tests.gateway import GatewayProcess, skew_clock
from tests.ocpp_support import Backend, eventually, recv_json, running_gateway, until
from tests.servers import Mosquitto

pytestmark = pytest.mark.timeout(120)

AUTH = ("admin", "public")
CLAIM_DELAY = 3.0  # seconds node b holds its claims back: the window in which the charge point moves


def node(tmp_path: Path, broker: Mosquitto, name: str, *, cluster: bool, clock_offset: float = 0.0,
         claim_delay: float = 0.0) -> GatewayProcess:
    workdir = tmp_path / name
    workdir.mkdir()
    conf = (f'node {{ name = "{name}", data_dir = "{workdir / "data"}" }}\n'
            'log.level = debug\n'
            f'mqtt {{ server = "mqtt://127.0.0.1:{broker.port}", reconnect.initial_interval = 100ms }}\n'
            'cluster.request_timeout = 10s\n')
    if cluster:
        conf += 'cluster { enable = true, keepalive = 5s }\n'
    gw = GatewayProcess(workdir, conf, env={TEST_DELAY_ENV: str(claim_delay)} if claim_delay else None)
    if clock_offset:
        skew_clock(gw, clock_offset)
    return gw


def admin(gw: GatewayProcess) -> str:
    return "http://" + gw.env["OCPPGW_DASHBOARD__LISTENERS__HTTP__BIND"] + "/api/v5"


async def connect(gw: GatewayProcess, cid: str) -> websockets.ClientConnection:
    return await websockets.connect(f"ws://127.0.0.1:{gw.ocpp_port}/ocpp/{cid}", subprotocols=["ocpp1.6"])


def claim_back(gw: GatewayProcess, cid: str, count: int = 1) -> None:
    """Wait until `gw` has seen `count` of its own claims for `cid` come back (it takes commands)."""
    gw.wait_count(f"charge point {cid}: its takeover claim is back", count)


async def dropped(http: httpx.AsyncClient, gw: GatewayProcess, reason: str) -> float:
    text = (await http.get(admin(gw) + "/prometheus/stats")).text
    line = f'ocppgw_messages_dropped_total{{reason="{reason}"}}'
    return next((float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(line)), 0.0)


class Socket:
    """A charge point's socket and every frame it received, read in the background."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.frames: list[list] = []
        self.got = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                self.frames.append(orjson.loads(text))
                self.got.set()
        except websockets.ConnectionClosed:
            pass

    def count(self, unique_id: str) -> int:
        return sum(1 for f in self.frames if f[0] == 2 and f[1] == unique_id)

    async def receives(self, unique_id: str, timeout: float = 10.0) -> None:
        async def seen() -> None:
            while not self.count(unique_id):
                self.got.clear()
                await self.got.wait()

        await asyncio.wait_for(seen(), timeout)

    async def closed(self, timeout: float = 10.0) -> int | None:
        await asyncio.wait_for(asyncio.shield(self.task), timeout)
        return self.ws.close_code


def command(unique_id: str) -> dict:
    return {"MessageTypeId": 2, "UniqueId": unique_id, "Action": "TriggerMessage",
            "Payload": {"requestedMessage": "Heartbeat"}}


async def test_a_command_published_while_the_charge_point_moves_reaches_one_socket(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    # node b holds its claims back: between the new connection and its claim, both nodes have the
    # charge point's command topic subscribed on the broker, and the broker hands a command to both
    a = node(tmp_path, mosquitto, "a", cluster=True)
    b = node(tmp_path, mosquitto, "b", cluster=True, claim_delay=CLAIM_DELAY)
    backend = None
    try:
        a.start()
        b.start()
        backend = Backend(mosquitto.port, "ocpp/cp/#")
        async with httpx.AsyncClient(auth=AUTH, timeout=15) as http:
            old = Socket(await connect(a, "CP-W"))
            claim_back(a, "CP-W")
            backend.publish("ocpp/cs/CP-W", command("before"))  # a takes commands: the old socket has it
            await old.receives("before")
            await old.ws.send('[3,"before",{"status":"Accepted"}]')

            new = Socket(await connect(b, "CP-W"))
            # the charge point boots at once on the new node: its CALL goes up and the answer comes
            # back while the claim is still out (only commands wait for the claim, not replies)
            await new.ws.send('[2,"boot","BootNotification",{"chargePointVendor":"v","chargePointModel":"m"}]')
            topic, call = await backend.next(10)
            while call.get("UniqueId") != "boot":  # the old socket's answer to "before" came first
                topic, call = await backend.next(10)
            backend.publish("ocpp/cs/CP-W", {"MessageTypeId": 3, "UniqueId": "boot",
                                             "Payload": {"status": "Accepted", "currentTime": "2026-01-01T00:00:00Z",
                                                         "interval": 300}})
            await new.got.wait()
            assert new.frames[0][:2] == [3, "boot"]
            # inside the window: the command goes to both nodes; one socket gets it, the other node
            # reports it dropped
            backend.publish("ocpp/cs/CP-W", command("moving"))
            await old.receives("moving")
            async def counted() -> bool:
                return await dropped(http, b, "takeover_pending") == 1

            await until(counted)
            # the claim goes out: a closes the old socket and reports the unanswered command dropped
            assert await old.closed(CLAIM_DELAY + 10) == 1000
            claim_back(b, "CP-W")
            assert await dropped(http, a, "takenover") == 1
            backend.publish("ocpp/cs/CP-W", command("after"))
            await new.receives("after")
            await new.ws.send('[3,"after",{"status":"Accepted"}]')
            backend.publish("ocpp/cs/CP-W", command("last"))  # nothing left over anywhere: the next goes too
            await new.receives("last")
            assert (old.count("before"), old.count("moving"), old.count("after"), old.count("last")) == (1, 1, 0, 0)
            assert (new.count("before"), new.count("moving"), new.count("after"), new.count("last")) == (0, 0, 1, 1)
            assert new.ws.close_code is None
            await new.ws.close()
    finally:
        if backend is not None:
            backend.close()
        a.stop()
        b.stop()
    assert "Traceback" not in a.log + b.log


async def test_a_stalled_old_node_reads_the_claim_before_the_command(tmp_path: Path, mosquitto: Mosquitto) -> None:
    # node a (the old one) is stopped while the charge point moves to b and a command is published:
    # when a runs again, the claim and the command both wait for it; it reads them in the broker's
    # order (both come by its bridge), so it closes the old socket before the command could go out
    import signal

    a = node(tmp_path, mosquitto, "a", cluster=True)
    b = node(tmp_path, mosquitto, "b", cluster=True)
    backend = None
    try:
        a.start()
        b.start()
        backend = Backend(mosquitto.port, "ocpp/cp/#")
        old = Socket(await connect(a, "CP-S"))
        claim_back(a, "CP-S")
        assert a.proc is not None
        a.proc.send_signal(signal.SIGSTOP)
        try:
            new = Socket(await connect(b, "CP-S"))
            claim_back(b, "CP-S")
            backend.publish("ocpp/cs/CP-S", command("stalled"))
            await new.receives("stalled")
        finally:
            a.proc.send_signal(signal.SIGCONT)
        assert await old.closed() == 1000
        assert (old.count("stalled"), new.count("stalled")) == (0, 1)
        await new.ws.close()
    finally:
        if backend is not None:
            backend.close()
        a.stop()
        b.stop()



async def test_takeover_topic_follows_broker_order_not_clocks(tmp_path: Path, mosquitto: Mosquitto) -> None:
    # without cluster.enable: node b's wall clock is an hour behind, so by connected_at its (newer)
    # connection would look older; the claims on gateway.ocpp.takeover_topic decide instead
    a = node(tmp_path, mosquitto, "a", cluster=False)
    b = node(tmp_path, mosquitto, "b", cluster=False, clock_offset=-3600)
    try:
        a.start()
        b.start()
        first = Socket(await connect(a, "CP-T"))
        claim_back(a, "CP-T")
        second = Socket(await connect(b, "CP-T"))
        assert await first.closed() == 1000
        claim_back(b, "CP-T")
        # and back to a (its clock an hour ahead of b's): b's session is closed, a's stays
        third = Socket(await connect(a, "CP-T"))
        assert await second.closed() == 1000
        claim_back(a, "CP-T", 2)
        async with httpx.AsyncClient(auth=AUTH, timeout=15) as http:
            for gw, expected in ((a, 1), (b, 0)):
                clients = (await http.get(admin(gw) + "/gateways/ocpp/clients")).json()["data"]
                assert [c["clientid"] for c in clients] == ["CP-T"] * expected
                text = (await http.get(admin(gw) + "/prometheus/stats")).text
                assert "ocppgw_takeovers_total 1.0" in text.splitlines()  # each node closed one
        assert third.ws.close_code is None  # the newest socket is the one left open
        await third.ws.close()
    finally:
        a.stop()
        b.stop()
    assert "closed it here" in a.log and "closed it here" in b.log


async def test_a_claim_that_never_comes_back_does_not_keep_a_lone_node_deaf(tmp_path: Path) -> None:
    # the broker refuses the claims (ACL): after cluster.request_timeout the session takes commands
    broker = Mosquitto(acl="topic readwrite #\ntopic read $ocppgw/takeover/#\n")
    broker.start()
    backend = None
    try:
        async with running_gateway(tmp_path, broker.port, "cluster.request_timeout = 3s\n") as gw:
            backend = Backend(broker.port, "ocpp/cp/#")
            claims = gw.node.claims
            assert claims is not None
            await eventually(lambda: gw.node.takeover is not None and gw.node.takeover._connected.is_set())
            async with websockets.connect(gw.url("LONE"), subprotocols=["ocpp1.6"]) as ws:
                await eventually(lambda: "ocpp/cs/LONE" in gw.node.bridge._on_broker)
                backend.publish("ocpp/cs/LONE", command("early"))  # the claim is not back: not taken
                event = await gw.events.wait("message_dropped", lambda e: e["clientid"] == "LONE")
                assert event["reason"] == "takeover_pending"
                await eventually(lambda: claims.unconfirmed == 1)
                backend.publish("ocpp/cs/LONE", command("late"))
                frame = await recv_json(ws, 10)
                assert frame[:3] == [2, "late", "TriggerMessage"]
            # the link is down: no claim can go, and the session takes commands as soon as its
            # subscription is on the broker (when its claim would have gone), not after the timeout
            gw.node.takeover._connected.clear()
            async with websockets.connect(gw.url("DOWN"), subprotocols=["ocpp1.6"]):
                await eventually(lambda: "ocpp/cs/DOWN" in gw.node.bridge._on_broker, 2.0)
                await eventually(lambda: gw.ctx.sessions["DOWN"].held is False and claims.unconfirmed == 2, 2.0)
            async with httpx.AsyncClient(auth=AUTH, timeout=15) as http:
                text = (await http.get(gw.admin_url + "/prometheus/stats")).text
            assert "ocppgw_takeover_claims_unconfirmed_total 2.0" in text.splitlines()
    finally:
        if backend is not None:
            backend.close()
        broker.stop()


async def test_a_reconnect_to_the_same_node_takes_commands_at_once(tmp_path: Path, mosquitto: Mosquitto) -> None:
    # a local takeover: the node already holds the charge point, so the new session does not wait
    # for its claim; the old one reports its unanswered command dropped as `takenover`
    from tests.ocpp_support import closed_with, subscribed

    async with running_gateway(tmp_path, mosquitto.port) as gw:
        backend = Backend(mosquitto.port, "ocpp/cp/#")
        try:
            old = await websockets.connect(gw.url("SAME"), subprotocols=["ocpp1.6"])
            await subscribed(gw, "SAME")
            backend.publish("ocpp/cs/SAME", command("unanswered"))
            assert (await recv_json(old))[1] == "unanswered"
            claims = gw.node.claims
            assert claims is not None
            claims._delay = 30.0  # claims held back from now on: were it a new holder, it would wait
            async with websockets.connect(gw.url("SAME"), subprotocols=["ocpp1.6"]) as new:
                await closed_with(old, 1000)
                await eventually(lambda: "SAME" in gw.ctx.sessions and not gw.ctx.sessions["SAME"].closed)
                assert gw.ctx.sessions["SAME"].held is False
                event = await gw.events.wait("message_dropped", lambda e: e["clientid"] == "SAME")
                assert event["reason"] == "takenover"
                backend.publish("ocpp/cs/SAME", command("next"))
                assert (await recv_json(new))[1] == "next"
        finally:
            backend.close()


async def test_a_claim_goes_out_only_once_the_new_sessions_subscription_is_on_the_broker(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    # were the claim on the broker first, a command published between the two would go to the old
    # node alone, after the claim that closes the old socket there: neither delivered nor reported
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        bridge = gw.node.bridge
        assert bridge is not None and bridge._client is not None
        client, gate = bridge._client, asyncio.Event()
        subscribe = client.subscribe

        async def held_back(*args, **kwargs):
            await gate.wait()
            return await subscribe(*args, **kwargs)

        client.subscribe = held_back  # the broker has not got the subscription yet
        claims = Backend(mosquitto.port, "$ocppgw/takeover/+")
        try:
            async with websockets.connect(gw.url("FIRST"), subprotocols=["ocpp1.6"]):
                await eventually(lambda: "FIRST" in gw.ctx.sessions)
                assert gw.ctx.sessions["FIRST"].held
                await claims.nothing(1.0)  # no claim while the subscription waits
                gate.set()
                topic, claim = await claims.next()
                assert topic == "$ocppgw/takeover/FIRST" and claim["clientid"] == "FIRST", claim
                assert "ocpp/cs/FIRST" in bridge._on_broker  # acknowledged before the claim went out
                await eventually(lambda: not gw.ctx.sessions["FIRST"].held)
        finally:
            claims.close()


async def test_a_claim_late_for_its_subscription_and_then_unsendable_is_counted_once(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    from engine.ocpp.takeover import ClaimOrder

    class FakeSession:
        cid, connected_at, closed, held = "LATE", 1, False, True

        def release(self) -> None:
            self.held = False

    async with running_gateway(tmp_path, mosquitto.port) as gw:
        subscribed = asyncio.get_running_loop().create_future()
        claims = ClaimOrder(gw.ctx, lambda cid, payload: False, 0.2, "test/claims/+", lambda: subscribed)
        try:
            session = FakeSession()
            assert claims.hold(session) is True  # waits for the subscription
            await eventually(lambda: not session.held)  # not there within `wait`: it takes commands anyway
            assert claims.unconfirmed == 1
            subscribed.set_result(None)  # then it is, and the claim cannot go (the link is down)
            await asyncio.sleep(0.3)
            assert claims.unconfirmed == 1  # the same connection, counted once
        finally:
            claims.close()
