"""Bad frames from a charge point: each earns its CALLERROR, nothing goes upstream, the connection lives on.
(A bad CALLRESULT or CALLERROR earns none: tests/test_ocpp21_rpc.py.)"""

from __future__ import annotations

import orjson
import pytest
import websockets

from tests.ocpp_support import Backend, recv_json, running_gateway, subscribed

pytestmark = pytest.mark.timeout(90)




FRAME_CASES = [
    ("invalid JSON", "{not json", "-1", "FormationViolation"),
    ("not an array", '{"MessageTypeId":2}', "-1", "FormationViolation"),
    ("short CALL", '[2,"b1","Heartbeat"]', "b1", "FormationViolation"),
    ("MessageTypeId 5", '[5,"b3","Heartbeat",{}]', "b3", "ProtocolError"),
    ("non-string UniqueId", '[2,42,"Heartbeat",{}]', "-1", "FormationViolation"),
    ("non-string Action", '[2,"b4",42,{}]', "b4", "FormationViolation"),
    ("UniqueId over 36 chars", '[2,"' + "b" * 37 + '","Heartbeat",{}]', "b" * 37, "FormationViolation"),
    ("1 MB of garbage", "x" * (1024 * 1024), "-1", "FormationViolation"),
]


async def test_bad_frames_v16(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("BAD"), subprotocols=["ocpp1.6"], max_size=None) as ws:
            await subscribed(gw, "BAD")
            for name, frame, uid, code in FRAME_CASES:
                await ws.send(frame)
                error = await recv_json(ws)
                assert error[:3] == [4, uid, code], name
                assert isinstance(error[3], str) and error[3] and error[4] == {}, name
            await ws.send(b"\x01\x02binary")
            assert (await recv_json(ws))[:3] == [4, "-1", "FormationViolation"]
            await backend.nothing()  # nothing went upstream
            drops = gw.events.named("message_dropped")
            assert [d["reason"] for d in drops] == ["invalid_frame"] * (len(FRAME_CASES) + 1)
            assert drops[0]["payload"] == "{not json" and drops[0]["clientid"] == "BAD"
            # the next valid CALL goes through
            await ws.send('[2,"ok-1","Heartbeat",{}]')
            topic, body = await backend.next()
            assert topic == "ocpp/cp/BAD" and body["UniqueId"] == "ok-1"
            assert gw.ctx.metrics.errors["FormationViolation"] == len(FRAME_CASES)
        backend.close()


async def test_bad_frames_v201_use_the_2x_codes(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("BAD2"), subprotocols=["ocpp2.0.1"]) as ws:
            await subscribed(gw, "BAD2")
            for frame, expected in [("nope", [4, "-1", "RpcFrameworkError"]),
                                    ('[7,"c1"]', [4, "c1", "MessageTypeNotSupported"]),
                                    ('[2,"c2","Heartbeat",[]]', [4, "c2", "FormatViolation"])]:
                await ws.send(frame)
                assert (await recv_json(ws))[:3] == expected
            await ws.send(b"\x00")
            assert (await recv_json(ws))[:3] == [4, "-1", "FormatViolation"]
            await backend.nothing()
            await ws.send('[2,"ok","Heartbeat",{}]')
            assert (await backend.next())[1]["UniqueId"] == "ok"
        backend.close()


SCHEMA_CASES_16 = [
    ("wrong type", '[2,"s1","BootNotification",{"chargePointVendor":5,"chargePointModel":"M"}]',
     "TypeConstraintViolation", "chargePointVendor"),
    ("missing required", '[2,"s2","BootNotification",{"chargePointModel":"M"}]',
     "OccurenceConstraintViolation", "chargePointVendor"),
    ("too long", '[2,"s3","BootNotification",{"chargePointVendor":"' + "v" * 21 + '","chargePointModel":"M"}]',
     "PropertyConstraintViolation", "chargePointVendor"),
    ("bad enum", '[2,"s4","StatusNotification",{"connectorId":1,"errorCode":"NoError","status":"Sleeping"}]',
     "PropertyConstraintViolation", "status"),
    ("additional property", '[2,"s5","Heartbeat",{"extra":1}]', "FormationViolation", "extra"),
    ("nested array item", '[2,"s6","MeterValues",{"connectorId":1,"meterValue":[{"timestamp":"2026-01-01T00:00:00Z",'
     '"sampledValue":[{"unit":"Wh"}]}]}]', "OccurenceConstraintViolation", "meterValue[0].sampledValue[0]"),
    ("unknown action", '[2,"s7","FlyToTheMoon",{}]', "NotImplemented", "FlyToTheMoon"),
]


async def test_schema_violations_with_checking_on(tmp_path, mosquitto):
    conf = "gateway.ocpp { message_format_checking = all, lenient_clients = [LENIENT] }\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("STRICT"), subprotocols=["ocpp1.6"]) as ws:
            await subscribed(gw, "STRICT")
            for name, frame, code, path in SCHEMA_CASES_16:
                await ws.send(frame)
                error = await recv_json(ws)
                assert error[:3] == [4, orjson.loads(frame)[1], code], (name, error)
                assert path in error[3], (name, error[3])
            await backend.nothing()
            assert [d["reason"] for d in gw.events.named("message_dropped")] == ["schema_violation"] * len(SCHEMA_CASES_16)
            await ws.send('[2,"good","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]')
            assert (await backend.next())[1]["UniqueId"] == "good"
            # downstream CALLs are checked too, and never sent when wrong
            backend.publish("ocpp/cs/STRICT", {"MessageTypeId": 2, "UniqueId": "d1", "Action": "Reset", "Payload": {"type": "Medium"}})
            dropped = await gw.events.wait("message_dropped", lambda e: e["reason"] == "schema_violation" and "Medium" in e["payload"])
            assert "type" in dropped["description"]
            backend.publish("ocpp/cs/STRICT", {"MessageTypeId": 2, "UniqueId": "d2", "Action": "Reset", "Payload": {"type": "Hard"}})
            assert await recv_json(ws) == [2, "d2", "Reset", {"type": "Hard"}]
            # and the charge point's answer is checked against the response schema of that action
            await ws.send('[3,"d2",{"status":"Maybe"}]')
            await gw.events.wait("message_dropped", lambda e: e["reason"] == "schema_violation" and "Maybe" in e["payload"])
            await backend.nothing()
        # a lenient charge point is not checked
        async with websockets.connect(gw.url("LENIENT"), subprotocols=["ocpp1.6"]) as ws:
            await ws.send('[2,"l1","Heartbeat",{"extra":1}]')
            assert (await backend.next())[1]["Payload"] == {"extra": 1}
        backend.close()


async def test_schema_violations_201_spelling(tmp_path, mosquitto):
    conf = "gateway.ocpp.message_format_checking = upstream_only\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        backend = Backend(mosquitto.port)
        async with websockets.connect(gw.url("S201"), subprotocols=["ocpp2.0.1"]) as ws:
            await subscribed(gw, "S201")
            await ws.send('[2,"m1","BootNotification",{"reason":"PowerUp"}]')
            error = await recv_json(ws)
            assert error[:3] == [4, "m1", "OccurrenceConstraintViolation"] and "chargingStation" in error[3]
            await ws.send('[2,"m2","BootNotification",{"reason":"Bored","chargingStation":{"model":"m","vendorName":"v"}}]')
            error = await recv_json(ws)
            assert error[:3] == [4, "m2", "PropertyConstraintViolation"] and "reason" in error[3]
            # upstream_only: downstream is not checked
            backend.publish("ocpp/cs/S201", {"MessageTypeId": 2, "UniqueId": "x1", "Action": "Reset", "Payload": {"type": "Whenever"}})
            assert await recv_json(ws) == [2, "x1", "Reset", {"type": "Whenever"}]
        backend.close()
