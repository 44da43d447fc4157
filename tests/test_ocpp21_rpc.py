"""OCPP 2.1's RPC framework (part 4): SEND (6) and CALLRESULTERROR (5) both ways, and never a
CALLERROR in reply to a CALLRESULT or a CALLERROR (1.6/2.0.1: dropped; 2.1: a CALLRESULTERROR).

Raw frames over real sockets (a real gateway node, mosquitto, a paho-mqtt backend): the `ocpp`
package's ChargePoint knows message types 2, 3 and 4 only, so it cannot send or receive these.
"""

from __future__ import annotations

import httpx
import orjson
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from engine.ocpp import envelope, frames
from engine.ocpp.frames import CallResultError, FrameError, Send
from tests.ocpp_support import Backend, eventually, recv_json, running_gateway, subscribed

pytestmark = pytest.mark.timeout(90)

NOW = "2026-01-01T00:00:00Z"
STREAM = {"id": 1, "pending": 0, "basetime": "2026-01-01T00:00:00Z", "data": [{"t": 0, "v": "7400"}]}


async def heartbeat_round_trip(ws, backend: Backend, cid: str, uid: str) -> None:
    """The charge point's Heartbeat goes up and its answer is the NEXT frame it receives: nothing
    else was sent to it before."""
    await ws.send(orjson.dumps([2, uid, "Heartbeat", {}]).decode())
    while True:
        _, body = await backend.next()
        if isinstance(body, dict) and body.get("UniqueId") == uid:
            break
    backend.publish(f"ocpp/cs/{cid}", {"MessageTypeId": 3, "UniqueId": uid, "Payload": {"currentTime": NOW}})
    assert await recv_json(ws) == [3, uid, {"currentTime": NOW}]


# --- the codec and the envelope ---------------------------------------------------------------------------


def test_21_parses_send_and_callresulterror_and_the_others_do_not():
    assert frames.parse('[6,"s1","NotifyPeriodicEventStream",{"id":1}]', "ocpp2.1") == Send(
        "s1", "NotifyPeriodicEventStream", {"id": 1})
    assert frames.parse('[5,"r1","FormatViolation","bad",{"x":1}]', "ocpp2.1") == CallResultError(
        "r1", "FormatViolation", "bad", {"x": 1})
    for proto, code in (("ocpp1.6", "ProtocolError"), ("ocpp2.0.1", "MessageTypeNotSupported")):
        for text in ('[6,"s1","A",{}]', '[5,"r1","E","d",{}]'):
            with pytest.raises(FrameError) as info:
                frames.parse(text, proto)
            assert info.value.code == code and info.value.unique_id in ("s1", "r1")
    assert orjson.loads(frames.encode_send("a", "A", {"k": 1})) == [6, "a", "A", {"k": 1}]
    assert orjson.loads(frames.encode_result_error("a", "E", "d")) == [5, "a", "E", "d", {}]
    assert frames.send_bytes("a", "A", {}) == b'[6,"a","A",{}]'
    assert frames.result_error_bytes("a", "E", "d") == b'[5,"a","E","d",{}]'


@pytest.mark.parametrize(("text", "type_id", "code"), [
    ('[3,"zz","notanobject"]', 3, "FormatViolation"),
    ('[3,"zz",{},{}]', 3, "RpcFrameworkError"),
    ('[4,"zz",1,"d",{}]', 4, "RpcFrameworkError"),
    ('[6,"zz",7,{}]', 6, "RpcFrameworkError"),
    ('[6,"zz","A",[]]', 6, "FormatViolation"),
    ('[5,"zz","E","d",[]]', 5, "RpcFrameworkError"),
    ('[2,"zz","A",[]]', 2, "FormatViolation"),
    ("nope", None, "RpcFrameworkError"),
])
def test_a_bad_frame_says_its_message_type(text, type_id, code):
    with pytest.raises(FrameError) as info:
        frames.parse(text, "ocpp2.1")
    assert (info.value.type_id, info.value.code) == (type_id, code)


def test_which_types_a_callerror_may_not_answer():
    for proto in ("ocpp1.6", "ocpp2.0.1", "ocpp2.1"):
        assert frames.is_reply_type(3, proto) and frames.is_reply_type(4, proto)
        assert not frames.is_reply_type(2, proto) and not frames.is_reply_type(None, proto)
    assert frames.is_reply_type(5, "ocpp2.1") and frames.is_reply_type(6, "ocpp2.1")
    assert not frames.is_reply_type(6, "ocpp2.0.1")  # an unknown type there: MessageTypeNotSupported


@pytest.mark.parametrize(("body", "problem"), [
    ({"MessageTypeId": 6}, "a SEND needs an Action string"),
    ({"MessageTypeId": 6, "Action": "A", "Payload": []}, "Payload must be a JSON object"),
    ({"MessageTypeId": 5, "ErrorCode": "E"}, "a CALLRESULTERROR needs the UniqueId"),
    ({"MessageTypeId": 5, "UniqueId": "u"}, "a CALLRESULTERROR needs an ErrorCode string"),
    ({"MessageTypeId": 6, "Action": "A"}, None),
    ({"MessageTypeId": 5, "UniqueId": "u", "ErrorCode": "E"}, None),
])
def test_downstream_envelopes_of_the_21_types(body, problem):
    got = envelope.check_downstream(body)
    assert got == problem if problem is None else problem in got


def test_a_downstream_callresulterror_envelope_becomes_its_frame():
    body = {"MessageTypeId": 5, "UniqueId": "u1", "ErrorCode": "E", "ErrorDescription": "d"}
    assert envelope.downstream_error_frame("u1", body) == '[5,"u1","E","d",{}]'


# --- SEND ---------------------------------------------------------------------------------------------------


async def test_send_upstream_is_published_like_a_call_never_answered_and_leaves_the_slot(tmp_path, mosquitto):
    conf = ('gateway.ocpp.upstream.topic = "cp/${cid}/${type}/${action}"\n'
            'gateway.ocpp.upstream.topic_override_mapping { NotifyPeriodicEventStream = "cp/${cid}/stream/${type}" }\n')
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("S21"), subprotocols=["ocpp2.1"]) as ws:
            await subscribed(gw, "S21")
            # a downstream CALL in flight, unanswered
            backend.publish("ocpp/cs/S21", {"MessageTypeId": 2, "UniqueId": "d1", "Action": "Reset",
                                            "Payload": {"type": "Immediate"}})
            assert await recv_json(ws) == [2, "d1", "Reset", {"type": "Immediate"}]
            # SENDs go up at once: the override's topic, else upstream.topic; ${type} is 6
            await ws.send(orjson.dumps([6, "s1", "NotifyPeriodicEventStream", STREAM]).decode())
            assert await backend.next() == ("ocpp/cp/S21/stream/6", {
                "MessageTypeId": 6, "UniqueId": "s1", "Action": "NotifyPeriodicEventStream", "Payload": STREAM})
            await ws.send('[6,"s2","DataTransfer",{"vendorId":"V"}]')
            topic, body = await backend.next()
            assert topic == "ocpp/cp/S21/6/DataTransfer" and body["MessageTypeId"] == 6
            # a CALL of the same action and template: its own topic (${type} 2, not a cached 6)
            await ws.send('[2,"c1","DataTransfer",{"vendorId":"V"}]')
            assert (await backend.next())[0] == "ocpp/cp/S21/2/DataTransfer"
            assert gw.ctx.sessions["S21"].info()["inflight_cnt"] == 1  # the SENDs did not touch the slot
            # a SEND is not a CALL waiting for an answer: a backend's "answer" to it is dropped
            backend.publish("ocpp/cs/S21", {"MessageTypeId": 3, "UniqueId": "s1", "Payload": {}})
            dropped = await gw.events.wait("message_dropped", lambda e: e["reason"] == "unknown_unique_id")
            assert '"s1"' in dropped["payload"]
            # the CALL in flight is still answered as usual
            await ws.send('[3,"d1",{"status":"Accepted"}]')
            topic, body = await backend.next()
            assert topic == "ocpp/cp/S21/Reply" and body["Action"] == "Reset"
            backend.publish("ocpp/cs/S21", {"MessageTypeId": 3, "UniqueId": "c1", "Payload": {"status": "Accepted"}})
            assert await recv_json(ws) == [3, "c1", {"status": "Accepted"}]  # nothing answered the SENDs
            metrics = gw.ctx.metrics
            assert metrics.received_by_type[frames.SEND] == 2 and metrics.received_by_type[frames.CALL] == 1
            assert metrics.sent_by_type[frames.CALL] == 1 and metrics.sent_by_type[frames.CALLRESULT] == 1
            assert metrics.sent_by_type[frames.CALLERROR] == 0 and sum(metrics.errors.values()) == 0
        backend.close()


async def test_send_downstream_goes_out_at_once_beside_the_call_in_flight(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("D21"), subprotocols=["ocpp2.1"]) as ws:
            await subscribed(gw, "D21")
            backend.publish("ocpp/cs/D21", {"MessageTypeId": 2, "UniqueId": "d1", "Action": "Reset",
                                            "Payload": {"type": "Immediate"}})
            backend.publish("ocpp/cs/D21", {"MessageTypeId": 2, "UniqueId": "d2", "Action": "Reset",
                                            "Payload": {"type": "Immediate"}})  # queued behind d1
            assert await recv_json(ws) == [2, "d1", "Reset", {"type": "Immediate"}]
            backend.publish("ocpp/cs/D21", {"MessageTypeId": 6, "UniqueId": "x1", "Action": "NotifyPeriodicEventStream",
                                            "Payload": STREAM})
            assert await recv_json(ws) == [6, "x1", "NotifyPeriodicEventStream", STREAM]  # before d2
            backend.publish("ocpp/cs/D21", {"MessageTypeId": 6, "Action": "DataTransfer", "Payload": {"vendorId": "V"}})
            frame = await recv_json(ws)
            assert frame[0] == 6 and frame[2:] == ["DataTransfer", {"vendorId": "V"}] and frame[1]  # an id made up
            delivered = await gw.events.wait("message_delivered", lambda e: '"x1"' in e["payload"])
            assert delivered["clientid"] == "D21"
            info = gw.ctx.sessions["D21"].info()
            assert info["inflight_cnt"] == 1 and info["mqueue_len"] == 1
            await ws.send('[3,"d1",{"status":"Accepted"}]')
            assert (await recv_json(ws))[:2] == [2, "d2"]
            assert gw.ctx.metrics.sent_by_type[frames.SEND] == 2
        backend.close()


@pytest.mark.parametrize("proto", ["ocpp1.6", "ocpp2.0.1"])
async def test_the_21_types_are_not_sent_to_older_charge_points(tmp_path, mosquitto, proto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("OLD"), subprotocols=[proto]) as ws:
            await subscribed(gw, "OLD")
            backend.publish("ocpp/cs/OLD", {"MessageTypeId": 6, "UniqueId": "x1", "Action": "DataTransfer",
                                            "Payload": {"vendorId": "V"}})
            backend.publish("ocpp/cs/OLD", {"MessageTypeId": 5, "UniqueId": "x2", "ErrorCode": "GenericError"})
            await eventually(lambda: gw.ctx.metrics.drops["unsupported_message_type"] == 2)
            drops = gw.events.named("message_dropped")
            assert [d["reason"] for d in drops] == ["unsupported_message_type"] * 2
            assert "OCPP 2.1" in drops[0]["description"] and proto in drops[0]["description"]
            await heartbeat_round_trip(ws, backend, "OLD", "hb")  # nothing was sent before its answer
        backend.close()


async def test_send_is_schema_checked_and_a_bad_one_dropped_unanswered(tmp_path, mosquitto):
    conf = "gateway.ocpp.message_format_checking = all\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("CHK21"), subprotocols=["ocpp2.1"]) as ws:
            await subscribed(gw, "CHK21")
            await ws.send(orjson.dumps([6, "s1", "NotifyPeriodicEventStream", {"id": 1}]).decode())  # no data, ...
            dropped = await gw.events.wait("message_dropped", lambda e: e["reason"] == "schema_violation")
            assert '"s1"' in dropped["payload"]
            await ws.send(orjson.dumps([6, "s2", "NotifyPeriodicEventStream", STREAM]).decode())
            assert (await backend.next())[1]["UniqueId"] == "s2"
            await heartbeat_round_trip(ws, backend, "CHK21", "hb")  # s1 earned no CALLERROR
            # downstream too: a SEND against its schema is not sent
            backend.publish("ocpp/cs/CHK21", {"MessageTypeId": 6, "UniqueId": "x1", "Action": "NotifyPeriodicEventStream",
                                              "Payload": {"id": -1}})
            await gw.events.wait("message_dropped", lambda e: e["reason"] == "schema_violation" and '"x1"' in e["payload"])
            backend.publish("ocpp/cs/CHK21", {"MessageTypeId": 6, "UniqueId": "x2", "Action": "NotifyPeriodicEventStream",
                                              "Payload": STREAM})
            assert (await recv_json(ws))[:2] == [6, "x2"]
            assert gw.ctx.metrics.drops["schema_violation"] == 2 and sum(gw.ctx.metrics.errors.values()) == 0
        backend.close()


# --- CALLRESULTERROR ----------------------------------------------------------------------------------------


async def test_callresulterror_upstream_names_the_action_of_the_call_answered(tmp_path, mosquitto):
    conf = 'gateway.ocpp.upstream.error_topic = "cp/${cid}/err/${type}/${action}"\n'
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("E21"), subprotocols=["ocpp2.1"]) as ws:
            await subscribed(gw, "E21")
            await ws.send('[2,"h1","Heartbeat",{}]')
            assert (await backend.next())[1]["UniqueId"] == "h1"
            backend.publish("ocpp/cs/E21", {"MessageTypeId": 3, "UniqueId": "h1", "Payload": {"currentTime": "soon"}})
            assert await recv_json(ws) == [3, "h1", {"currentTime": "soon"}]
            await ws.send('[5,"h1","FormatViolation","currentTime is not a date",{"at":"currentTime"}]')
            assert await backend.next() == ("ocpp/cp/E21/err/5/Heartbeat", {
                "MessageTypeId": 5, "UniqueId": "h1", "Action": "Heartbeat", "ErrorCode": "FormatViolation",
                "ErrorDescription": "currentTime is not a date", "ErrorDetails": {"at": "currentTime"}})
            await ws.send('[5,"zz","GenericError","?",{}]')  # about nothing we remember: no Action
            topic, body = await backend.next()
            assert topic == "ocpp/cp/E21/err/5/" and "Action" not in body and body["UniqueId"] == "zz"
            await heartbeat_round_trip(ws, backend, "E21", "hb")  # never answered
            assert gw.ctx.metrics.received_by_type[frames.CALLRESULTERROR] == 2
        backend.close()


async def test_callresulterror_downstream_only_about_a_callresult_of_that_charge_point(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("R21"), subprotocols=["ocpp2.1"]) as ws, \
                websockets.connect(gw.url("OTHER"), subprotocols=["ocpp2.1"]) as other:
            await subscribed(gw, "R21")
            await subscribed(gw, "OTHER")
            backend.publish("ocpp/cs/R21", {"MessageTypeId": 2, "UniqueId": "d1", "Action": "Reset",
                                            "Payload": {"type": "Immediate"}})
            assert (await recv_json(ws))[:2] == [2, "d1"]
            await ws.send('[3,"d1",{"status":"Accepted"}]')
            assert (await backend.next())[1]["UniqueId"] == "d1"
            # about another charge point's CALLRESULT, or one never sent: dropped
            backend.publish("ocpp/cs/OTHER", {"MessageTypeId": 5, "UniqueId": "d1", "ErrorCode": "GenericError"})
            await gw.events.wait("message_dropped", lambda e: e["reason"] == "unknown_unique_id" and e["clientid"] == "OTHER")
            backend.publish("ocpp/cs/R21", {"MessageTypeId": 5, "UniqueId": "nope", "ErrorCode": "GenericError"})
            await gw.events.wait("message_dropped", lambda e: e["reason"] == "unknown_unique_id" and '"nope"' in e["payload"])
            # about the CALLRESULT R21 sent: goes out, once
            backend.publish("ocpp/cs/R21", {"MessageTypeId": 5, "UniqueId": "d1", "ErrorCode": "PropertyConstraintViolation",
                                            "ErrorDescription": "status", "ErrorDetails": {"k": 1}})
            assert await recv_json(ws) == [5, "d1", "PropertyConstraintViolation", "status", {"k": 1}]
            backend.publish("ocpp/cs/R21", {"MessageTypeId": 5, "UniqueId": "d1", "ErrorCode": "GenericError"})
            await eventually(lambda: gw.ctx.metrics.drops["unknown_unique_id"] == 3)
            await heartbeat_round_trip(ws, backend, "R21", "hb")
            assert gw.ctx.metrics.sent_by_type[frames.CALLRESULTERROR] == 1
            # about the CALLRESULT the backend sent R21 (the Heartbeat's answer "hb"): goes out too
            backend.publish("ocpp/cs/R21", {"MessageTypeId": 5, "UniqueId": "hb", "ErrorCode": "GenericError",
                                            "ErrorDescription": "", "ErrorDetails": {}})
            assert await recv_json(ws) == [5, "hb", "GenericError", "", {}]
            assert gw.ctx.metrics.sent_by_type[frames.CALLRESULTERROR] == 2
        backend.close()


# --- never a CALLERROR in reply to a CALLRESULT ---------------------------------------------------------------

BAD_REPLIES = [  # (frame, the code a 2.1 charge point gets in its CALLRESULTERROR)
    ('[3,"zz","notanobject"]', "FormatViolation"),
    ('[3,"b2",{},{}]', "RpcFrameworkError"),
    ('[3,"w1",{"n":123456789012345678901234}]', "FormatViolation"),
    ('[4,"e1",1,"d",{}]', "RpcFrameworkError"),
    ('[4,"e2","E","d"]', "RpcFrameworkError"),
]


@pytest.mark.parametrize("proto", ["ocpp1.6", "ocpp2.0.1"])
async def test_a_bad_reply_is_dropped_unanswered_before_21(tmp_path, mosquitto, proto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("OLDR"), subprotocols=[proto]) as ws:
            await subscribed(gw, "OLDR")
            for frame, _ in BAD_REPLIES:
                await ws.send(frame)
            await heartbeat_round_trip(ws, backend, "OLDR", "hb")  # its answer is the first frame back
            drops = gw.events.named("message_dropped")
            assert [d["reason"] for d in drops] == ["invalid_frame"] * len(BAD_REPLIES)
            assert drops[0]["payload"] == BAD_REPLIES[0][0]
            metrics = gw.ctx.metrics
            assert metrics.drops["invalid_frame"] == len(BAD_REPLIES)
            assert sum(metrics.errors.values()) == 0 and metrics.sent_by_type[frames.CALLERROR] == 0
        backend.close()


async def test_a_bad_reply_earns_a_callresulterror_in_21(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("NEWR"), subprotocols=["ocpp2.1"]) as ws:
            await subscribed(gw, "NEWR")
            for frame, code in BAD_REPLIES:
                await ws.send(frame)
                answer = await recv_json(ws)
                assert answer[:3] == [5, orjson.loads(frame)[1], code], (frame, answer)
                assert isinstance(answer[3], str) and answer[3] and answer[4] == {}
            # a bad SEND or CALLRESULTERROR is never answered, not even with a CALLRESULTERROR
            await ws.send('[6,"s1",7,{}]')
            await ws.send('[5,"r1","E","d",[]]')
            await heartbeat_round_trip(ws, backend, "NEWR", "hb")
            assert [d["reason"] for d in gw.events.named("message_dropped")] == ["invalid_frame"] * (len(BAD_REPLIES) + 2)
            metrics = gw.ctx.metrics
            assert sum(metrics.errors.values()) == 0
            assert metrics.result_errors == {"FormatViolation": 2, "RpcFrameworkError": 3}
        backend.close()


@pytest.mark.parametrize(("proto", "answer"), [("ocpp2.0.1", None), ("ocpp2.1", "PropertyConstraintViolation")])
async def test_a_schema_invalid_callresult(tmp_path, mosquitto, proto, answer):
    conf = "gateway.ocpp.message_format_checking = all\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("SCR"), subprotocols=[proto]) as ws:
            await subscribed(gw, "SCR")
            backend.publish("ocpp/cs/SCR", {"MessageTypeId": 2, "UniqueId": "d1", "Action": "Reset",
                                            "Payload": {"type": "Immediate"}})
            assert (await recv_json(ws))[:2] == [2, "d1"]
            await ws.send('[3,"d1",{"status":"Maybe"}]')
            if answer is not None:
                got = await recv_json(ws)
                assert got[:3] == [5, "d1", answer] and "status" in got[3]
            await heartbeat_round_trip(ws, backend, "SCR", "hb")
            assert [d["reason"] for d in gw.events.named("message_dropped")] == ["schema_violation"]
            assert sum(gw.ctx.metrics.errors.values()) == 0
            assert gw.ctx.sessions["SCR"].info()["inflight_cnt"] == 0
        backend.close()


# --- metrics ---------------------------------------------------------------------------------------------------


async def test_prometheus_counts_frames_per_type_and_callresulterrors(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("M21"), subprotocols=["ocpp2.1"]) as ws:
            await subscribed(gw, "M21")
            await ws.send(orjson.dumps([6, "s1", "NotifyPeriodicEventStream", STREAM]).decode())
            await backend.next()
            await ws.send('[3,"zz","notanobject"]')
            assert (await recv_json(ws))[0] == 5
            await heartbeat_round_trip(ws, backend, "M21", "hb")
            async with httpx.AsyncClient(auth=("admin", "public")) as client:
                response = await client.get(f"{gw.admin_url}/prometheus/stats")
            assert response.status_code == 200, response.text
            text = response.text
        backend.close()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("ocppgw_frames_received_by_type_total", (("type", "SEND"),))] == 1
    assert samples[("ocppgw_frames_received_by_type_total", (("type", "CALL"),))] == 1
    assert samples[("ocppgw_frames_received_by_type_total", (("type", "CALLRESULT"),))] == 0  # did not parse
    assert samples[("ocppgw_frames_sent_by_type_total", (("type", "CALLRESULTERROR"),))] == 1
    assert samples[("ocppgw_frames_sent_by_type_total", (("type", "CALLRESULT"),))] == 1
    assert samples[("ocppgw_callresulterrors_sent_total", (("code", "FormatViolation"),))] == 1


async def test_the_callresults_remembered_for_a_callresulterror_are_bounded(tmp_path, mosquitto):
    from engine.ocpp.session import MAX_RECENT_RESULTS

    async with running_gateway(tmp_path, mosquitto.port) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("B21"), subprotocols=["ocpp2.1"]) as ws:
            await subscribed(gw, "B21")
            uids = [f"h{i}" for i in range(MAX_RECENT_RESULTS + 1)]
            for batch in (uids[:1], uids[1:]):  # (at most 32 CALLs wait for the backend at once)
                for uid in batch:
                    await ws.send(f'[2,"{uid}","Heartbeat",{{}}]')
                for uid in batch:
                    assert (await backend.next())[1]["UniqueId"] == uid
                    backend.publish("ocpp/cs/B21", {"MessageTypeId": 3, "UniqueId": uid, "Payload": {"currentTime": NOW}})
                for uid in batch:
                    assert (await recv_json(ws))[1] == uid
            await ws.send(f'[5,"{uids[0]}","GenericError","",{{}}]')  # the oldest: forgotten
            assert "Action" not in (await backend.next())[1]
            await ws.send(f'[5,"{uids[1]}","GenericError","",{{}}]')
            assert (await backend.next())[1]["Action"] == "Heartbeat"
        backend.close()


async def test_the_ocpp_packages_21_charge_point_opens_a_stream_and_sends_on_it(tmp_path, mosquitto):
    """The `ocpp` package's v21 ChargePoint (no SEND API of its own: it writes the SEND on its socket)
    opens a periodic event stream with a CALL, streams with SENDs, and its CALLs still work around them;
    a SEND pushed at it is ignored by the library and the connection stays."""
    import asyncio
    import contextlib

    from ocpp import v21

    conf = "gateway.ocpp.message_format_checking = all\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("LIB21"), subprotocols=["ocpp2.1"]) as ws:
            cp = v21.ChargePoint("LIB21", ws)
            task = asyncio.create_task(cp.start())
            try:
                await subscribed(gw, "LIB21")
                opened = asyncio.create_task(cp.call(v21.call.OpenPeriodicEventStream(
                    constant_stream_data={"id": 1, "variable_monitoring_id": 7, "params": {"interval": 1}})))
                call = await backend.answer("ocpp/cp/LIB21", {"status": "Accepted"})
                assert call["Action"] == "OpenPeriodicEventStream" and call["MessageTypeId"] == 2
                assert (await opened).status == "Accepted"
                await ws.send(orjson.dumps([6, "stream-1", "NotifyPeriodicEventStream", STREAM]).decode())
                topic, body = await backend.next()
                assert topic == "ocpp/cp/LIB21" and body["MessageTypeId"] == 6 and body["Payload"] == STREAM
                backend.publish("ocpp/cs/LIB21", {"MessageTypeId": 6, "Action": "NotifyPeriodicEventStream",
                                                  "Payload": STREAM})
                await eventually(lambda: gw.ctx.metrics.sent_by_type[frames.SEND] == 1)
                hb = asyncio.create_task(cp.call(v21.call.Heartbeat()))
                await backend.answer("ocpp/cp/LIB21", {"currentTime": NOW})
                assert (await hb).current_time == NOW
                assert gw.ctx.metrics.drops == {} and sum(gw.ctx.metrics.errors.values()) == 0
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                    await task
        backend.close()
