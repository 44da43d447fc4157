"""The bus envelope: frames in, the JSON object the rules see out; downstream objects checked."""

from __future__ import annotations

import pytest

from engine.ocpp import envelope, frames
from engine.ocpp.frames import CallError


def test_a_call_becomes_its_envelope():
    call = frames.parse('[2,"u1","Heartbeat",{}]', "ocpp1.6")
    body = envelope.call_body(call.unique_id, call.action, call.payload)
    assert body == {"MessageTypeId": 2, "UniqueId": "u1", "Action": "Heartbeat", "Payload": {}}
    assert list(body) == ["MessageTypeId", "UniqueId", "Action", "Payload"]


def test_a_result_names_its_action_only_when_it_answers_our_call():
    assert list(envelope.result_body("u1", "Reset", {"status": "Accepted"})) == ["MessageTypeId", "UniqueId", "Action", "Payload"]
    assert envelope.result_body("u1", "Reset", {"a": 1}) == {"MessageTypeId": 3, "UniqueId": "u1", "Action": "Reset", "Payload": {"a": 1}}
    assert envelope.result_body("u1", None, {}) == {"MessageTypeId": 3, "UniqueId": "u1", "Payload": {}}


def test_an_error_carries_code_description_details():
    error = CallError("u1", "NotSupported", "no", {"x": 1})
    assert envelope.error_body("u1", "Reset", error) == {
        "MessageTypeId": 4, "UniqueId": "u1", "Action": "Reset", "ErrorCode": "NotSupported",
        "ErrorDescription": "no", "ErrorDetails": {"x": 1}}
    assert "Action" not in envelope.error_body("u1", None, error)


def test_a_downstream_error_envelope_becomes_a_callerror_frame():
    assert envelope.downstream_error_frame("u1", {"ErrorCode": "GenericError"}) == '[4,"u1","GenericError","",{}]'
    body = {"ErrorCode": "E", "ErrorDescription": "d", "ErrorDetails": {"k": "v"}}
    assert frames.parse(envelope.downstream_error_frame("u1", body), "ocpp1.6") == CallError("u1", "E", "d", {"k": "v"})


@pytest.mark.parametrize(("body", "problem"), [
    ([], "the payload must be a JSON object"),
    ({"MessageTypeId": 7}, "MessageTypeId must be 2, 3, 4, 5 or 6"),
    ({"MessageTypeId": True, "Action": "A"}, "MessageTypeId must be 2, 3, 4, 5 or 6"),
    ({"MessageTypeId": 2.0, "Action": "A"}, "MessageTypeId must be 2, 3, 4, 5 or 6"),
    ({"MessageTypeId": 2, "Action": "A", "UniqueId": ""}, "UniqueId must be a string of 1 to 36"),
    ({"MessageTypeId": 2, "Action": "A", "UniqueId": "x" * 37}, "UniqueId must be a string of 1 to 36"),
    ({"MessageTypeId": 2, "Action": "A", "Payload": []}, "Payload must be a JSON object"),
    ({"MessageTypeId": 2}, "a CALL needs an Action string"),
    ({"MessageTypeId": 2, "Action": ""}, "a CALL needs an Action string"),
    ({"MessageTypeId": 3, "Payload": {}}, "a reply needs the UniqueId"),
    ({"MessageTypeId": 4, "UniqueId": "u"}, "a CALLERROR needs an ErrorCode string"),
    ({"MessageTypeId": 4, "UniqueId": "u", "ErrorCode": "E", "ErrorDescription": 1}, "ErrorDescription must be a string"),
    ({"MessageTypeId": 4, "UniqueId": "u", "ErrorCode": "E", "ErrorDetails": []}, "ErrorDetails must be a JSON object"),
])
def test_check_downstream_says_what_is_wrong(body, problem):
    found = envelope.check_downstream(body)
    assert found is not None and found.startswith(problem)


@pytest.mark.parametrize("body", [
    {"MessageTypeId": 2, "Action": "Reset", "Payload": {}},
    {"MessageTypeId": 2, "Action": "Reset"},
    {"MessageTypeId": 3, "UniqueId": "u", "Payload": {}},
    {"MessageTypeId": 4, "UniqueId": "u", "ErrorCode": "E"},
])
def test_check_downstream_lets_good_envelopes_through(body):
    assert envelope.check_downstream(body) is None


# --- the session's inlined copies (its hot path builds CALL and CALLRESULT envelopes itself) -----------------------

class _Transport:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send_text(self, text: str) -> None:
        self.sent.append(text)

    def close(self, code: int, reason: str) -> None:
        pass


class _Listener:
    full_name = "ocpp:ws:default"
    checking = None


def test_the_session_publishes_the_envelopes_built_here():
    import asyncio

    from engine.bus import Bus
    from engine.config.schema import OcppSettings
    from engine.ocpp.context import GatewayContext
    from engine.ocpp.session import Session

    async def run() -> list[dict]:
        bus = Bus()
        published: list[dict] = []
        bus.subscribe("ocpp/#", lambda m: published.append(m.json()))
        ctx = GatewayContext(OcppSettings(message_format_checking="disable"), bus, "n", None)
        session = Session(ctx, _Transport(), cid="CP1", proto_ver="ocpp1.6", username=None, peer=("1.2.3.4", 1),
                          sockname=("5.6.7.8", 2), mountpoint="ocpp/", listener=_Listener())
        session.start()
        session.on_text('[2,"u1","Heartbeat",{}]')
        session.on_text('[3,"x",{"a":1}]')  # answers nothing of ours: no Action
        session.on_text('[4,"y","GenericError","d",{}]')
        reply = session.call("Reset", {"type": "Soft"}, unique_id="c1")
        session.on_text('[3,"c1",{"status":"Accepted"}]')  # answers our CALL: its Action
        assert (await reply) == envelope.result_body("c1", "Reset", {"status": "Accepted"})
        session.close("normal")
        return published

    published = asyncio.run(run())
    assert published == [
        envelope.call_body("u1", "Heartbeat", {}),
        envelope.result_body("x", None, {"a": 1}),
        envelope.error_body("y", None, CallError("y", "GenericError", "d", {})),
        envelope.result_body("c1", "Reset", {"status": "Accepted"}),
    ]
