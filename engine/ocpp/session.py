"""One connected charge point: its frames in (upstream), its lifecycle and liveness; its commands
out through its `Downstream` (engine/ocpp/downstream.py).

The session knows OCPP and the bus, nothing about sockets (it is handed a `Transport`) or MQTT.
Upstream, each frame becomes one bus message on the topic its template names (`upstream_topics`).
A CALL of the charge point is remembered until the backend's answer comes downstream; a CALLRESULT
or CALLERROR answering the backend's CALL in flight is published with that CALL's Action and lets
the next one go. OCPP 2.1's SEND is published like a CALL, never answered; its CALLRESULTERROR names
the Action of the CALL whose CALLRESULT it refuses (the downstream remembers those). A bad reply
(CALLRESULT or CALLERROR) never earns a CALLERROR: in 1.6 and 2.0.1 it is dropped, in 2.1 answered
with a CALLRESULTERROR.

The downstream half is fed by the bus subscription directly (no extra call layer) and sees the
session only through its `Channel`: `send_frame`, `dropped`, `delivered`, `check`, `boot_accepted`.
Beside them: what a session is handed (`seams`), `events`, `envelope`, `keepalive`, `registry`,
`handshake` and `transport`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

from engine.bus import Message
from engine.log import Throttle
from engine.ocpp import envelope, events, fleet, frames
from engine.ocpp.context import TopicTemplate
from engine.ocpp.downstream import Downstream, _Outgoing
# where callers and tests have always found them
from engine.ocpp.downstream import MAX_RECENT_RESULTS as MAX_RECENT_RESULTS
from engine.ocpp.downstream import InvalidCommand as InvalidCommand
from engine.ocpp.downstream import QueueFull as QueueFull
from engine.ocpp.fleet import FleetInfo
from engine.ocpp.keepalive import Keepalive
from engine.ocpp.schemas import UnknownAction
from engine.ocpp.seams import ListenerView, SessionContext, Transport
from engine.ocpp.trace import Tap
from engine.ocpp.upstream_topics import Unpublishable, UpstreamTopics

log = logging.getLogger("ocppgw.session")

MAX_PENDING_UPSTREAM = 32  # CALLs of the charge point the backend has not answered yet
WARN_EVERY = 60.0  # seconds: at most one warning per charge point about frames it cannot send us


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
        self._headers = {"clientid": cid, "username": username, "peerhost": peer[0], "proto_ver": proto_ver,
                         "node": ctx.node}
        self._topics = UpstreamTopics(ctx, cid, proto_ver)
        self._pending_upstream: OrderedDict[str, str] = OrderedDict()  # UniqueId → Action
        self._v21 = frames.is_v21(proto_ver)  # has CALLRESULTERROR and SEND
        self.down = Downstream(self, ctx, listener, self._pending_upstream)  # commands to the charge point
        self._got_frame = False
        self._last_frame = self._loop.time()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._unpublishable_lines: Throttle | None = None  # made on the first such frame
        self.fleet: FleetInfo | None = None  # boot identity, connector statuses (engine/ocpp/fleet.py)
        self.tap: Tap | None = None  # set by the tracer while somebody traces this id
        self.on_accepted: Callable[[], None] | None = None  # its BootNotification accepted (engine/ocpp/offline.py)

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe downstream, announce the connection, arm the timers. With takeover claims
        (engine/ocpp/takeover.py), commands wait for the claim to come back (`release`)."""
        self.down.subscribe()  # first: the claim goes out once this subscription is on the broker
        claims = getattr(self.ctx, "claims", None)
        self.down.held = claims is not None and claims.hold(self)
        self.ctx.tracer.attach(self)
        self.ctx.publish_event("client_connected", events.client_connected(
            self, keepalive=self.keepalive, connected_at=self.connected_at, mountpoint=self.mountpoint,
        ))
        idle = self.ctx.settings.idle_timeout
        if idle > 0:
            self._idle_timer = self._loop.call_later(idle, self._idle_expired)
        self._arm_keepalive()

    @property
    def held(self) -> bool:
        """Its takeover claim is out: a command may have gone to the old socket too."""
        return self.down.held

    def release(self) -> None:
        """Take commands from now on: this is the newest connection of the charge point."""
        self.down.held = False

    def resubscribe(self, mountpoint: str) -> None:
        """After a reload: the subscription follows the mountpoint and the topic (`Downstream.subscribe`)."""
        self.mountpoint = mountpoint
        self.down.subscribe()

    def close(self, reason: str, code: int = 1000) -> None:
        """End the session (idempotent): unsubscribe, drop what waits, tell the rules why."""
        if self.closed:
            return
        self.closed = True
        for timer in (self._idle_timer, self._keepalive_timer):
            if timer:
                timer.cancel()
        self.down.unsubscribe()
        self.ctx.sessions.remove(self)
        dropped = "takenover" if reason == "takenover" else "client_disconnected"  # it moved, or left
        self.down.drop_all(dropped)
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
        self.dropped("invalid_frame", raw if isinstance(raw, str) else raw[:1024].hex(), exc.description)

    def _call_error(self, unique_id: str, code: str, description: str) -> None:
        """Answer a CALL of the charge point with a CALLERROR, counted by code."""
        self.send_frame(frames.encode_error(unique_id, code, description), frames.CALLERROR)
        self.ctx.metrics.errors[code] += 1

    def _bad_reply(self, type_id: int | None, unique_id: str, code: str, description: str) -> None:
        """A CALLRESULT or CALLERROR we cannot process earns no CALLERROR (that answers a CALL only):
        in 2.1 a CALLRESULTERROR, in 1.6 and 2.0.1 nothing (the caller drops it). A bad SEND or
        CALLRESULTERROR is never answered."""
        if (self._v21 and type_id in (frames.CALLRESULT, frames.CALLERROR)
                and 0 < len(unique_id) <= frames.MAX_UNIQUE_ID and unique_id != frames.UNKNOWN_ID):
            self.send_frame(frames.encode_result_error(unique_id, code, description[:512]), frames.CALLRESULTERROR)
            self.ctx.metrics.result_errors[code] += 1

    def _unpublishable(self, unique_id: str, exc: Unpublishable, text: str, type_id: int = frames.CALL) -> None:
        """A valid frame the bus cannot carry (its topic or its JSON): the same answer as a bad frame,
        and one log line now and then: a charge point sending thousands must not flood the log."""
        if type_id == frames.CALL:
            self._call_error(unique_id, exc.code, exc.description[:512])
        else:
            self._bad_reply(type_id, unique_id, exc.code, exc.description)
        self.dropped(exc.reason, text, exc.description)
        if self._unpublishable_lines is None:
            self._unpublishable_lines = Throttle(WARN_EVERY)
        held = self._unpublishable_lines.allow()
        if held is None:
            return
        more = f" ({held} more since the last warning)" if held else ""
        log.warning("frame %s of %s not published (%s): %s%s",
                    unique_id[:40], self.cid, exc.reason, exc.description[:200], more)

    def _upstream_call(self, call: frames.Call, text: str) -> None:
        if self.ctx.checks_upstream(self.cid, self._listener.checking):
            violation = self.check(call.action, "request", call.payload)
            if violation is not None:
                code, description = violation
                self._call_error(call.unique_id, code, description)
                self.dropped("schema_violation", text, description)
                return
        if call.action in fleet.WATCHED:  # what the dashboard shows: boot identity, connector statuses
            if self.fleet is None:
                self.fleet = FleetInfo(self.ctx.settings.max_connectors_per_client, self.ctx.metrics.bounded)
            fleet.note(self.fleet, self.proto_ver, call.action, call.payload)
        # envelope.call_body, inlined on the hot path (tests/test_ocpp_envelope.py holds them equal)
        body = {"MessageTypeId": frames.CALL, "UniqueId": call.unique_id, "Action": call.action, "Payload": call.payload}
        template = self.ctx.override_topics.get(call.action, self.ctx.call_topic)
        try:
            topic, payload = self._topics.prepare(self.mountpoint, template, call.action, "2", call.unique_id, body)
        except Unpublishable as exc:
            self._unpublishable(call.unique_id, exc, text)
            return
        pending = self._pending_upstream
        pending[call.unique_id] = call.action
        if len(pending) > MAX_PENDING_UPSTREAM:
            pending.popitem(last=False)
        self._publish(topic, payload, body)

    def _upstream_reply(self, frame: frames.CallResult | frames.CallError, error: frames.CallError | None,
                        text: str) -> None:
        out = self.down.inflight
        if out is not None and out.unique_id != frame.unique_id:
            out = None  # answers no CALL of ours that still waits
        action = out.action if out is not None else None
        if out is not None and error is None and self.ctx.checks_upstream(self.cid, self._listener.checking):
            violation = self.check(out.action, "response", frame.payload)  # type: ignore[union-attr]  # error is None: a CallResult
            if violation is not None:
                self._bad_reply(frames.CALLRESULT, frame.unique_id, *violation)
                self.dropped("schema_violation", text, violation[1])
                self.down.answered(out, TimeoutError(f"the answer was refused by schema checking: {violation[1]}"))
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
            topic, payload = self._topics.prepare(self.mountpoint, template, action or "", type_, frame.unique_id, body)
        except Unpublishable as exc:
            self._unpublishable(frame.unique_id, exc, text, frame.type_id)
            if out is not None:  # answered, though not forwardable: the next command may go
                self.down.answered(out, TimeoutError(f"the answer cannot be published: {exc.description}"))
            return
        self._publish(topic, payload, body)
        if out is not None:
            if self._v21 and error is None:
                self.down.result_received(frame.unique_id, out.action)
            self.down.answered(out, body)

    def _upstream_send(self, send: frames.Send, text: str) -> None:
        """2.1 SEND: checked and published like a CALL, never answered (not even when refused)."""
        if self.ctx.checks_upstream(self.cid, self._listener.checking):
            violation = self.check(send.action, "request", send.payload)
            if violation is not None:
                self.dropped("schema_violation", text, violation[1])
                return
        body = envelope.send_body(send.unique_id, send.action, send.payload)
        template = self.ctx.override_topics.get(send.action, self.ctx.call_topic)
        try:
            topic, payload = self._topics.prepare(self.mountpoint, template, send.action, "6", send.unique_id, body)
        except Unpublishable as exc:
            self._unpublishable(send.unique_id, exc, text, frames.SEND)
            return
        self._publish(topic, payload, body)

    def _upstream_result_error(self, error: frames.CallResultError, text: str) -> None:
        """2.1 CALLRESULTERROR: the charge point could not process a CALLRESULT the backend sent it;
        published on the error topic with the Action of the CALL that CALLRESULT answered (if remembered)."""
        action = self.down.result_refused(error.unique_id)
        body = envelope.result_error_body(error.unique_id, action, error)
        try:
            topic, payload = self._topics.prepare(self.mountpoint, self.ctx.error_topic, action or "", "5",
                                                  error.unique_id, body)
        except Unpublishable as exc:
            self._unpublishable(error.unique_id, exc, text, frames.CALLRESULTERROR)
            return
        self._publish(topic, payload, body)

    def check(self, action: str, kind: Literal["request", "response"], payload: Any) -> tuple[str, str] | None:
        registry = self.ctx.registry
        assert registry is not None
        try:
            violation = registry.check(self.proto_ver, action, kind, payload)
        except UnknownAction:
            return "NotImplemented", f"no {kind} schema for action {_short(action)!r} in {self.proto_ver}"
        return None if violation is None else (violation.code, violation.description)

    def _publish(self, topic: str, payload: bytes, body: dict[str, Any]) -> None:
        self.ctx.bus.publish(Message(topic, payload, origin="ocpp", headers=self._headers, decoded=body))

    # --- downstream: bus → charge point (engine/ocpp/downstream.py) -----------------------------

    def on_downstream(self, message: Message) -> None:
        """A command for the charge point (the bus subscription goes to `down.on_downstream` directly)."""
        self.down.on_downstream(message)

    def call(self, action: str, payload: dict[str, Any], unique_id: str | None = None) -> asyncio.Future[dict[str, Any]]:
        """A CALL from the admin API: `Downstream.call`."""
        return self.down.call(action, payload, unique_id)

    def waiting_calls(self) -> list[tuple[str, _Outgoing]]:
        """The CALLs in flight ("inflight") and queued ("queued"), in the order they go out."""
        return self.down.waiting_calls()

    def drop_queued(self, reason: str) -> int:
        """Drop the queued CALLs (not the one in flight) with `reason`; how many."""
        return self.down.drop_queued(reason)

    def boot_accepted(self, interval: Any) -> None:
        """The backend accepted the charge point's BootNotification: its interval (if one) paces the
        keepalive, and whoever waited for it (the offline queue) is told."""
        if isinstance(interval, (int, float)) and not isinstance(interval, bool) and interval > 0:
            self.set_keepalive(interval)
        if self.on_accepted is not None:
            self.on_accepted()

    # --- output and events ------------------------------------------------------------------

    def send_frame(self, text: str, type_id: int) -> None:
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

    def delivered(self, message: Message) -> None:
        if not self.ctx.wants_event("message_delivered"):
            return
        self.ctx.publish_event("message_delivered", events.message_delivered(self, message))

    def dropped(self, reason: str, payload: str, description: str, message: Message | None = None) -> None:
        self.ctx.metrics.drops[reason] += 1
        if not self.ctx.wants_event("message_dropped"):
            return
        fields = events.message_fields(self, message, payload)
        fields["reason"] = reason
        fields["description"] = description
        self.ctx.publish_event("message_dropped", fields)

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
            "mqueue_len": len(self.down.queue),
            "inflight_cnt": 1 if self.down.inflight else 0,
            "recv_cnt": self.recv_cnt,
            "send_cnt": self.send_cnt,
        }


def _short(text: str, limit: int = 64) -> str:
    """A name from the peer, cut for a message: an Action may be 70,000 characters long."""
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} characters)"
