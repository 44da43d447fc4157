"""The downstream half of a session: what the backend sends to one charge point.

The charge point's topic on the bus feeds `Downstream.on_downstream` directly (`subscribe`), so a
command costs no call layer through the session. CALLs go out one at a time: the next
waits in the queue (`dnstream.max_mqueue_len`) for the answer to the one in flight or for
`awaiting_timeout`. Replies (CALLRESULT, CALLERROR) go out at once if they answer a CALL of the
charge point that still waits for the backend (the session's table of them, shared). CALLs made
through the admin API (`call`) take the same queue and get the answer as a future.

OCPP 2.1's SEND goes out at once, beside the in-flight CALL, and is never answered. Its
CALLRESULTERROR goes out only about a recent CALLRESULT of this charge point's exchanges, one it
sent or one the backend sent it: each side's last `gateway.ocpp.max_remembered_results` (read when
the charge point connects) are remembered here.

Every command that does not reach the charge point is dropped with a reason (counted, and a
`message_dropped` event): invalid, schema violation, queue full, unsendable, timeout, the charge
point gone or moved away, or published while its takeover claim was out (`held`).

This half sees the session only through `Channel` (send a frame, event a drop or a delivery,
check a payload, the boot's acceptance) and never imports it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, Literal, Protocol

import orjson

from engine.bus import Bus, Message, Subscription
from engine.config.schema import OcppSettings
from engine.ocpp import envelope, frames
from engine.ocpp.context import GatewayMetrics, TopicTemplate
from engine.ocpp.outbound import Unsendable, frame_text
from engine.ocpp.seams import ListenerView

MAX_RECENT_RESULTS = 32  # default of gateway.ocpp.max_remembered_results (2.1: CALLRESULTs kept per direction)
BOUND_KEY = "gateway.ocpp.max_remembered_results"  # its count in GatewayMetrics.bounded: results forgotten


class QueueFull(Exception):
    """The charge point's downstream queue is full."""


class InvalidCommand(ValueError):
    """A CALL that cannot be sent to the charge point (cannot be encoded, or over its frame size)."""


class Channel(Protocol):
    """The session, as its downstream half uses it."""

    cid: str
    proto_ver: str
    mountpoint: str  # moves on reload
    closed: bool

    def send_frame(self, text: str, type_id: int) -> None: ...
    def dropped(self, reason: str, payload: str, description: str, message: Message | None = None) -> None: ...
    def delivered(self, message: Message) -> None: ...
    def check(self, action: str, kind: Literal["request", "response"], payload: Any) -> tuple[str, str] | None: ...
    def boot_accepted(self, interval: Any) -> None: ...


class DownstreamContext(Protocol):
    """What the downstream reads of the gateway (live: a reload replaces the settings and the topic)."""

    bus: Bus
    metrics: GatewayMetrics
    settings: OcppSettings
    dnstream_topic: TopicTemplate

    def checks_dnstream(self, cid: str, listener_mode: str | None = None) -> bool: ...


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


class Downstream:
    __slots__ = ("_channel", "_ctx", "_listener", "_loop", "_v21", "_pending_upstream", "_subscription", "queue",
                 "inflight", "held", "results_sent", "results_received", "_max_results")

    def __init__(self, channel: Channel, ctx: DownstreamContext, listener: ListenerView,
                 pending_upstream: OrderedDict[str, str]) -> None:
        self._channel = channel
        self._ctx = ctx
        self._listener = listener
        self._loop = asyncio.get_running_loop()
        self._v21 = frames.is_v21(channel.proto_ver)  # has CALLRESULTERROR and SEND
        self._pending_upstream = pending_upstream  # UniqueId → Action: the charge point's CALLs (the session fills it)
        self._subscription: Subscription | None = None
        self.queue: deque[_Outgoing] = deque()
        self.inflight: _Outgoing | None = None
        self.held = False  # its takeover claim is out: a command may have gone to the old socket too
        # 2.1 only: UniqueId → Action of the CALLRESULTs sent to the charge point / received from it
        self.results_sent: OrderedDict[str, str] = OrderedDict()
        self.results_received: OrderedDict[str, str] = OrderedDict()
        self._max_results = ctx.settings.max_remembered_results if self._v21 else 0

    # --- bus → charge point -------------------------------------------------------------------

    def subscribe(self) -> None:
        """Take the charge point's topic on the bus; after a reload, move to it if the mountpoint or the
        downstream topic changed (the new subscription is made before the old goes, so no command falls
        in between), or leave it be: every reload passes here for every session."""
        channel, old = self._channel, self._subscription
        topic_filter = channel.mountpoint + self._ctx.dnstream_topic.render(
            {"cid": channel.cid, "action": "", "type": "", "id": "", "proto_ver": channel.proto_ver})
        if old is not None and old.topic_filter == topic_filter:
            return
        self._subscription = self._ctx.bus.subscribe(topic_filter, self.on_downstream, remote=True,
                                                     name=f"session:{channel.cid}")
        if old is not None:
            self._ctx.bus.unsubscribe(old)

    def unsubscribe(self) -> None:
        if self._subscription is not None:
            self._ctx.bus.unsubscribe(self._subscription)

    def on_downstream(self, message: Message) -> None:
        channel = self._channel
        if channel.closed:
            return
        try:
            body = message.json()
        except orjson.JSONDecodeError:
            channel.dropped("invalid_payload", _text(message.payload), "not valid JSON", message)
            return
        problem = envelope.check_downstream(body)
        if problem is None:
            wide = frames.wide_integer(message.payload)
            if wide is not None:
                problem = f"the integer {wide} is outside the range carried exactly ({frames.INT_MIN} to {frames.INT_MAX})"
        if problem:
            channel.dropped("invalid_payload", _text(message.payload), problem, message)
            return
        type_id = body["MessageTypeId"]
        # only the broker can have handed a command to the old socket too; replies answer this socket's CALLs,
        # and what this node sends itself (its offline queue, its rules) reaches this socket alone
        if self.held and message.origin == "mqtt" and type_id in (frames.CALL, frames.SEND):
            channel.dropped("takeover_pending", _text(message.payload), "published while the charge "
                            "point moved here (its takeover claim was not back yet)", message)
        elif type_id == frames.CALL:
            self._downstream_call(body, message)
        elif type_id <= frames.CALLERROR:
            self._downstream_reply(body, message)
        elif not self._v21:
            channel.dropped("unsupported_message_type", _text(message.payload),
                            f"{frames.TYPE_NAMES[type_id]} is OCPP 2.1; this charge point speaks {channel.proto_ver}",
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
            self._channel.dropped(exc.reason, _text(message.payload), exc.description, message)
            return
        self._channel.send_frame(text, frames.SEND)
        self._channel.delivered(message)

    def _downstream_result_error(self, body: dict[str, Any], message: Message) -> None:
        """2.1 CALLRESULTERROR: only about a recent CALLRESULT of this charge point's exchanges: one it
        sent (the spec's case: the backend could not process it), or one the backend sent it (kept for
        the charge point's own CALLRESULTERROR about it, so not forgotten here)."""
        unique_id = body["UniqueId"]
        received = self.results_received.pop(unique_id, None)
        action = received or self.results_sent.get(unique_id)
        if action is None:
            self._channel.dropped("unknown_unique_id", _text(message.payload),
                                  f"no recent CALLRESULT {unique_id!r} of this charge point", message)
            return
        try:
            text = self._outbound(lambda: envelope.downstream_error_frame(unique_id, body))
        except Unsendable as exc:
            if received is not None:
                self.results_received[unique_id] = received
            self._channel.dropped(exc.reason, _text(message.payload), exc.description, message)
            return
        self._channel.send_frame(text, frames.CALLRESULTERROR)
        self._channel.delivered(message)

    def _checked_request(self, body: dict[str, Any], message: Message) -> tuple[str, Any, str] | None:
        """A downstream CALL's or SEND's (action, payload, unique id), or None when its payload failed
        the schema check (dropped, with its event)."""
        action = body["Action"]
        payload = body.get("Payload", {})
        if self._ctx.checks_dnstream(self._channel.cid, self._listener.checking):
            violation = self._channel.check(action, "request", payload)
            if violation is not None:
                self._channel.dropped("schema_violation", _text(message.payload), violation[1], message)
                return None
        return action, payload, body.get("UniqueId") or uuid.uuid4().hex[:36]

    def _downstream_call(self, body: dict[str, Any], message: Message) -> None:
        checked = self._checked_request(body, message)
        if checked is None:
            return
        action, payload, unique_id = checked
        out = _Outgoing(unique_id, action, payload, message)
        if self.inflight is None:
            self._send_call(out)
        elif len(self.queue) >= self._ctx.settings.dnstream.max_mqueue_len:
            self._channel.dropped("queue_full", _text(message.payload), "the downstream queue is full", message)
        else:
            self.queue.append(out)

    def _downstream_reply(self, body: dict[str, Any], message: Message) -> None:
        channel = self._channel
        unique_id = body["UniqueId"]
        action = self._pending_upstream.pop(unique_id, None)
        if action is None:
            channel.dropped("unknown_unique_id", _text(message.payload),
                            f"no CALL {unique_id!r} of this charge point is waiting for an answer", message)
            return
        if body["MessageTypeId"] == frames.CALLRESULT:
            payload = body.get("Payload", {})
            if self._ctx.checks_dnstream(channel.cid, self._listener.checking):
                violation = channel.check(action, "response", payload)
                if violation is not None:
                    self._pending_upstream[unique_id] = action  # still unanswered: a good reply may follow
                    channel.dropped("schema_violation", _text(message.payload), violation[1], message)
                    return
            try:
                text = self._outbound(lambda: frames.encode_result(unique_id, payload))
            except Unsendable as exc:
                self._pending_upstream[unique_id] = action  # still unanswered: a good reply may follow
                channel.dropped(exc.reason, _text(message.payload), exc.description, message)
                return
            channel.send_frame(text, frames.CALLRESULT)
            if self._v21:
                self._remember(self.results_sent, unique_id, action)
            if action == "BootNotification" and isinstance(payload, dict) and payload.get("status") == "Accepted":
                channel.boot_accepted(payload.get("interval"))
        else:
            try:
                text = self._outbound(lambda: envelope.downstream_error_frame(unique_id, body))
            except Unsendable as exc:
                self._pending_upstream[unique_id] = action
                channel.dropped(exc.reason, _text(message.payload), exc.description, message)
                return
            channel.send_frame(text, frames.CALLERROR)
        channel.delivered(message)

    def _outbound(self, encode: Callable[[], str]) -> str:
        settings = getattr(self._listener, "settings", None)
        return frame_text(encode, int(settings.websocket.max_frame_size) if settings is not None else 0)

    # --- the in-flight CALL and the queue --------------------------------------------------------

    def _send_call(self, out: _Outgoing) -> bool:
        """Send a CALL and hold the in-flight slot until its answer; a CALL that cannot be sent is
        dropped without taking the slot (so the next one goes), and False returned."""
        try:
            text = self._outbound(lambda: frames.encode_call(out.unique_id, out.action, out.payload))
        except Unsendable as exc:
            if out.reply is not None and not out.reply.done():
                out.reply.set_exception(InvalidCommand(exc.description))
            self._channel.dropped(exc.reason, _text(out.message.payload), exc.description, out.message)
            return False
        self.inflight = out
        self._channel.send_frame(text, frames.CALL)
        self._channel.delivered(out.message)
        out.timer = self._loop.call_later(self._ctx.settings.dnstream.awaiting_timeout, self._call_timed_out, out)
        return True

    def _call_timed_out(self, out: _Outgoing) -> None:
        if self.inflight is out and not self._channel.closed:
            self._drop_outgoing(out, "timeout")
            self.inflight = None
            self._next_call()

    def answered(self, out: _Outgoing, outcome: dict[str, Any] | BaseException) -> None:
        """The charge point answered the CALL in flight (`out`): hand the API caller (if any) the
        answer published, or the exception saying why none was, and let the next CALL go."""
        if out.reply is not None and not out.reply.done():
            if isinstance(outcome, BaseException):
                out.reply.set_exception(outcome)
            else:
                out.reply.set_result(outcome)
        if self.inflight is out:
            if out.timer:
                out.timer.cancel()
            self.inflight = None
            self._next_call()

    def _next_call(self) -> None:
        while self.inflight is None and self.queue and not self._channel.closed:
            out = self.queue.popleft()
            if out.reply is not None and out.reply.done():
                # an admin API call whose caller gave up while it waited: do not send it any more
                self._channel.dropped("timeout", _text(out.message.payload),
                                      "the API call timed out before it was sent", out.message)
                continue
            self._send_call(out)

    def _drop_outgoing(self, out: _Outgoing, reason: str) -> None:
        if out.timer:
            out.timer.cancel()
        if out.reply is not None and not out.reply.done():
            out.reply.set_exception(TimeoutError(reason))
        self._channel.dropped(reason, _text(out.message.payload), f"CALL {out.unique_id} {out.action} not answered",
                              out.message)

    def call(self, action: str, payload: dict[str, Any], unique_id: str | None = None) -> asyncio.Future[dict[str, Any]]:
        """Send a CALL through the queue (one in flight, as every CALL); the future gets the charge
        point's answer as EMQX's reply payload, or TimeoutError if it is dropped (awaiting_timeout,
        disconnect). Raises QueueFull at once when the queue is full, and InvalidCommand when the
        CALL cannot be encoded or is over the frame size."""
        unique_id = unique_id or uuid.uuid4().hex[:36]
        body = envelope.call_body(unique_id, action, payload)
        try:
            self._outbound(lambda: frames.encode_call(unique_id, action, payload))
        except Unsendable as exc:  # refused at once: the API answers it, nothing is queued
            self._ctx.metrics.drops[exc.reason] += 1
            raise InvalidCommand(exc.description) from None
        message = Message(self._channel.mountpoint + "admin/call", orjson.dumps(body), origin="api", decoded=body)
        out = _Outgoing(unique_id, action, payload, message)
        out.reply = self._loop.create_future()
        if self.inflight is None:
            self._send_call(out)
        elif len(self.queue) >= self._ctx.settings.dnstream.max_mqueue_len:
            raise QueueFull(f"the downstream queue of {self._channel.cid} is full")
        else:
            self.queue.append(out)
        return out.reply

    def waiting_calls(self) -> list[tuple[str, _Outgoing]]:
        """The CALLs in flight ("inflight") and queued ("queued"), in the order they go out."""
        found = [("inflight", self.inflight)] if self.inflight is not None else []
        return found + [("queued", out) for out in self.queue]

    def drop_queued(self, reason: str) -> int:
        """Drop the queued CALLs (not the one in flight) with `reason`; how many."""
        count = len(self.queue)
        while self.queue:
            self._drop_outgoing(self.queue.popleft(), reason)
        return count

    def drop_all(self, reason: str) -> None:
        """The session ends: drop the CALL in flight, then the queued ones, with `reason`."""
        if self.inflight:
            self._drop_outgoing(self.inflight, reason)
            self.inflight = None
        self.drop_queued(reason)

    # --- 2.1: the recent CALLRESULTs ---------------------------------------------------------------

    def result_received(self, unique_id: str, action: str) -> None:
        """The charge point answered the backend's CALL `unique_id` with a CALLRESULT: remember it for
        a CALLRESULTERROR of the backend about it."""
        self._remember(self.results_received, unique_id, action)

    def result_refused(self, unique_id: str) -> str | None:
        """The charge point refused the CALLRESULT `unique_id` (its CALLRESULTERROR): the Action of
        the CALL it answered, if still remembered."""
        return self.results_sent.pop(unique_id, None)

    def _remember(self, recent: OrderedDict[str, str], unique_id: str, action: str) -> None:
        """Keep `unique_id` → `action` among the last `max_remembered_results` (the oldest is forgotten,
        and counted)."""
        recent[unique_id] = action
        recent.move_to_end(unique_id)
        if len(recent) > self._max_results:
            recent.popitem(last=False)
            self._ctx.metrics.bounded[BOUND_KEY] += 1


def _text(payload: bytes) -> str:
    return payload.decode("utf-8", "replace")
