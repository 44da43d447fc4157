"""Hostile frames, generated: whatever a charge point or a backend sends, the session answers per
docs/gateway.md (a well-formed CALLERROR, or silence and one upstream message), no exception
escapes, and it still serves a Heartbeat round trip afterwards.

Two layers: many examples straight into `Session.on_text` / `on_downstream` (a fake transport, the
real bus, codec, schemas and topics), and fewer over a real WebSocket to a real gateway.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.bus import Bus, Message
from engine.config.schema import ListenerSettings, OcppSettings, UpstreamSettings, WebsocketSettings
from engine.ocpp import frames
from engine.ocpp.context import GatewayContext
from engine.ocpp.schemas import SchemaRegistry
from engine.ocpp.session import Session

pytestmark = pytest.mark.timeout(300)

CODES = {
    "ocpp1.6": {"FormationViolation", "ProtocolError", "InternalError", "TypeConstraintViolation",
                "OccurenceConstraintViolation", "PropertyConstraintViolation", "NotImplemented", "NotSupported",
                "SecurityError", "GenericError"},
    "ocpp2.0.1": {"FormatViolation", "RpcFrameworkError", "MessageTypeNotSupported", "InternalError", "ProtocolError",
                  "TypeConstraintViolation", "OccurrenceConstraintViolation", "PropertyConstraintViolation",
                  "NotImplemented", "NotSupported", "SecurityError", "GenericError"},
}
CODES["ocpp2.1"] = CODES["ocpp2.0.1"]

# --- what a hostile peer sends ------------------------------------------------------------------

HOSTILE_STRINGS = st.sampled_from(["+", "#", "a/+/b", "x#", "\u0000", "$SYS/x", "/", "", " ", "Heartbeat",
                                   "BootNotification", "\U0001f600", "\\", '"', "-1"]) | st.integers(
    65_000, 70_000).map(lambda n: "A" * n)  # a topic level over MQTT's 65,535 bytes
strings = st.text(max_size=40) | HOSTILE_STRINGS
integers = st.integers() | st.integers(min_value=2**63 - 3, max_value=2**64 + 3) | st.integers(
    min_value=-(2**63) - 3, max_value=-(2**63) + 3) | st.integers(min_value=-(2**200), max_value=2**200)
scalars = st.none() | st.booleans() | integers | st.floats(allow_nan=False, allow_infinity=False) | strings
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(strings, inner, max_size=4),
                           max_leaves=12)
objects = st.dictionaries(strings, json_values, max_size=5)
type_ids = st.sampled_from([2, 3, 4, 5, 6, 7, 0, -1, 2.0, "2", True, None, 2**64, [2]]) | integers


def dumps(value: Any) -> str:
    """Any generated value as JSON text (stdlib: it writes integers of any size)."""
    return json.dumps(value, ensure_ascii=False)


@st.composite
def deep_text(draw: st.DrawFn) -> str:
    """An array or object nested 1 to 1,100 levels: past what orjson writes (254) and reads (1,024)."""
    depth = draw(st.integers(min_value=1, max_value=1100))
    if draw(st.booleans()):
        return "[" * depth + "]" * depth
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


payloads = objects.map(dumps) | deep_text() | json_values.map(dumps)


@st.composite
def ocpp_shaped(draw: st.DrawFn) -> str:
    """Arrays that look like frames, with any element wrong, too wide, too deep, or hostile."""
    type_id = dumps(draw(type_ids))
    uid = dumps(draw(strings | json_values))
    kind = draw(st.sampled_from(["call", "result", "error", "short", "long"]))
    if kind == "call":
        parts = [type_id, uid, dumps(draw(strings | json_values)), draw(payloads)]
    elif kind == "result":
        parts = [type_id, uid, draw(payloads)]
    elif kind == "error":
        parts = [type_id, uid, dumps(draw(strings)), dumps(draw(strings)), draw(payloads)]
    elif kind == "short":
        parts = [type_id, uid][: draw(st.integers(0, 2))]
    else:
        parts = [type_id, uid] + [draw(payloads) for _ in range(draw(st.integers(4, 6)))]
    return "[" + ",".join(parts) + "]"


@st.composite
def valid_calls(draw: st.DrawFn) -> str:
    uid = draw(st.text(min_size=1, max_size=36) | HOSTILE_STRINGS.filter(lambda s: 0 < len(s) <= 36))
    action = draw(st.sampled_from(["Heartbeat", "DataTransfer", "MeterValues", "Authorize"]) | strings.filter(bool))
    return dumps([2, uid, action, draw(objects)])


text_frames = ocpp_shaped() | valid_calls() | payloads | st.text(max_size=300)
upstream_frames = text_frames | st.binary(max_size=64)

# --- the session under test --------------------------------------------------------------------


def expected_unique_id(frame: str | bytes) -> str:
    """The UniqueId a CALLERROR must carry: the frame's, when it has a string one; else "-1"."""
    if isinstance(frame, bytes):
        return frames.UNKNOWN_ID
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return frames.UNKNOWN_ID
    if isinstance(msg, list) and len(msg) > 1 and isinstance(msg[1], str):
        return msg[1]
    return frames.UNKNOWN_ID


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None

    def send_text(self, text: str) -> None:
        self.sent.append(text)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


class FakeListener:
    full_name = "ocpp:ws:fuzz"
    checking = None
    settings = ListenerSettings(websocket=WebsocketSettings(max_frame_size=64 * 1024))


_REGISTRY: SchemaRegistry | None = None


def registry() -> SchemaRegistry:
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = SchemaRegistry()
    return _REGISTRY


class Harness:
    """One session on a real bus; records what goes upstream and what is dropped."""

    def __init__(self, loop: asyncio.AbstractEventLoop, proto: str, topic: str, checking: str) -> None:
        self.bus = Bus()
        ocpp = OcppSettings(upstream=UpstreamSettings(topic=topic), message_format_checking=checking)
        self.ctx = GatewayContext(ocpp, self.bus, "fuzz", registry() if checking != "disable" else None)
        self.upstream: list[Message] = []
        self.drops: list[dict[str, Any]] = []
        self.bus.subscribe("ocpp/cp/#", self.upstream.append)
        self.bus.subscribe("$events/message_dropped", lambda m: self.drops.append(m.json()))
        self.transport = FakeTransport()
        self.proto = proto

        async def make() -> Session:
            return Session(self.ctx, self.transport, cid="FUZZ", proto_ver=proto, username=None,
                           peer=("127.0.0.1", 1), sockname=("127.0.0.1", 2), mountpoint="ocpp/", listener=FakeListener())

        self.session = loop.run_until_complete(make())
        self.session.start()

    def check_answer(self, frame: str | bytes) -> None:
        """What one upstream frame earned: exactly one well-formed CALLERROR (never for a reply: a
        CALLRESULTERROR in 2.1), or silence with one message upstream (or, for a reply or a SEND
        refused, silence and a drop)."""
        type_id = frames.message_type(frame) if isinstance(frame, str) else None
        reply = frames.is_reply_type(type_id, self.proto)
        sent, self.transport.sent = self.transport.sent, []
        published, self.upstream[:] = list(self.upstream), []
        drops, self.drops[:] = list(self.drops), []
        assert self.transport.closed is None and not self.session.closed
        if sent:
            assert len(sent) == 1 and not published, (frame[:200], sent, published)
            error = orjson.loads(sent[0])
            assert isinstance(error, list) and len(error) == 5 and error[0] == (5 if reply else 4), (frame[:200], error)
            assert not reply or (self.proto == "ocpp2.1" and type_id in (3, 4)), (frame[:200], error)
            assert error[1] == expected_unique_id(frame), (frame[:200], error)
            assert error[2] in CODES[self.proto], error
            assert isinstance(error[3], str) and error[3] and isinstance(error[4], dict)
            assert len(error[3]) <= 600, error[3][:200]  # nothing the peer sent is echoed whole
            assert len(drops) == 1, drops
        elif published:
            assert len(published) == 1 and not drops
            message = published[0]
            assert orjson.loads(message.payload) == message.json()  # what goes on is what rules read
        elif reply or type_id == frames.SEND:
            assert len(drops) == 1, (frame[:200], drops)  # a bad reply in 1.6/2.0.1, a bad SEND: dropped, unanswered
        else:
            assert [d["reason"] for d in drops] == ["schema_violation"], (frame[:200], drops)

    def heartbeat_round_trip(self, uid: str) -> None:
        self.session.on_text(f'[2,"{uid}","Heartbeat",{{}}]')
        assert [orjson.loads(m.payload)["UniqueId"] for m in self.upstream] == [uid]
        self.upstream.clear()
        reply = {"MessageTypeId": 3, "UniqueId": uid, "Payload": {"currentTime": "2026-01-01T00:00:00Z"}}
        self.bus.publish(Message("ocpp/cs/FUZZ", orjson.dumps(reply), origin="test"))
        assert self.transport.sent == [f'[3,"{uid}",{{"currentTime":"2026-01-01T00:00:00Z"}}]']
        self.transport.sent.clear()

    def close(self) -> None:
        self.session.close("normal")
        assert self.bus.handler_errors == 0


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


CONFIGS = st.tuples(st.sampled_from(["ocpp1.6", "ocpp2.0.1", "ocpp2.1"]),
                    st.sampled_from(["cp/${cid}", "cp/${cid}/${action}", "cp/${cid}/${action}/${id}"]),
                    st.sampled_from(["disable", "all"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(config=CONFIGS, sequence=st.lists(upstream_frames, min_size=1, max_size=6))
def test_hostile_upstream_frames_into_the_session(loop, config, sequence):
    proto, topic, checking = config
    harness = Harness(loop, proto, topic, checking)
    try:
        for frame in sequence:
            if isinstance(frame, bytes):
                harness.session.on_binary(frame)
            else:
                harness.session.on_text(frame)
            harness.check_answer(frame)
        harness.heartbeat_round_trip("hb-after")
    finally:
        harness.close()


downstream_bodies = st.fixed_dictionaries(
    {"MessageTypeId": type_ids},
    optional={"UniqueId": strings | json_values, "Action": strings | json_values, "Payload": json_values,
              "ErrorCode": strings | json_values, "ErrorDescription": strings, "ErrorDetails": json_values},
).map(dumps)
downstream_payloads = downstream_bodies | payloads | st.text(max_size=100) | st.builds(
    lambda depth: '{"MessageTypeId":2,"UniqueId":"deep","Action":"DataTransfer","Payload":' + depth + "}", deep_text())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(config=CONFIGS, sequence=st.lists(downstream_payloads, min_size=1, max_size=6))
def test_hostile_downstream_messages_into_the_session(loop, config, sequence):
    proto, topic, checking = config
    harness = Harness(loop, proto, topic, checking)
    try:
        for payload in sequence:
            harness.bus.publish(Message("ocpp/cs/FUZZ", payload.encode(), origin="test"))
            assert harness.bus.handler_errors == 0
            for text in harness.transport.sent:  # whatever goes out is a well-formed frame
                frame = frames.parse(text, proto)
                assert type(frame) in (frames.Call, frames.CallResult, frames.CallError, frames.Send,
                                       frames.CallResultError)
                assert len(text.encode()) <= FakeListener.settings.websocket.max_frame_size
            if harness.transport.sent and type(frames.parse(harness.transport.sent[-1], proto)) is frames.Call:
                call = frames.parse(harness.transport.sent[-1], proto)
                harness.session.on_text(orjson.dumps([3, call.unique_id, {}]).decode())  # free the slot
            harness.transport.sent.clear()
            harness.upstream.clear()
        assert harness.session.info()["inflight_cnt"] == 0
        harness.heartbeat_round_trip("hb-after")
    finally:
        harness.close()


# --- the same over a real WebSocket to a real gateway --------------------------------------------


class GatewayThread:
    """A gateway (real node, real sockets, real mosquitto) on its own event loop in a thread, so
    that a synchronous hypothesis test can talk to it with a blocking WebSocket client."""

    def __init__(self, tmp_path: Any, mqtt_port: int, conf: str) -> None:
        self.ready: queue.Queue[Any] = queue.Queue()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run(tmp_path, mqtt_port, conf)), daemon=True)
        self._thread.start()
        got = self.ready.get(timeout=30)
        if isinstance(got, BaseException):
            raise got
        self.gw = got

    async def _run(self, tmp_path: Any, mqtt_port: int, conf: str) -> None:
        from tests.ocpp_support import running_gateway

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with running_gateway(tmp_path, mqtt_port, conf) as gw:
                self.ready.put(gw)
                await self._stop.wait()
        except BaseException as exc:
            self.ready.put(exc)

    def stop(self) -> None:
        assert self._loop and self._stop
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def test_hostile_frames_over_a_real_websocket(tmp_path, mosquitto):
    from websockets.sync.client import connect

    from tests.ocpp_support import Backend

    # several 70,000-character strings in one frame can pass the default 2 MB max_frame_size, which
    # closes the connection with 1009 as it should (test_ocpp_liveness, test_reload); here every frame is answered
    conf = ('gateway.ocpp.upstream.topic = "cp/${cid}/${action}"\n'
            'gateway.ocpp.listeners.ws.default.websocket.max_frame_size = 16MB\n')
    gateway = GatewayThread(tmp_path, mosquitto.port, conf)
    backend = Backend(mosquitto.port)
    try:
        with connect(gateway.gw.url("FUZZWS"), subprotocols=["ocpp1.6"], max_size=None) as ws:
            counter = iter(range(1_000_000))

            @settings(max_examples=120, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
            @given(frame=upstream_frames)
            def one_frame(frame: str | bytes) -> None:
                # a probe after each frame: everything before the probe's CALLERROR answered the frame
                probe = f"probe-{next(counter)}"
                ws.send(frame)
                ws.send(f'[2,"{probe}"]')
                answers = []
                while True:
                    got = orjson.loads(ws.recv(timeout=10))
                    if got[:2] == [4, probe]:
                        break
                    answers.append(got)
                assert len(answers) <= 1, answers
                if isinstance(frame, str) and frames.is_reply_type(frames.message_type(frame), "ocpp1.6"):
                    assert answers == [], (frame[:200], answers)  # a CALLERROR answers a CALL only
                for error in answers:
                    assert len(error) == 5 and error[0] == 4 and error[2] in CODES["ocpp1.6"], error
                    assert isinstance(error[3], str) and isinstance(error[4], dict)

            one_frame()
            # the same socket, after all that: a Heartbeat round trip through the broker
            while not backend.inbox.empty():
                backend.inbox.get_nowait()
            ws.send('[2,"hb-final","Heartbeat",{}]')
            while True:
                topic, body = backend.inbox.get(timeout=10)
                if isinstance(body, dict) and body.get("UniqueId") == "hb-final":
                    break
            assert topic == "ocpp/cp/FUZZWS/Heartbeat"
            backend.publish("ocpp/cs/FUZZWS", {"MessageTypeId": 3, "UniqueId": "hb-final", "Payload": {"currentTime": "t"}})
            assert orjson.loads(ws.recv(timeout=10)) == [3, "hb-final", {"currentTime": "t"}]
    finally:
        backend.close()
        gateway.stop()
