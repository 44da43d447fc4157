"""The OCPP-J frame codec: what parses, and the CALLERROR each bad frame earns per version."""

from __future__ import annotations

import orjson
import pytest

from engine.ocpp import frames
from engine.ocpp.frames import Call, CallError, CallResult, FrameError


def test_parses_the_three_message_types():
    assert frames.parse('[2,"1","Heartbeat",{}]', "ocpp1.6") == Call("1", "Heartbeat", {})
    assert frames.parse('[3,"1",{"a":1}]', "ocpp1.6") == CallResult("1", {"a": 1})
    assert frames.parse('[4,"1","GenericError","boom",{"x":1}]', "ocpp2.0.1") == CallError("1", "GenericError", "boom", {"x": 1})
    assert frames.parse(b'[2,"' + b"x" * 36 + b'","A",{}]', "ocpp1.6").unique_id == "x" * 36


# (frame, code for 1.6, code for 2.0.1/2.1, UniqueId in the CALLERROR)
BAD = [
    ("not json", "FormationViolation", "RpcFrameworkError", "-1"),
    ("", "FormationViolation", "RpcFrameworkError", "-1"),
    ('{"a":1}', "FormationViolation", "RpcFrameworkError", "-1"),
    ("[]", "FormationViolation", "RpcFrameworkError", "-1"),
    ('"string"', "FormationViolation", "RpcFrameworkError", "-1"),
    ('[7,"u1","X",{}]', "ProtocolError", "MessageTypeNotSupported", "u1"),
    ('[0,"u1"]', "ProtocolError", "MessageTypeNotSupported", "u1"),
    ('["2","u1","Heartbeat",{}]', "FormationViolation", "RpcFrameworkError", "u1"),
    ('[2.0,"u1","Heartbeat",{}]', "FormationViolation", "RpcFrameworkError", "u1"),
    ('[true,"u1","Heartbeat",{}]', "FormationViolation", "RpcFrameworkError", "u1"),
    ('[2,"u1","Heartbeat"]', "FormationViolation", "RpcFrameworkError", "u1"),
    ('[2,"u1","Heartbeat",{},1]', "FormationViolation", "RpcFrameworkError", "u1"),
    ('[3,"u1"]', "FormationViolation", "RpcFrameworkError", "u1"),
    ('[4,"u1","E","d"]', "FormationViolation", "RpcFrameworkError", "u1"),
    ('[2,17,"Heartbeat",{}]', "FormationViolation", "RpcFrameworkError", "-1"),
    ('[2,null,"Heartbeat",{}]', "FormationViolation", "RpcFrameworkError", "-1"),
    ('[2,"","Heartbeat",{}]', "FormationViolation", "RpcFrameworkError", ""),
    ('[2,"' + "u" * 37 + '","Heartbeat",{}]', "FormationViolation", "RpcFrameworkError", "u" * 37),
    ('[2,"u1",7,{}]', "FormationViolation", "RpcFrameworkError", "u1"),
    ('[2,"u1","",{}]', "FormationViolation", "RpcFrameworkError", "u1"),
    ('[2,"u1","Heartbeat",[]]', "FormationViolation", "FormatViolation", "u1"),
    ('[2,"u1","Heartbeat",null]', "FormationViolation", "FormatViolation", "u1"),
    ('[3,"u1","ok"]', "FormationViolation", "FormatViolation", "u1"),
    ('[4,"u1",1,"d",{}]', "FormationViolation", "RpcFrameworkError", "u1"),
    ('[4,"u1","E","d",[]]', "FormationViolation", "RpcFrameworkError", "u1"),
]


@pytest.mark.parametrize("text,code16,code2,uid", BAD)
def test_bad_frames(text, code16, code2, uid):
    for proto, code in (("ocpp1.6", code16), ("ocpp2.0.1", code2), ("ocpp2.1", code2)):
        with pytest.raises(FrameError) as info:
            frames.parse(text, proto)
        assert (info.value.code, info.value.unique_id) == (code, uid), proto
        assert info.value.description


def test_encoders_round_trip():
    assert orjson.loads(frames.encode_call("a", "Reset", {"type": "Soft"})) == [2, "a", "Reset", {"type": "Soft"}]
    assert orjson.loads(frames.encode_result("a", {})) == [3, "a", {}]
    assert orjson.loads(frames.encode_error("a", "GenericError", "x")) == [4, "a", "GenericError", "x", {}]
    text = frames.encode_call("u", "DataTransfer", {"data": "ünïcode ✓"})
    assert frames.parse(text, "ocpp1.6") == Call("u", "DataTransfer", {"data": "ünïcode ✓"})


@pytest.mark.parametrize("text,wide", [
    ('[1,18446744073709551615,-9223372036854775808]', None),  # the edges orjson reads exactly
    ('[18446744073709551616]', "18446744073709551616"),
    ('[-9223372036854775809]', "-9223372036854775809"),
    ('{"a":"123456789012345678901234567890"}', None),  # digits in a string
    ('{"a\\"":"\\\\","b":123456789012345678901}', "123456789012345678901"),  # escapes before it
    ('[1.12345678901234567890123, 1e-12345678901234567890]', None),  # floats anyway
    ('[' + "9" * 5000 + ']', "99999999999999999999...(5000 digits)"),
])
def test_wide_integer_finds_what_orjson_would_round(text, wide):
    assert frames.wide_integer(text) == wide
    assert frames.wide_integer(text.encode()) == wide


def test_a_frame_with_a_wide_integer_is_refused_per_version():
    for ver, code in (("ocpp1.6", "FormationViolation"), ("ocpp2.1", "FormatViolation")):
        with pytest.raises(FrameError) as info:
            frames.parse('[2,"w","DataTransfer",{"n":99999999999999999999}]', ver)
        assert (info.value.code, info.value.unique_id) == (code, "w")
        assert "99999999999999999999" in info.value.description


def test_encoders_raise_encode_error_not_type_error():
    deep: dict = {}
    for _ in range(300):
        deep = {"a": deep}
    with pytest.raises(frames.EncodeError, match="nested deeper than 254 levels"):
        frames.encode_call("1", "DataTransfer", deep)
    with pytest.raises(frames.EncodeError, match="64-bit"):
        frames.encode_result("1", {"n": 2**64})
    with pytest.raises(frames.EncodeError):
        frames.encode_error("1", "GenericError", "", {1: 2})


# --- the charge point's side (the simulator and the bench load generator) --------------------------------


def test_client_side_encoders_write_what_parse_reads():
    assert frames.call_bytes("7", "Heartbeat", {}) == b'[2,"7","Heartbeat",{}]'
    assert frames.parse(frames.call_bytes("7", "Heartbeat", {"a": 1}), "ocpp1.6") == Call("7", "Heartbeat", {"a": 1})
    assert frames.parse(frames.result_bytes("7", {"b": 2}), "ocpp2.0.1") == CallResult("7", {"b": 2})
    assert frames.parse(frames.error_bytes("7", "NotSupported", "no"), "ocpp2.0.1") == CallError("7", "NotSupported", "no", {})
    assert frames.call_bytes("7", "A", {}).decode() == frames.encode_call("7", "A", {})
    assert frames.result_bytes("7", {}).decode() == frames.encode_result("7", {})
    assert frames.error_bytes("7", "C", "d", {"x": 1}).decode() == frames.encode_error("7", "C", "d", {"x": 1})
    with pytest.raises(frames.EncodeError):
        frames.call_bytes("7", "A", {"n": 2**64})


def test_a_call_with_its_payload_encoded_already():
    data = frames.call_with_json(b"12", b"MeterValues", orjson.dumps({"connectorId": 1}))
    assert frames.parse(data, "ocpp1.6") == Call("12", "MeterValues", {"connectorId": 1})


@pytest.mark.parametrize("data, peeked", [
    (b'[3,"12",{}]', (3, b"12")),
    (b'[4,"12","GenericError","x",{}]', (4, b"12")),
    (b'[2,"u","Reset",{"type":"Hard"}]', None),  # a CALL is no answer: parse it
    (b'[3, "12", {}]', None),  # not written compactly: parse it
    (b'[5,"12",{}]', None),
    (b'[3,12,{}]', None),
    (b'[3,"12', None),
    (b"", None),
])
def test_peek_answer_reads_type_and_id_of_compact_answers(data, peeked):
    assert frames.peek_answer(data) == peeked


@pytest.mark.parametrize("data, type_id", [
    (b'[2,"u",3,{}]', 2), (b'[3,"u"]', 3), (b"[4]", 4), (b"[]", None), (b"nope", None), (b'{"a":1}', None),
    (b'["2","u"]', None),
])
def test_message_type_of_a_frame_however_malformed(data, type_id):
    assert frames.message_type(data) == type_id
