"""Frames that are valid OCPP-J but cannot travel: too deep for the JSON codec, an integer it
cannot carry exactly, a topic MQTT refuses, over the frame size. Each is refused with a reason,
counted, and the charge point goes on being served on the same socket."""

from __future__ import annotations

import logging

import orjson
import pytest
import websockets

from engine.ocpp.session import InvalidCommand
from tests.ocpp_support import Backend, nothing_sent, recv_json, running_gateway, subscribed

pytestmark = pytest.mark.timeout(90)


def nested(depth: int) -> dict:
    """A payload object `depth` levels deep."""
    value: dict = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def nested_text(depth: int) -> str:
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


async def heartbeat_round_trip(ws, backend: Backend, cid: str, uid: str) -> None:
    """The charge point's Heartbeat goes up, the backend's answer comes back: the session serves."""
    await ws.send(orjson.dumps([2, uid, "Heartbeat", {}]).decode())
    while True:
        topic, body = await backend.next()
        if body.get("UniqueId") == uid:
            break
    backend.publish(f"ocpp/cs/{cid}", {"MessageTypeId": 3, "UniqueId": uid, "Payload": {"currentTime": "now"}})
    assert await recv_json(ws) == [3, uid, {"currentTime": "now"}]


# --- item 10: a downstream CALL that cannot be encoded does not block the next ---------------------

async def test_a_call_too_deep_to_encode_is_dropped_and_the_next_goes_out(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("DEEP"), subprotocols=["ocpp1.6"]) as ws:
            await subscribed(gw, "DEEP")
            deep = '{"MessageTypeId":2,"UniqueId":"d1","Action":"DataTransfer","Payload":' + nested_text(300) + "}"
            backend.publish("ocpp/cs/DEEP", deep.encode())
            dropped = await gw.events.wait("message_dropped", lambda e: e["reason"] == "invalid_payload")
            assert "nested deeper than 254 levels" in dropped["description"], dropped
            assert dropped["clientid"] == "DEEP" and dropped["payload"] == deep
            assert gw.ctx.metrics.drops["invalid_payload"] == 1
            session = gw.ctx.sessions["DEEP"]
            assert session.info()["inflight_cnt"] == 0  # the slot was never taken
            backend.publish("ocpp/cs/DEEP", {"MessageTypeId": 2, "UniqueId": "d2", "Action": "Reset", "Payload": {"type": "Soft"}})
            assert await recv_json(ws) == [2, "d2", "Reset", {"type": "Soft"}]
            await ws.send('[3,"d2",{"status":"Accepted"}]')
            topic, reply = await backend.next()
            assert topic == "ocpp/cp/DEEP/Reply" and reply["UniqueId"] == "d2" and reply["Action"] == "Reset"
        backend.close()


async def test_an_unencodable_call_in_the_queue_is_skipped(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("DEEPQ"), subprotocols=["ocpp1.6"]) as ws:
            await subscribed(gw, "DEEPQ")
            backend.publish("ocpp/cs/DEEPQ", {"MessageTypeId": 2, "UniqueId": "q1", "Action": "Reset", "Payload": {"type": "Soft"}})
            assert (await recv_json(ws))[1] == "q1"
            backend.publish("ocpp/cs/DEEPQ", ('{"MessageTypeId":2,"UniqueId":"q2","Action":"DataTransfer","Payload":'
                                              + nested_text(400) + "}").encode())
            backend.publish("ocpp/cs/DEEPQ", {"MessageTypeId": 2, "UniqueId": "q3", "Action": "Reset", "Payload": {"type": "Hard"}})
            await nothing_sent(ws, 0.3)  # both wait for q1's answer
            await ws.send('[3,"q1",{"status":"Accepted"}]')
            assert await recv_json(ws) == [2, "q3", "Reset", {"type": "Hard"}]  # q2 skipped, not sent
            assert [e["reason"] for e in gw.events.named("message_dropped")] == ["invalid_payload"]
        backend.close()


async def test_an_api_call_that_cannot_be_encoded_is_refused_at_once(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        async with websockets.connect(gw.url("APIDEEP"), subprotocols=["ocpp1.6"]) as ws:
            await subscribed(gw, "APIDEEP")
            session = gw.ctx.sessions["APIDEEP"]
            with pytest.raises(InvalidCommand, match="nested deeper"):
                session.call("DataTransfer", nested(300))
            assert session.info()["inflight_cnt"] == 0 and gw.ctx.metrics.drops["invalid_payload"] == 1
            future = session.call("Reset", {"type": "Soft"})
            uid = (await recv_json(ws))[1]
            await ws.send(orjson.dumps([3, uid, {"status": "Accepted"}]).decode())
            assert (await future)["Payload"] == {"status": "Accepted"}


# --- item 15: downstream MessageTypeId must be an integer; wide integers; the frame size ------------

async def test_downstream_integers_exact_or_refused_and_the_frame_size(tmp_path, mosquitto):
    conf = "gateway.ocpp.listeners.ws.default.websocket.max_frame_size = 4KB\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("INTS"), subprotocols=["ocpp1.6"]) as ws:
            await subscribed(gw, "INTS")
            backend.publish("ocpp/cs/INTS", b'{"MessageTypeId":2.0,"UniqueId":"f1","Action":"Reset","Payload":{"type":"Soft"}}')
            dropped = await gw.events.wait("message_dropped", lambda e: "f1" in e["payload"])
            assert dropped["reason"] == "invalid_payload" and "integer" in dropped["description"]
            wide = b'{"MessageTypeId":2,"UniqueId":"w1","Action":"DataTransfer","Payload":{"v":18446744073709551616}}'
            backend.publish("ocpp/cs/INTS", wide)
            dropped = await gw.events.wait("message_dropped", lambda e: "w1" in e["payload"])
            assert dropped["reason"] == "invalid_payload" and "18446744073709551616" in dropped["description"]
            big = {"MessageTypeId": 2, "UniqueId": "big1", "Action": "DataTransfer",
                   "Payload": {"vendorId": "V", "data": "x" * 5000}}
            backend.publish("ocpp/cs/INTS", big)
            dropped = await gw.events.wait("message_dropped", lambda e: "big1" in e["payload"])
            assert dropped["reason"] == "frame_too_large" and "max_frame_size (4096)" in dropped["description"]
            assert gw.ctx.metrics.drops["frame_too_large"] == 1 and gw.ctx.metrics.drops["invalid_payload"] == 2
            # the widest integers orjson carries go through exactly, both ways
            exact = b'{"MessageTypeId":2,"UniqueId":"x1","Action":"DataTransfer","Payload":{"u":18446744073709551615,"s":-9223372036854775808}}'
            backend.publish("ocpp/cs/INTS", exact)
            raw = await ws.recv()
            assert raw == '[2,"x1","DataTransfer",{"u":18446744073709551615,"s":-9223372036854775808}]'
            await ws.send('[3,"x1",{"status":"Accepted","data":"18446744073709551615","n":18446744073709551615}]')
            topic, reply = await backend.next()
            assert reply["Payload"]["n"] == 18446744073709551615
        backend.close()


async def test_upstream_wide_integers_are_refused_not_rounded(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("WIDE"), subprotocols=["ocpp2.0.1"]) as ws:
            await subscribed(gw, "WIDE")
            await ws.send('[2,"w1","DataTransfer",{"vendorId":"V","data":{"n":-9223372036854775809}}]')
            error = await recv_json(ws)
            assert error[:3] == [4, "w1", "FormatViolation"] and "-9223372036854775809" in error[3]
            await backend.nothing()
            await heartbeat_round_trip(ws, backend, "WIDE", "hb")
        backend.close()


# --- item 11: upstream frames that cannot be published --------------------------------------------

async def test_upstream_frames_too_deep_get_a_callerror_and_the_socket_stays(tmp_path, mosquitto, caplog):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("UPDEEP"), subprotocols=["ocpp1.6"], max_size=None) as ws:
            await subscribed(gw, "UPDEEP")
            # 254 levels in all is what the codec writes; the frame array is one of them
            await ws.send(f'[2,"ok","DataTransfer",{nested_text(253)}]')
            assert (await backend.next())[1]["UniqueId"] == "ok"
            with caplog.at_level(logging.WARNING, logger="ocppgw"):
                for uid, depth in (("d254", 254), ("d600", 600), ("d1023", 1023)):
                    await ws.send(f'[2,"{uid}","DataTransfer",{nested_text(depth)}]')
                    error = await recv_json(ws)
                    assert error[:3] == [4, uid, "FormationViolation"], error
                    assert "nested deeper than 254 levels" in error[3]
                # a reply to our own CALL that is too deep: dropped (a CALLERROR answers a CALL only: in
                # 1.6 nothing is sent back, the Heartbeat's answer is the next frame), and it ends the CALL
                backend.publish("ocpp/cs/UPDEEP", {"MessageTypeId": 2, "UniqueId": "c1", "Action": "DataTransfer",
                                                   "Payload": {"vendorId": "V"}})
                assert (await recv_json(ws))[1] == "c1"
                await ws.send(f'[3,"c1",{nested_text(500)}]')
                await heartbeat_round_trip(ws, backend, "UPDEEP", "hb")
                assert gw.ctx.sessions["UPDEEP"].info()["inflight_cnt"] == 0
            drops = gw.events.named("message_dropped")
            assert [d["reason"] for d in drops] == ["invalid_frame"] * 4
            assert drops[0]["payload"].startswith('[2,"d254","DataTransfer"')
            records = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(records) == 1 and records[0].exc_info is None, records  # one line, no traceback
            assert "UPDEEP" in records[0].getMessage()
        backend.close()


HOSTILE_NAMES = [
    ("plus", "Data+Transfer"),
    ("hash", "Data#"),
    ("nul", "Data\u0000Transfer"),
    ("control character", "Data\u0001Transfer"),  # mosquitto would drop the bridge's connection for it
    ("non-character", "Data\uffff"),
    ("70,000 characters", "A" * 70_000),
]


async def test_actions_that_make_no_topic_get_a_callerror_and_the_socket_stays(tmp_path, mosquitto, caplog):
    conf = 'gateway.ocpp.upstream.topic = "cp/${cid}/${action}"\n'
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("TOPIC"), subprotocols=["ocpp1.6"], max_size=None) as ws:
            await subscribed(gw, "TOPIC")
            with caplog.at_level(logging.WARNING, logger="ocppgw"):
                for i, (name, action) in enumerate(HOSTILE_NAMES):
                    await ws.send(orjson.dumps([2, f"t{i}", action, {}]).decode())
                    error = await recv_json(ws)
                    assert error[:3] == [4, f"t{i}", "InternalError"], (name, error[:3])
                    assert "topic" in error[3], name
            await backend.nothing()
            drops = gw.events.named("message_dropped")
            assert [d["reason"] for d in drops] == ["invalid_topic"] * len(HOSTILE_NAMES)
            assert gw.ctx.metrics.drops["invalid_topic"] == len(HOSTILE_NAMES)
            assert gw.ctx.metrics.errors["InternalError"] == len(HOSTILE_NAMES)
            records = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(records) == 1 and records[0].exc_info is None, records
            assert len(records[0].getMessage()) < 500  # the 70,000 characters are not logged
            # the same socket still serves
            await ws.send('[2,"hb","Heartbeat",{}]')
            topic, body = await backend.next()
            assert topic == "ocpp/cp/TOPIC/Heartbeat" and body["UniqueId"] == "hb"
            backend.publish("ocpp/cs/TOPIC", {"MessageTypeId": 3, "UniqueId": "hb", "Payload": {"currentTime": "t"}})
            assert await recv_json(ws) == [3, "hb", {"currentTime": "t"}]
        backend.close()


async def test_unique_ids_that_make_no_topic_get_a_callerror(tmp_path, mosquitto):
    conf = 'gateway.ocpp.upstream.topic = "cp/${cid}/${id}"\n'
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("UID"), subprotocols=["ocpp2.0.1"]) as ws:
            await subscribed(gw, "UID")
            for uid in ("a+b", "#", "x\u0000y"):
                await ws.send(orjson.dumps([2, uid, "Heartbeat", {}]).decode())
                assert (await recv_json(ws))[:3] == [4, uid, "InternalError"]
            await backend.nothing()
            await ws.send('[2,"fine","Heartbeat",{}]')
            topic, body = await backend.next()
            assert topic == "ocpp/cp/UID/fine"
            assert [d["reason"] for d in gw.events.named("message_dropped")] == ["invalid_topic"] * 3
        backend.close()


async def test_a_huge_unknown_action_is_not_echoed_whole(tmp_path, mosquitto):
    conf = "gateway.ocpp.message_format_checking = all\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        async with websockets.connect(gw.url("HUGE"), subprotocols=["ocpp1.6"], max_size=None) as ws:
            await ws.send(orjson.dumps([2, "h1", "A" * 70_000, {}]).decode())
            error = await recv_json(ws)
            assert error[:3] == [4, "h1", "NotImplemented"] and "(70000 characters)" in error[3]
            assert len(error[3]) < 200
