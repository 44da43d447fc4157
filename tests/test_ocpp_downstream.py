"""Downstream edge cases: timeouts, a full queue, malformed and unanswerable messages."""

from __future__ import annotations

import orjson
import pytest
import websockets

from tests.ocpp_support import (
    Backend,
    eventually,
    nothing_sent,
    recv_json,
    running_gateway,
    subscribed,
)

pytestmark = pytest.mark.timeout(60)






def call(uid: str, action: str = "Reset", payload=None) -> dict:
    return {"MessageTypeId": 2, "UniqueId": uid, "Action": action, "Payload": payload if payload is not None else {"type": "Soft"}}


async def test_timeout_drops_the_call_and_sends_the_next(tmp_path, mosquitto):
    conf = "gateway.ocpp.dnstream.awaiting_timeout = 500ms\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("CPT"), subprotocols=["ocpp1.6"]) as ws:
            await subscribed(gw, "CPT")
            backend.publish("ocpp/cs/CPT", call("a1"))
            backend.publish("ocpp/cs/CPT", call("a2", "RemoteStartTransaction", {"idTag": "X"}))
            assert await recv_json(ws) == [2, "a1", "Reset", {"type": "Soft"}]
            await nothing_sent(ws, 0.2)  # a2 waits for a1
            dropped = await gw.events.wait("message_dropped", lambda e: e["reason"] == "timeout")
            assert dropped["clientid"] == "CPT" and orjson.loads(dropped["payload"])["UniqueId"] == "a1"
            assert await recv_json(ws) == [2, "a2", "RemoteStartTransaction", {"idTag": "X"}]
            # the late answer to a1 is still published, without an Action (a1 is no longer waiting)
            await ws.send(orjson.dumps([3, "a1", {"status": "Accepted"}]).decode())
            topic, reply = await backend.next()
            assert topic == "ocpp/cp/CPT/Reply" and reply == {"MessageTypeId": 3, "UniqueId": "a1", "Payload": {"status": "Accepted"}}
            await ws.send(orjson.dumps([3, "a2", {"status": "Accepted"}]).decode())
            topic, reply = await backend.next()
            assert reply["Action"] == "RemoteStartTransaction"
        backend.close()


async def test_queue_full_drops_and_counts(tmp_path, mosquitto):
    conf = "gateway.ocpp.dnstream.max_mqueue_len = 2\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("CPF"), subprotocols=["ocpp1.6"]) as ws:
            await subscribed(gw, "CPF")
            for i in range(5):
                backend.publish("ocpp/cs/CPF", call(f"q{i}"))
            assert (await recv_json(ws))[1] == "q0"
            await eventually(lambda: len(gw.events.named("message_dropped")) == 2)
            drops = gw.events.named("message_dropped")
            assert [(e["reason"], orjson.loads(e["payload"])["UniqueId"]) for e in drops] == [
                ("queue_full", "q3"), ("queue_full", "q4")]
            assert gw.ctx.metrics.drops["queue_full"] == 2
            # answer q0, then q1 and q2 come in turn
            for uid, nxt in (("q0", "q1"), ("q1", "q2")):
                await ws.send(orjson.dumps([3, uid, {"status": "Accepted"}]).decode())
                assert (await recv_json(ws))[1] == nxt
            await ws.send(orjson.dumps([3, "q2", {"status": "Accepted"}]).decode())
            await nothing_sent(ws)
        backend.close()


async def test_malformed_and_unanswerable_downstream_never_reach_the_charge_point(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("CPM"), subprotocols=["ocpp1.6"]) as ws:
            await subscribed(gw, "CPM")
            bad = [
                (b"not json", "invalid_payload"),
                (b"[2, \"x\", \"Reset\", {}]", "invalid_payload"),  # the OCPP array form is not the MQTT shape
                ({"MessageTypeId": 7, "UniqueId": "u"}, "invalid_payload"),
                ({"MessageTypeId": 2, "UniqueId": "u"}, "invalid_payload"),  # no Action
                ({"MessageTypeId": 2, "UniqueId": "x" * 37, "Action": "Reset", "Payload": {}}, "invalid_payload"),
                ({"MessageTypeId": 2, "Action": "Reset", "Payload": [1]}, "invalid_payload"),
                ({"MessageTypeId": 3, "Payload": {}}, "invalid_payload"),  # a reply without UniqueId
                ({"MessageTypeId": 4, "UniqueId": "u", "ErrorDescription": "x"}, "invalid_payload"),
                ({"MessageTypeId": 3, "UniqueId": "nobody-asked", "Payload": {}}, "unknown_unique_id"),
                ({"MessageTypeId": 4, "UniqueId": "nobody-asked", "ErrorCode": "GenericError", "ErrorDescription": ""},
                 "unknown_unique_id"),
            ]
            for body, _ in bad:
                backend.publish("ocpp/cs/CPM", body)
            await eventually(lambda: len(gw.events.named("message_dropped")) == len(bad))
            assert [e["reason"] for e in gw.events.named("message_dropped")] == [reason for _, reason in bad]
            await nothing_sent(ws)
            # and the charge point still works both ways
            backend.publish("ocpp/cs/CPM", {"MessageTypeId": 2, "Action": "Reset", "Payload": {"type": "Hard"}})
            sent = await recv_json(ws)
            assert sent[0] == 2 and sent[2:] == ["Reset", {"type": "Hard"}] and 0 < len(sent[1]) <= 36
        backend.close()


async def test_reply_to_a_charge_point_call_goes_out_once(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("CPR"), subprotocols=["ocpp1.6"]) as ws:
            await subscribed(gw, "CPR")
            await ws.send('[2,"hb-1","Heartbeat",{}]')
            topic, body = await backend.next()
            assert topic == "ocpp/cp/CPR" and body["UniqueId"] == "hb-1"
            answer = {"MessageTypeId": 3, "UniqueId": "hb-1", "Payload": {"currentTime": "2026-01-01T00:00:00Z"}}
            backend.publish("ocpp/cs/CPR", answer)
            assert await recv_json(ws) == [3, "hb-1", {"currentTime": "2026-01-01T00:00:00Z"}]
            backend.publish("ocpp/cs/CPR", answer)  # a second answer to the same CALL
            await gw.events.wait("message_dropped", lambda e: e["reason"] == "unknown_unique_id")
            await nothing_sent(ws)
            # a CALLERROR answer
            await ws.send('[2,"a-2","Authorize",{"idTag":"T"}]')
            await backend.next()
            backend.publish("ocpp/cs/CPR", {"MessageTypeId": 4, "UniqueId": "a-2", "ErrorCode": "InternalError",
                                            "ErrorDescription": "backend down"})
            assert await recv_json(ws) == [4, "a-2", "InternalError", "backend down", {}]
        backend.close()


async def test_charge_point_callerror_reaches_the_error_topic_with_its_action(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("CPE"), subprotocols=["ocpp2.0.1"]) as ws:
            await subscribed(gw, "CPE")
            backend.publish("ocpp/cs/CPE", {"MessageTypeId": 2, "UniqueId": "g1", "Action": "GetVariables",
                                            "Payload": {"getVariableData": []}})
            assert (await recv_json(ws))[1] == "g1"
            await ws.send('[4,"g1","NotSupported","no such thing",{"k":1}]')
            topic, body = await backend.next()
            assert topic == "ocpp/cp/CPE/Reply"
            assert body == {"MessageTypeId": 4, "UniqueId": "g1", "Action": "GetVariables", "ErrorCode": "NotSupported",
                            "ErrorDescription": "no such thing", "ErrorDetails": {"k": 1}}
        backend.close()


async def test_topic_templates_and_override_mapping(tmp_path, mosquitto):
    conf = """
    gateway.ocpp {
      mountpoint = "ev/"
      upstream { topic = "in/${cid}/${action}", reply_topic = "in/${cid}/reply/${id}", error_topic = "in/${cid}/err",
                 topic_override_mapping { BootNotification = "boot/${proto_ver}/${cid}" } }
      dnstream.topic = "out/${clientid}"
    }
    """
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        backend = Backend(mosquitto.port, "ev/boot/#", "ev/in/#")
        async with websockets.connect(gw.url("CPX"), subprotocols=["ocpp1.6"]) as ws:
            await eventually(lambda: "ev/out/CPX" in gw.node.bridge._on_broker)
            await ws.send('[2,"1","BootNotification",{"chargePointModel":"m","chargePointVendor":"v"}]')
            assert (await backend.next())[0] == "ev/boot/ocpp1.6/CPX"
            await ws.send('[2,"2","Heartbeat",{}]')
            assert (await backend.next())[0] == "ev/in/CPX/Heartbeat"
            backend.publish("ev/out/CPX", {"MessageTypeId": 2, "UniqueId": "d1", "Action": "Reset", "Payload": {"type": "Soft"}})
            assert (await recv_json(ws))[1] == "d1"
            await ws.send('[3,"d1",{"status":"Accepted"}]')
            topic, body = await backend.next()
            assert topic == "ev/in/CPX/reply/d1" and body["Action"] == "Reset"
        backend.close()
