"""One connected charge point: its frames in, its commands out, its liveness.

The session knows OCPP and the bus, nothing about sockets (it is handed a
`Transport`) or MQTT. Upstream, each frame becomes one bus message on the
topic its template names. Downstream, the charge point's topic on the bus
feeds `on_downstream`; CALLs go out one at a time (the next waits for the
answer or `awaiting_timeout`), replies go out at once if they answer a CALL
of this charge point that is still waiting.

OCPP 2.1's SEND (unconfirmed, never answered) is published like a CALL and goes
downstream at once, beside the in-flight CALL. Its CALLRESULTERROR concerns a
CALLRESULT: upstream it names the Action of the charge point's CALL the backend
answered; downstream it goes out only about a recent CALLRESULT of that charge
point's exchanges, one it sent or one the backend sent it (each side remembers
its last `MAX_RECENT_RESULTS` CALLRESULTs). A bad reply
(CALLRESULT or CALLERROR) never earns a CALLERROR: in 1.6 and 2.0.1 it is
dropped, in 2.1 answered with a CALLRESULTERROR.

What is not the state machine lives beside it: the `$events` fields (`events`), the bus
envelope (`envelope`), liveness (`keepalive`), the registry of sessions (`registry`), the
handshake (`handshake`) and the socket (`transport`). Over 400 lines still, for one reason:
the upstream and downstream paths are one state (the in-flight CALL, the pending replies) and
the hot path, kept in one class so a frame costs no extra call layers.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, Literal, Protocol

import orjson

from engine.bus import Bus, Message, Subscription, TopicError, validate_name
from engine.config.schema import OcppSettings
from engine.log import Throttle
from engine.ocpp import envelope, events, fleet, frames
from engine.ocpp.context import GatewayMetrics, TopicTemplate
from engine.ocpp.fleet import FleetInfo
from engine.ocpp.keepalive import Keepalive
from engine.ocpp.outbound import Unsendable, frame_text
from engine.ocpp.registry import SessionRegistry
from engine.ocpp.schemas import SchemaRegistry, UnknownAction
from engine.ocpp.trace import Tap, Tracer

log = logging.getLogger("ocppgw.session")

MAX_PENDING_UPSTREAM = 32  # CALLs of the charge point the backend has not answered yet
MAX_RECENT_RESULTS = 32  # 2.1: CALLRESULTs remembered per direction, for the CALLRESULTERROR that may follow
MAX_CACHED_TOPICS = 64  # per session: the actions a charge point sends are few, unless it is hostile
WARN_EVERY = 60.0  # seconds: at most one warning per charge point about frames it cannot send us


class Transport(Protocol):
    def send_text(self, text: str) -> None: ...
    def close(self, code: int, reason: str) -> None: ...


class SessionContext(Protocol):
    """What a session reads of the gateway it belongs to (`GatewayContext`), live: a reload
    replaces the settings, the schemas and the topic templates under it."""

    bus: Bus
    node: str
    metrics: GatewayMetrics
    settings: OcppSettings
    registry: SchemaRegistry | None
    sessions: SessionRegistry[Any]  # a session removes itself when it closes
    generation: int
    call_topic: TopicTemplate
    reply_topic: TopicTemplate
    error_topic: TopicTemplate
    override_topics: dict[str, TopicTemplate]
    dnstream_topic: TopicTemplate
    tracer: Tracer  # frame traces: sets `tap` on the sessions of the ids it traces

    def checks_upstream(self, cid: str, listener_mode: str | None = None) -> bool: ...
    def checks_dnstream(self, cid: str, listener_mode: str | None = None) -> bool: ...
    def wants_event(self, name: str) -> bool: ...
    def publish_event(self, name: str, fields: dict[str, Any]) -> None: ...


class ListenerView(Protocol):
    """What a session reads of the listener that accepted it (live, so reloads apply).
    `settings` (its ListenerSettings) is read if present, for `websocket.max_frame_size`."""

    @property
    def full_name(self) -> str: ...

    @property
    def checking(self) -> str | None: ...


class QueueFull(Exception):
    """The charge point's downstream queue is full."""


class InvalidCommand(ValueError):
    """A CALL that cannot be sent to the charge point (cannot be encoded, or over its frame size)."""


class _Unpublishable(Exception):
    """An upstream frame with no topic or payload the bus can carry: (CALLERROR code, drop reason)."""

    def __init__(self, code: str, reason: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.reason = reason
        self.description = description


class _Outgoing:
    """A downstream CALL waiting for its turn or its answer."""

    __slots__ = ("unique_id", "action", "payload", "message", "timer", "reply")

    def __init__(self, unique_id: str, action: str, payload: Any, message: Message) -> None:
        self.unique_id = unique_id
        self.action = action
        self.payload = payload
        self.message = message
        self.timer: asyncio.TimerHandle | None = None
        self.reply: asyncio.Future[dict[str, Any]] | None = None  # set for calls made through the admin API


class Session:
    def __init__(
        self,
        ctx: SessionContext,
        transport: Transport,
        *,
        cid: str,
        proto_ver: str,
        username: str | None,
        peer: tuple[str, int],
        sockname: tuple[str, int],
        mountpoint: str,
        listener: ListenerView,
    ) -> None:
        self.ctx = ctx
        self.transport = transport
        self.cid = cid
        self.proto_ver = proto_ver
        self.username = username
        self.peer = peer
        self.sockname = sockname
        self.mountpoint = mountpoint
        self._listener = listener
        self.listener = listener.full_name
        self.connected_at = int(time.time() * 1000)
        self.closed = False
        self.recv_cnt = 0
        self.send_cnt = 0
        self._liveness = Keepalive(ctx.settings.default_heartbeat_interval)
        self._loop = asyncio.get_running_loop()
        self._headers = {
            "clientid": cid,
            "username": username,
            "peerhost": peer[0],
            "proto_ver": proto_ver,
            "node": ctx.node,
        }
        self._topic_cache: dict[tuple[int, str, str], str] = {}
        self._generation = ctx.generation
        self._pending_upstream: OrderedDict[str, str] = OrderedDict()  # UniqueId → Action
        self._v21 = frames.is_v21(proto_ver)  # has CALLRESULTERROR and SEND
        # 2.1 only: UniqueId → Action of the CALLRESULTs sent to the charge point / received from it
        self._results_sent: OrderedDict[str, str] = OrderedDict()
        self._results_received: OrderedDict[str, str] = OrderedDict()
        self._queue: deque[_Outgoing] = deque()
        self._inflight: _Outgoing | None = None
        self._subscription: Subscription | None = None
        self._got_frame = False
        self._last_frame = self._loop.time()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._unpublishable_lines: Throttle | None = None  # made on the first such frame
        self.fleet: FleetInfo | None = None  # boot identity, connector statuses (engine/ocpp/fleet.py)
        self.tap: Tap | None = None  # set by the tracer while somebody traces this id
        self.on_accepted: Callable[[], None] | None = None  # its BootNotification accepted (engine/ocpp/offline.py)
        self.held = False  # its takeover claim is out: a command may have gone to the old socket too

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe downstream, announce the connection, arm the timers. With takeover claims
        (engine/ocpp/takeover.py), commands wait for the claim to come back (`release`)."""
        self._subscribe()  # first: the claim goes out once this subscription is on the broker
        claims = getattr(self.ctx, "claims", None)
        self.held = claims is not None and claims.hold(self)
        self.ctx.tracer.attach(self)
        self.ctx.publish_event("client_connected", events.client_connected(
            self, keepalive=self.keepalive, connected_at=self.connected_at, mountpoint=self.mountpoint,
        ))
        idle = self.ctx.settings.idle_timeout
        if idle > 0:
            self._idle_timer = self._loop.call_later(idle, self._idle_expired)
        self._arm_keepalive()

    def _downstream_filter(self) -> str:
        return self.mountpoint + self.ctx.dnstream_topic.render(self._vars(""))

    def _subscribe(self) -> None:
        self._subscription = self.ctx.bus.subscribe(self._downstream_filter(), self.on_downstream, remote=True,
                                                    name=f"session:{self.cid}")

    def release(self) -> None:
        """Take commands from now on: this is the newest connection of the charge point."""
        self.held = False

    def resubscribe(self, mountpoint: str) -> None:
        """After a reload: if the mountpoint or the downstream topic changed, move the subscription
        (the new one is made before the old goes, so no command falls in between); otherwise leave
        it be: every reload passes here for every session."""
        old = self._subscription
        self.mountpoint = mountpoint
        if old is not None and old.topic_filter == self._downstream_filter():
            return
        self._subscribe()
        if old is not None:
            self.ctx.bus.unsubscribe(old)

    def close(self, reason: str, code: int = 1000) -> None:
        """End the session (idempotent): unsubscribe, drop what waits, tell the rules why."""
        if self.closed:
            return
        self.closed = True
        for timer in (self._idle_timer, self._keepalive_timer):
            if timer:
                timer.cancel()
        if self._subscription is not None:
            self.ctx.bus.unsubscribe(self._subscription)
        self.ctx.sessions.remove(self)
        dropped = "takenover" if reason == "takenover" else "client_disconnected"  # it moved, or left
        if self._inflight:
            self._drop_outgoing(self._inflight, dropped)
            self._inflight = None
        while self._queue:
            self._drop_outgoing(self._queue.popleft(), dropped)
        if self.tap is not None:
            self.ctx.tracer.detach(self, reason)
        self.ctx.publish_event("client_disconnected", events.client_disconnected(
            self, reason=reason, connected_at=self.connected_at,
        ))
        if reason not in ("normal", "sock_closed"):
            self.transport.close(code, reason)

    def _idle_expired(self) -> None:
        if not self._got_frame and not self.closed:
            log.info("closing %s: no OCPP frame within idle_timeout", self.cid)
            self.close("idle_timeout", 1000)

    @property
    def keepalive(self) -> float:
        """Seconds between keepalive checks (the BootNotification's interval, once accepted)."""
        return self._liveness.interval

    def _arm_keepalive(self) -> None:
        if self._keepalive_timer:
            self._keepalive_timer.cancel()
        if self.keepalive > 0 and not self.closed:
            self._keepalive_timer = self._loop.call_later(self.keepalive, self._keepalive_check)

    def _keepalive_check(self) -> None:
        self._keepalive_timer = None
        if self.closed:
            return
        liveness = self._liveness.check(self._loop.time() - self._last_frame,
                                        self.ctx.settings.heartbeat_checking_times_backoff)
        if liveness is None:
            log.info("closing %s: keepalive timeout (%gs)", self.cid, self.keepalive)
            self.close("keepalive_timeout", 1000)
            return
        self._liveness = liveness
        self._arm_keepalive()

    def set_keepalive(self, interval: float) -> None:
        self._liveness = Keepalive(float(interval))
        self._arm_keepalive()

    # --- upstream: charge point → bus -----------------------------------------------------

    def on_text(self, text: str) -> None:
        if self.closed:
            return  # a frame that raced our close (takeover, timeout): nobody is listening any more
        metrics = self.ctx.metrics
        metrics.frames_in += 1
        metrics.bytes_in += len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))  # bytes
        self.recv_cnt += 1
        self._last_frame = self._loop.time()
        if self.tap is not None:
            self.tap(self.cid, "in", text)
        try:
            frame = frames.parse(text, self.proto_ver)
        except frames.FrameError as exc:
            self._refuse(exc, text)
            return
        if not self._got_frame:
            self._got_frame = True
            if self._idle_timer:
                self._idle_timer.cancel()
                self._idle_timer = None
        metrics.received_by_type[frame.type_id] += 1
        if type(frame) is frames.Call:
            self._upstream_call(frame, text)
        elif type(frame) is frames.CallResult:
            self._upstream_reply(frame, None, text)
        elif type(frame) is frames.CallError:
            self._upstream_reply(frame, frame, text)
        elif type(frame) is frames.Send:
            self._upstream_send(frame, text)
        else:
            self._upstream_result_error(frame, text)

    def on_binary(self, data: bytes) -> None:
        if self.closed:
            return
        self.ctx.metrics.frames_in += 1
        self.ctx.metrics.bytes_in += len(data)
        self._last_frame = self._loop.time()
        self._refuse(frames.FrameError(
            frames.format_violation(self.proto_ver), "OCPP-J frames are text; a binary frame was received"
        ), data)

    def _refuse(self, exc: frames.FrameError, raw: str | bytes) -> None:
        """Answer a bad frame with a CALLERROR (a bad reply: see `_bad_reply`) and tell the rules;
        publish nothing upstream."""
        if frames.is_reply_type(exc.type_id, self.proto_ver):
            self._bad_reply(exc.type_id, exc.unique_id, exc.code, exc.description)
        else:
            self._call_error(exc.unique_id, exc.code, exc.description)
        self._dropped_event("invalid_frame", raw if isinstance(raw, str) else raw[:1024].hex(), exc.description)

    def _call_error(self, unique_id: str, code: str, description: str) -> None:
        """Answer a CALL of the charge point with a CALLERROR, counted by code."""
        self._send(frames.encode_error(unique_id, code, description), frames.CALLERROR)
        self.ctx.metrics.errors[code] += 1

    def _bad_reply(self, type_id: int | None, unique_id: str, code: str, description: str) -> None:
        """A CALLRESULT or CALLERROR we cannot process earns no CALLERROR (that answers a CALL only):
        in 2.1 a CALLRESULTERROR, in 1.6 and 2.0.1 nothing (the caller drops it). A bad SEND or
        CALLRESULTERROR is never answered."""
        if (self._v21 and type_id in (frames.CALLRESULT, frames.CALLERROR)
                and 0 < len(unique_id) <= frames.MAX_UNIQUE_ID and unique_id != frames.UNKNOWN_ID):
            self._send(frames.encode_result_error(unique_id, code, description[:512]), frames.CALLRESULTERROR)
            self.ctx.metrics.result_errors[code] += 1

    def _unpublishable(self, unique_id: str, exc: _Unpublishable, text: str, type_id: int = frames.CALL) -> None:
        """A valid frame the bus cannot carry (its topic or its JSON): the same answer as a bad frame,
        and one log line now and then: a charge point sending thousands must not flood the log."""
        if type_id == frames.CALL:
            self._call_error(unique_id, exc.code, exc.description[:512])
        else:
            self._bad_reply(type_id, unique_id, exc.code, exc.description)
        self._dropped_event(exc.reason, text, exc.description)
        if self._unpublishable_lines is None:
            self._unpublishable_lines = Throttle(WARN_EVERY)
        held = self._unpublishable_lines.allow()
        if held is None:
            return
        more = f" ({held} more since the last warning)" if held else ""
        log.warning("frame %s of %s not published (%s): %s%s",
                    unique_id[:40], self.cid, exc.reason, exc.description[:200], more)

    def _prepare(self, template: TopicTemplate, action: str, type_: str, unique_id: str,
                 body: dict[str, Any]) -> tuple[str, bytes]:
        """The topic and payload of an upstream message, or `_Unpublishable` saying why not."""
        try:
            topic = self._topic(template, action, type_, unique_id)
        except TopicError as exc:
            raise _Unpublishable("InternalError", "invalid_topic",
                                 f"the frame cannot be published: its topic is not valid ({exc})") from None
        try:
            payload = frames.dumps(body)
        except frames.EncodeError as exc:
            raise _Unpublishable(frames.format_violation(self.proto_ver), "invalid_frame",
                                 f"the frame {exc}") from None
        return topic, payload

    def _upstream_call(self, call: frames.Call, text: str) -> None:
        if self.ctx.checks_upstream(self.cid, self._listener.checking):
            violation = self._check(call.action, "request", call.payload)
            if violation is not None:
                code, description = violation
                self._call_error(call.unique_id, code, description)
                self._dropped_event("schema_violation", text, description)
                return
        if call.action in fleet.WATCHED:  # what the dashboard shows: boot identity, connector statuses
            if self.fleet is None:
                self.fleet = FleetInfo()
            fleet.note(self.fleet, self.proto_ver, call.action, call.payload)
        # envelope.call_body, inlined on the hot path (tests/test_ocpp_envelope.py holds them equal)
        body = {"MessageTypeId": frames.CALL, "UniqueId": call.unique_id, "Action": call.action, "Payload": call.payload}
        template = self.ctx.override_topics.get(call.action, self.ctx.call_topic)
        try:
            topic, payload = self._prepare(template, call.action, "2", call.unique_id, body)
        except _Unpublishable as exc:
            self._unpublishable(call.unique_id, exc, text)
            return
        pending = self._pending_upstream
        pending[call.unique_id] = call.action
        if len(pending) > MAX_PENDING_UPSTREAM:
            pending.popitem(last=False)
        self._publish(topic, payload, body)

    def _upstream_reply(self, frame: frames.CallResult | frames.CallError, error: frames.CallError | None,
                        text: str) -> None:
        out = self._inflight
        action = out.action if out is not None and out.unique_id == frame.unique_id else None
        if action is not None and error is None and self.ctx.checks_upstream(self.cid, self._listener.checking):
            violation = self._check(action, "response", frame.payload)  # type: ignore[union-attr]  # error is None: a CallResult
            if violation is not None:
                self._bad_reply(frames.CALLRESULT, frame.unique_id, *violation)
                self._dropped_event("schema_violation", text, violation[1])
                if out is not None and out.reply is not None and not out.reply.done():
                    out.reply.set_exception(TimeoutError(f"the answer was refused by schema checking: {violation[1]}"))
                self._finish_inflight()
                return
        if error is None:
            # envelope.result_body, inlined on the hot path (tests/test_ocpp_envelope.py holds them equal)
            body: dict[str, Any] = {"MessageTypeId": frames.CALLRESULT, "UniqueId": frame.unique_id}
            if action is not None:
                body["Action"] = action
            body["Payload"] = frame.payload  # type: ignore[union-attr]  # error is None: a CallResult
            template, type_ = self.ctx.reply_topic, "3"
        else:
            body = envelope.error_body(frame.unique_id, action, error)
            template, type_ = self.ctx.error_topic, "4"
        try:
            topic, payload = self._prepare(template, action or "", type_, frame.unique_id, body)
        except _Unpublishable as exc:
            self._unpublishable(frame.unique_id, exc, text, frame.type_id)
            if action is not None:  # answered, though not forwardable: the next command may go
                if out is not None and out.reply is not None and not out.reply.done():
                    out.reply.set_exception(TimeoutError(f"the answer cannot be published: {exc.description}"))
                self._finish_inflight()
            return
        self._publish(topic, payload, body)
        if action is not None:
            if self._v21 and error is None:
                _remember(self._results_received, frame.unique_id, action)
            if out is not None and out.reply is not None and not out.reply.done():
                out.reply.set_result(body)
            self._finish_inflight()

    def _upstream_send(self, send: frames.Send, text: str) -> None:
        """2.1 SEND: checked and published like a CALL, never answered (not even when refused)."""
        if self.ctx.checks_upstream(self.cid, self._listener.checking):
            violation = self._check(send.action, "request", send.payload)
            if violation is not None:
                self._dropped_event("schema_violation", text, violation[1])
                return
        body = envelope.send_body(send.unique_id, send.action, send.payload)
        template = self.ctx.override_topics.get(send.action, self.ctx.call_topic)
        try:
            topic, payload = self._prepare(template, send.action, "6", send.unique_id, body)
        except _Unpublishable as exc:
            self._unpublishable(send.unique_id, exc, text, frames.SEND)
            return
        self._publish(topic, payload, body)

    def _upstream_result_error(self, error: frames.CallResultError, text: str) -> None:
        """2.1 CALLRESULTERROR: the charge point could not process a CALLRESULT the backend sent it;
        published on the error topic with the Action of the CALL that CALLRESULT answered (if remembered)."""
        action = self._results_sent.pop(error.unique_id, None)
        body = envelope.result_error_body(error.unique_id, action, error)
        try:
            topic, payload = self._prepare(self.ctx.error_topic, action or "", "5", error.unique_id, body)
        except _Unpublishable as exc:
            self._unpublishable(error.unique_id, exc, text, frames.CALLRESULTERROR)
            return
        self._publish(topic, payload, body)

    def _check(self, action: str, kind: Literal["request", "response"], payload: Any) -> tuple[str, str] | None:
        registry = self.ctx.registry
        assert registry is not None
        try:
            violation = registry.check(self.proto_ver, action, kind, payload)
        except UnknownAction:
            return "NotImplemented", f"no {kind} schema for action {_short(action)!r} in {self.proto_ver}"
        return None if violation is None else (violation.code, violation.description)

    def _topic(self, template: TopicTemplate, action: str, type_: str, unique_id: str) -> str:
        # cached per (template, action, type): a CALL and a SEND of one action share a template
        if self._generation != self.ctx.generation:
            self._topic_cache.clear()
            self._generation = self.ctx.generation
        if template.per_message:
            topic = self.mountpoint + template.render(self._vars(action, type_, unique_id))
            validate_name(topic)
            return topic
        key = (id(template), action, type_)
        cached = self._topic_cache.get(key)
        if cached is None:
            topic = self.mountpoint + template.render(self._vars(action, type_))
            validate_name(topic)  # checked once, when cached; raises TopicError
            if len(self._topic_cache) < MAX_CACHED_TOPICS:
                self._topic_cache[key] = topic
            return topic
        return cached

    def _vars(self, action: str, type_: str = "", unique_id: str = "") -> dict[str, str]:
        return {"cid": self.cid, "action": action, "type": type_, "id": unique_id, "proto_ver": self.proto_ver}

    def _publish(self, topic: str, payload: bytes, body: dict[str, Any]) -> None:
        self.ctx.bus.publish(Message(topic, payload, origin="ocpp", headers=self._headers, decoded=body))

    # --- downstream: bus → charge point -------------------------------------------------------

    def on_downstream(self, message: Message) -> None:
        if self.closed:
            return
        try:
            body = message.json()
        except orjson.JSONDecodeError:
            self._dropped_event("invalid_payload", _text(message.payload), "not valid JSON", message)
            return
        problem = envelope.check_downstream(body)
        if problem is None:
            wide = frames.wide_integer(message.payload)
            if wide is not None:
                problem = f"the integer {wide} is outside the range carried exactly ({frames.INT_MIN} to {frames.INT_MAX})"
        if problem:
            self._dropped_event("invalid_payload", _text(message.payload), problem, message)
            return
        type_id = body["MessageTypeId"]
        # only the broker can have handed a command to the old socket too; replies answer this socket's CALLs,
        # and what this node sends itself (its offline queue, its rules) reaches this socket alone
        if self.held and message.origin == "mqtt" and type_id in (frames.CALL, frames.SEND):
            self._dropped_event("takeover_pending", _text(message.payload), "published while the charge "
                                "point moved here (its takeover claim was not back yet)", message)
        elif type_id == frames.CALL:
            self._downstream_call(body, message)
        elif type_id <= frames.CALLERROR:
            self._downstream_reply(body, message)
        elif not self._v21:
            self._dropped_event("unsupported_message_type", _text(message.payload),
                                f"{frames.TYPE_NAMES[type_id]} is OCPP 2.1; this charge point speaks {self.proto_ver}",
                                message)
        elif type_id == frames.SEND:
            self._downstream_send(body, message)
        else:
            self._downstream_result_error(body, message)

    def _downstream_send(self, body: dict[str, Any], message: Message) -> None:
        """2.1 SEND: out at once (beside the in-flight CALL, never queued), no answer awaited."""
        checked = self._checked_request(body, message)
        if checked is None:
            return
        action, payload, unique_id = checked
        try:
            text = self._outbound(lambda: frames.encode_send(unique_id, action, payload))
        except Unsendable as exc:
            self._dropped_event(exc.reason, _text(message.payload), exc.description, message)
            return
        self._send(text, frames.SEND)
        self._delivered_event(message)

    def _downstream_result_error(self, body: dict[str, Any], message: Message) -> None:
        """2.1 CALLRESULTERROR: only about a recent CALLRESULT of this charge point's exchanges: one it
        sent (the spec's case: the backend could not process it), or one the backend sent it (kept for
        the charge point's own CALLRESULTERROR about it, so not forgotten here)."""
        unique_id = body["UniqueId"]
        received = self._results_received.pop(unique_id, None)
        action = received or self._results_sent.get(unique_id)
        if action is None:
            self._dropped_event("unknown_unique_id", _text(message.payload),
                                f"no recent CALLRESULT {unique_id!r} of this charge point", message)
            return
        try:
            text = self._outbound(lambda: envelope.downstream_error_frame(unique_id, body))
        except Unsendable as exc:
            if received is not None:
                self._results_received[unique_id] = received
            self._dropped_event(exc.reason, _text(message.payload), exc.description, message)
            return
        self._send(text, frames.CALLRESULTERROR)
        self._delivered_event(message)

    def _checked_request(self, body: dict[str, Any], message: Message) -> tuple[str, Any, str] | None:
        """A downstream CALL's or SEND's (action, payload, unique id), or None when its payload failed
        the schema check (dropped, with its event)."""
        action = body["Action"]
        payload = body.get("Payload", {})
        if self.ctx.checks_dnstream(self.cid, self._listener.checking):
            violation = self._check(action, "request", payload)
            if violation is not None:
                self._dropped_event("schema_violation", _text(message.payload), violation[1], message)
                return None
        return action, payload, body.get("UniqueId") or uuid.uuid4().hex[:36]

    def _downstream_call(self, body: dict[str, Any], message: Message) -> None:
        checked = self._checked_request(body, message)
        if checked is None:
            return
        action, payload, unique_id = checked
        out = _Outgoing(unique_id, action, payload, message)
        if self._inflight is None:
            self._send_call(out)
        elif len(self._queue) >= self.ctx.settings.dnstream.max_mqueue_len:
            self._dropped_event("queue_full", _text(message.payload), "the downstream queue is full", message)
        else:
            self._queue.append(out)

    def _send_call(self, out: _Outgoing) -> bool:
        """Send a CALL and hold the in-flight slot until its answer; a CALL that cannot be sent is
        dropped without taking the slot (so the next one goes), and False returned."""
        try:
            text = self._outbound(lambda: frames.encode_call(out.unique_id, out.action, out.payload))
        except Unsendable as exc:
            if out.reply is not None and not out.reply.done():
                out.reply.set_exception(InvalidCommand(exc.description))
            self._dropped_event(exc.reason, _text(out.message.payload), exc.description, out.message)
            return False
        self._inflight = out
        self._send(text, frames.CALL)
        self._delivered_event(out.message)
        out.timer = self._loop.call_later(self.ctx.settings.dnstream.awaiting_timeout, self._call_timed_out, out)
        return True

    def _outbound(self, encode: Callable[[], str]) -> str:
        settings = getattr(self._listener, "settings", None)
        return frame_text(encode, int(settings.websocket.max_frame_size) if settings is not None else 0)

    def _call_timed_out(self, out: _Outgoing) -> None:
        if self._inflight is out and not self.closed:
            self._drop_outgoing(out, "timeout")
            self._inflight = None
            self._next_call()

    def _finish_inflight(self) -> None:
        out = self._inflight
        if out is not None:
            if out.timer:
                out.timer.cancel()
            self._inflight = None
            self._next_call()

    def _next_call(self) -> None:
        while self._inflight is None and self._queue and not self.closed:
            out = self._queue.popleft()
            if out.reply is not None and out.reply.done():
                # an admin API call whose caller gave up while it waited: do not send it any more
                self._dropped_event("timeout", _text(out.message.payload), "the API call timed out before it was sent", out.message)
                continue
            self._send_call(out)

    def _downstream_reply(self, body: dict[str, Any], message: Message) -> None:
        unique_id = body["UniqueId"]
        action = self._pending_upstream.pop(unique_id, None)
        if action is None:
            self._dropped_event("unknown_unique_id", _text(message.payload),
                                f"no CALL {unique_id!r} of this charge point is waiting for an answer", message)
            return
        if body["MessageTypeId"] == frames.CALLRESULT:
            payload = body.get("Payload", {})
            if self.ctx.checks_dnstream(self.cid, self._listener.checking):
                violation = self._check(action, "response", payload)
                if violation is not None:
                    self._pending_upstream[unique_id] = action  # still unanswered: a good reply may follow
                    self._dropped_event("schema_violation", _text(message.payload), violation[1], message)
                    return
            try:
                text = self._outbound(lambda: frames.encode_result(unique_id, payload))
            except Unsendable as exc:
                self._pending_upstream[unique_id] = action  # still unanswered: a good reply may follow
                self._dropped_event(exc.reason, _text(message.payload), exc.description, message)
                return
            self._send(text, frames.CALLRESULT)
            if self._v21:
                _remember(self._results_sent, unique_id, action)
            if action == "BootNotification" and isinstance(payload, dict) and payload.get("status") == "Accepted":
                interval = payload.get("interval")
                if isinstance(interval, (int, float)) and not isinstance(interval, bool) and interval > 0:
                    self.set_keepalive(interval)
                if self.on_accepted is not None:
                    self.on_accepted()
        else:
            try:
                text = self._outbound(lambda: envelope.downstream_error_frame(unique_id, body))
            except Unsendable as exc:
                self._pending_upstream[unique_id] = action
                self._dropped_event(exc.reason, _text(message.payload), exc.description, message)
                return
            self._send(text, frames.CALLERROR)
        self._delivered_event(message)

    # --- output and events ------------------------------------------------------------------

    def _send(self, text: str, type_id: int) -> None:
        if self.closed:
            return
        self.transport.send_text(text)
        if self.tap is not None:
            self.tap(self.cid, "out", text)
        self.send_cnt += 1
        metrics = self.ctx.metrics
        metrics.frames_out += 1
        metrics.sent_by_type[type_id] += 1
        metrics.bytes_out += len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))  # bytes

    def _delivered_event(self, message: Message) -> None:
        if not self.ctx.wants_event("message_delivered"):
            return
        self.ctx.publish_event("message_delivered", events.message_delivered(self, message))

    def _dropped_event(self, reason: str, payload: str, description: str, message: Message | None = None) -> None:
        self.ctx.metrics.drops[reason] += 1
        if not self.ctx.wants_event("message_dropped"):
            return
        fields = events.message_fields(self, message, payload)
        fields["reason"] = reason
        fields["description"] = description
        self.ctx.publish_event("message_dropped", fields)

    def _drop_outgoing(self, out: _Outgoing, reason: str) -> None:
        if out.timer:
            out.timer.cancel()
        if out.reply is not None and not out.reply.done():
            out.reply.set_exception(TimeoutError(reason))
        self._dropped_event(reason, _text(out.message.payload), f"CALL {out.unique_id} {out.action} not answered", out.message)

    def call(self, action: str, payload: dict[str, Any], unique_id: str | None = None) -> asyncio.Future[dict[str, Any]]:
        """Send a CALL through the downstream queue (one in flight, as every CALL); the future
        gets the charge point's answer as EMQX's reply payload, or TimeoutError if it is dropped
        (awaiting_timeout, disconnect). Raises QueueFull at once when the queue is full, and
        InvalidCommand when the CALL cannot be encoded or is over the frame size."""
        unique_id = unique_id or uuid.uuid4().hex[:36]
        body = envelope.call_body(unique_id, action, payload)
        try:
            self._outbound(lambda: frames.encode_call(unique_id, action, payload))
        except Unsendable as exc:  # refused at once: the API answers it, nothing is queued
            self.ctx.metrics.drops[exc.reason] += 1
            raise InvalidCommand(exc.description) from None
        message = Message(self.mountpoint + "admin/call", orjson.dumps(body), origin="api", decoded=body)
        out = _Outgoing(unique_id, action, payload, message)
        out.reply = self._loop.create_future()
        if self._inflight is None:
            self._send_call(out)
        elif len(self._queue) >= self.ctx.settings.dnstream.max_mqueue_len:
            raise QueueFull(f"the downstream queue of {self.cid} is full")
        else:
            self._queue.append(out)
        return out.reply

    def waiting_calls(self) -> list[tuple[str, _Outgoing]]:
        """The CALLs in flight ("inflight") and queued ("queued"), in the order they go out."""
        found = [("inflight", self._inflight)] if self._inflight is not None else []
        return found + [("queued", out) for out in self._queue]

    def drop_queued(self, reason: str) -> int:
        """Drop the queued CALLs (not the one in flight) with `reason`; how many."""
        count = len(self._queue)
        while self._queue:
            self._drop_outgoing(self._queue.popleft(), reason)
        return count

    @property
    def last_message_at(self) -> float | None:
        """When the last frame came from the charge point (ms since the epoch), None before the first."""
        if not self._got_frame:
            return None
        return time.time() * 1000 - (self._loop.time() - self._last_frame) * 1000

    def info(self) -> dict[str, Any]:
        """The charge point as the admin API lists it (EMQX's client fields)."""
        return {
            "clientid": self.cid,
            "username": self.username,
            "ip_address": self.peer[0],
            "port": self.peer[1],
            "proto_name": "OCPP",
            "proto_ver": self.proto_ver,
            "listener": self.listener,
            "mountpoint": self.mountpoint,
            "connected_at": self.connected_at,
            "keepalive": self.keepalive,
            "mqueue_len": len(self._queue),
            "inflight_cnt": 1 if self._inflight else 0,
            "recv_cnt": self.recv_cnt,
            "send_cnt": self.send_cnt,
        }


def _remember(recent: OrderedDict[str, str], unique_id: str, action: str) -> None:
    """Keep `unique_id` → `action` among the last MAX_RECENT_RESULTS."""
    recent[unique_id] = action
    recent.move_to_end(unique_id)
    if len(recent) > MAX_RECENT_RESULTS:
        recent.popitem(last=False)


def _short(text: str, limit: int = 64) -> str:
    """A name from the peer, cut for a message: an Action may be 70,000 characters long."""
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} characters)"


def _text(payload: bytes) -> str:
    return payload.decode("utf-8", "replace")
