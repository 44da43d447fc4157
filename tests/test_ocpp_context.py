"""What travels with each upstream message, per-listener checking, and takeover across nodes."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import websockets

from engine.bus import Message
from tests.ocpp_support import eventually, running_gateway
from tests.servers import free_port

pytestmark = pytest.mark.timeout(60)


async def test_upstream_messages_carry_the_context_rules_need(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        seen: list[Message] = []
        gw.node.bus.subscribe("ocpp/cp/#", seen.append)
        async with websockets.connect(gw.url("CTX"), subprotocols=["ocpp2.0.1"]) as ws:
            await ws.send('[2,"c1","Heartbeat",{}]')
            await eventually(lambda: len(seen) == 1)
        message = seen[0]
        assert message.origin == "ocpp" and message.topic == "ocpp/cp/CTX"
        assert message.headers["clientid"] == "CTX" and message.headers["username"] is None
        assert message.headers["peerhost"] == "127.0.0.1" and message.headers["proto_ver"] == "ocpp2.0.1"
        assert message.headers["node"] == "gw-test" and message.timestamp > 0
        assert message.json() == orjson.loads(message.payload)


async def test_per_listener_checking_overrides_the_gateway(tmp_path, mosquitto):
    strict, loose = free_port(), free_port()
    conf = f"""
    gateway.ocpp.listeners.ws {{
      strict {{ bind = "127.0.0.1:{strict}", message_format_checking = all }}
      loose {{ bind = "127.0.0.1:{loose}" }}
    }}
    """
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        assert gw.ctx.registry is not None  # built because one listener checks
        bad = '[2,"x","Heartbeat",{"extra":1}]'
        async with websockets.connect(f"ws://127.0.0.1:{strict}/ocpp/S", subprotocols=["ocpp1.6"]) as ws:
            await ws.send(bad)
            assert orjson.loads(await ws.recv())[2] == "FormationViolation"
        async with websockets.connect(f"ws://127.0.0.1:{loose}/ocpp/L", subprotocols=["ocpp1.6"]) as ws:
            await ws.send(bad)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.3)  # forwarded, not refused


async def test_takeover_across_nodes_sharing_a_broker(tmp_path, mosquitto):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with running_gateway(tmp_path / "a", mosquitto.port, 'node.name = "node-a"\n') as a, \
            running_gateway(tmp_path / "b", mosquitto.port, 'node.name = "node-b"\n') as b:
        await eventually(lambda: a.node.takeover._connected.is_set() and b.node.takeover._connected.is_set())
        old = await websockets.connect(a.url("ROAM"), subprotocols=["ocpp1.6"])
        await eventually(lambda: "ROAM" in a.ctx.sessions)
        await asyncio.sleep(0.05)  # the new connection is strictly later
        async with websockets.connect(b.url("ROAM"), subprotocols=["ocpp1.6"]) as new:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(old.recv(), 5)
            assert old.close_code == 1000
            event = await a.events.wait("client_disconnected", lambda e: e["clientid"] == "ROAM")
            assert event["reason"] == "takenover"
            assert "ROAM" not in a.ctx.sessions and "ROAM" in b.ctx.sessions
            assert a.node.claims.taken_over == 1 and b.node.claims.taken_over == 0
            await new.send('[2,"1","Heartbeat",{}]')
            await eventually(lambda: b.ctx.sessions["ROAM"].recv_cnt == 1)
            await asyncio.sleep(0.3)
            assert "ROAM" in b.ctx.sessions  # node A's own old announcement did not bounce it


async def test_malformed_takeover_notices_are_ignored(tmp_path, mosquitto):
    from tests.ocpp_support import Backend

    async with running_gateway(tmp_path, mosquitto.port) as gw:
        await eventually(lambda: gw.node.takeover._connected.is_set())
        async with websockets.connect(gw.url("T1"), subprotocols=["ocpp1.6"]):
            backend = Backend(mosquitto.port)
            for body in (b"garbage", b"[]", b'{"node": "x"}', b'{"node": "x", "clientid": "T1", "connected_at": "soon"}',
                         b'{"node": 5, "clientid": "T1", "connected_at": 1}', b'{"clientid": "T1", "claim": 7}'):
                backend.publish("$ocppgw/takeover/T1", body)
            await asyncio.sleep(0.5)
            assert "T1" in gw.ctx.sessions
            assert gw.node.claims.malformed == 6
            backend.close()


async def test_a_notice_from_a_node_of_an_earlier_version_takes_over_in_broker_order(tmp_path, mosquitto):
    # nodes before claims sent {node, clientid, connected_at} only; during a rolling upgrade such a
    # notice arriving after this session's own claim means the charge point connected there later,
    # whatever its connected_at says
    from tests.ocpp_support import Backend, closed_with

    async with running_gateway(tmp_path, mosquitto.port) as gw:
        await eventually(lambda: gw.node.takeover._connected.is_set())
        ws = await websockets.connect(gw.url("OLDNODE"), subprotocols=["ocpp1.6"])
        await eventually(lambda: "OLDNODE" in gw.ctx.sessions and not gw.ctx.sessions["OLDNODE"].held)
        backend = Backend(mosquitto.port)
        try:
            backend.publish("$ocppgw/takeover/OLDNODE", {"node": "old-version", "clientid": "OLDNODE", "connected_at": 1})
            await closed_with(ws, 1000)
            event = await gw.events.wait("client_disconnected", lambda e: e["clientid"] == "OLDNODE")
            assert event["reason"] == "takenover" and gw.node.claims.malformed == 0
        finally:
            backend.close()
