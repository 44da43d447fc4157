"""Liveness: idle and keepalive timeouts, takeover of a duplicate charge point id, shutdown."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import websockets

from tests.ocpp_support import (
    Backend,
    closed_with,
    eventually,
    running_gateway,
    subscribed,
)

pytestmark = pytest.mark.timeout(60)




async def test_idle_timeout_closes_a_silent_new_connection(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, "gateway.ocpp.idle_timeout = 300ms\n") as gw:
        async with websockets.connect(gw.url("IDLE"), subprotocols=["ocpp1.6"]) as ws:
            await closed_with(ws, 1000)
        event = await gw.events.wait("client_disconnected", lambda e: e["clientid"] == "IDLE")
        assert event["reason"] == "idle_timeout" and event["proto_ver"] == "ocpp1.6"
        assert "IDLE" not in gw.ctx.sessions
        # a charge point that sends its first frame in time is not touched by idle_timeout
        async with websockets.connect(gw.url("BUSY"), subprotocols=["ocpp1.6"]) as ws:
            await ws.send('[2,"1","Heartbeat",{}]')
            await asyncio.sleep(0.6)
            assert "BUSY" in gw.ctx.sessions


async def test_keepalive_timeout_closes_a_charge_point_gone_silent(tmp_path, mosquitto):
    conf = "gateway.ocpp { default_heartbeat_interval = 300ms, heartbeat_checking_times_backoff = 2 }\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        async with websockets.connect(gw.url("KA"), subprotocols=["ocpp1.6"]) as ws:
            # frames keep it alive
            for i in range(6):
                await ws.send(f'[2,"hb{i}","Heartbeat",{{}}]')
                await asyncio.sleep(0.15)
            assert "KA" in gw.ctx.sessions
            await closed_with(ws, 1000)  # silence: two missed checks
        event = await gw.events.wait("client_disconnected", lambda e: e["clientid"] == "KA")
        assert event["reason"] == "keepalive_timeout"


async def test_boot_answer_sets_the_keepalive_interval(tmp_path, mosquitto):
    conf = "gateway.ocpp.default_heartbeat_interval = 200ms\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("KB"), subprotocols=["ocpp1.6"]) as ws:
            await subscribed(gw, "KB")
            await ws.send('[2,"b1","BootNotification",{"chargePointVendor":"v","chargePointModel":"m"}]')
            await backend.next()
            backend.publish("ocpp/cs/KB", {"MessageTypeId": 3, "UniqueId": "b1",
                                           "Payload": {"status": "Accepted", "interval": 2, "currentTime": "2026-01-01T00:00:00Z"}})
            await ws.recv()
            assert gw.ctx.sessions["KB"].keepalive == 2
            await asyncio.sleep(0.8)  # several times the old interval: still connected
            assert "KB" in gw.ctx.sessions
            # a Pending or interval-less answer does not change it
            await ws.send('[2,"b2","BootNotification",{"chargePointVendor":"v","chargePointModel":"m"}]')
            await backend.next()
            backend.publish("ocpp/cs/KB", {"MessageTypeId": 3, "UniqueId": "b2",
                                           "Payload": {"status": "Pending", "interval": 50, "currentTime": "2026-01-01T00:00:00Z"}})
            await ws.recv()
            assert gw.ctx.sessions["KB"].keepalive == 2
        backend.close()


async def test_takeover_closes_the_old_socket_and_the_new_one_works(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        backend = Backend(mosquitto.port)
        old = await websockets.connect(gw.url("DUP"), subprotocols=["ocpp1.6"])
        await subscribed(gw, "DUP")
        first = gw.ctx.sessions["DUP"]
        async with websockets.connect(gw.url("DUP"), subprotocols=["ocpp2.0.1"]) as new:
            await closed_with(old, 1000)
            event = await gw.events.wait("client_disconnected", lambda e: e["clientid"] == "DUP")
            assert event["reason"] == "takenover" and event["proto_ver"] == "ocpp1.6"
            assert gw.ctx.sessions["DUP"] is not first and gw.ctx.sessions["DUP"].proto_ver == "ocpp2.0.1"
            await subscribed(gw, "DUP")
            backend.publish("ocpp/cs/DUP", {"MessageTypeId": 2, "UniqueId": "t1", "Action": "Reset", "Payload": {"type": "Soft"}})
            assert orjson.loads(await asyncio.wait_for(new.recv(), 5)) == [2, "t1", "Reset", {"type": "Soft"}]
            await new.send('[2,"n1","Heartbeat",{}]')
            assert (await backend.next())[1]["UniqueId"] == "n1"
            connected = [e for e in gw.events.named("client_connected") if e["clientid"] == "DUP"]
            assert [e["proto_ver"] for e in connected] == ["ocpp1.6", "ocpp2.0.1"]
        backend.close()


async def test_client_close_and_events_fields(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        async with websockets.connect(gw.url("EV1"), subprotocols=["ocpp1.6"]) as ws:
            await ws.send('[2,"1","Heartbeat",{}]')
            await eventually(lambda: gw.ctx.sessions["EV1"].recv_cnt == 1)
        disconnected = await gw.events.wait("client_disconnected", lambda e: e["clientid"] == "EV1")
        assert disconnected["reason"] == "normal"
        connected = gw.events.named("client_connected")[0]
        for key in ("clientid", "username", "peername", "sockname", "proto_name", "proto_ver", "keepalive",
                    "connected_at", "timestamp", "node", "event"):
            assert key in connected, key
        assert connected["event"] == "client.connected" and connected["node"] == "gw-test"
        assert connected["proto_name"] == "OCPP" and connected["keepalive"] == 60
        assert disconnected["event"] == "client.disconnected" and disconnected["disconnected_at"] >= connected["connected_at"]
        connack = gw.events.named("client_connack")[0]
        assert connack["reason_code"] == "success" and connack["clientid"] == "EV1"
        assert gw.ctx.metrics.connections == 0 and gw.ctx.metrics.connections_total == 1


async def test_shutdown_closes_charge_points_with_going_away(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        ws = await websockets.connect(gw.url("SD"), subprotocols=["ocpp1.6"])
        await gw.node.stop()
        await closed_with(ws, 1001)
        event = await gw.events.wait("client_disconnected", lambda e: e["clientid"] == "SD")
        assert event["reason"] == "shutdown"
        with pytest.raises(OSError):
            await websockets.connect(gw.url("LATE"), subprotocols=["ocpp1.6"], open_timeout=2)


async def test_server_pings_detect_a_charge_point_that_stopped_answering(tmp_path, mosquitto):
    conf = "gateway.ocpp.listeners.ws.default.websocket.ping_interval = 300ms\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        async with websockets.connect(gw.url("PING"), subprotocols=["ocpp1.6"], ping_interval=None) as ws:
            await ws.send('[2,"1","Heartbeat",{}]')
            await asyncio.sleep(1.0)  # pings answered (by the client library): still connected
            assert "PING" in gw.ctx.sessions
            ws.transport.pause_reading()  # a half-open connection: no more pongs
            event = await gw.events.wait("client_disconnected", lambda e: e["clientid"] == "PING")
            assert event["reason"] == "keepalive_timeout"


async def test_dropped_tcp_connection_is_sock_closed(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        ws = await websockets.connect(gw.url("DROP"), subprotocols=["ocpp1.6"])
        await ws.send('[2,"1","Heartbeat",{}]')
        await eventually(lambda: "DROP" in gw.ctx.sessions)
        ws.transport.abort()  # no close frame, just gone
        event = await gw.events.wait("client_disconnected", lambda e: e["clientid"] == "DROP")
        assert event["reason"] == "sock_closed"


async def test_oversized_frame_closes_only_that_connection(tmp_path, mosquitto):
    conf = 'gateway.ocpp.listeners.ws.default.websocket.max_frame_size = "4KB"\n'
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("OTHER"), subprotocols=["ocpp1.6"]) as other:
            await subscribed(gw, "OTHER")
            async with websockets.connect(gw.url("BIG"), subprotocols=["ocpp1.6"]) as big:
                await big.send('[2,"1","DataTransfer",{"vendorId":"v","data":"' + "x" * 8000 + '"}]')
                await closed_with(big, 1009)
            event = await gw.events.wait("client_disconnected", lambda e: e["clientid"] == "BIG")
            assert event["reason"] == "protocol_error"
            await other.send('[2,"o1","Heartbeat",{}]')
            assert (await backend.next())[1]["UniqueId"] == "o1"
        backend.close()


async def test_invalid_utf8_text_frame_closes_with_1007(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        async with websockets.connect(gw.url("UTF"), subprotocols=["ocpp1.6"]) as ws:
            await ws.send('[2,"1","Heartbeat",{}]')
            await eventually(lambda: "UTF" in gw.ctx.sessions and gw.ctx.sessions["UTF"].recv_cnt == 1)
            await ws.send(b'[2,"2","Heartbeat",{"x":"\xff\xfe"}]', text=True)  # not UTF-8, sent as text
            await closed_with(ws, 1007)
        event = await gw.events.wait("client_disconnected", lambda e: e["clientid"] == "UTF")
        assert event["reason"] == "protocol_error"
