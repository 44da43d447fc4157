"""A charge point's OCPP-J traffic: its CALLs (one in flight, the rest queued) and the frames it receives.

`call()` sends a CALL, or queues it behind the one in flight, and returns the
future of its answer: the CALLRESULT's payload, or CallError, CallTimeout or
ConnectionLost. Frames in (read by `engine.ocpp.frames`, the gateway's own
codec) resolve the CALL in flight, or are the CSMS's CALLs, handed to the
`answer` function the channel was given (the charge point's answer table)
and answered at once. Every frame and byte is counted in the fleet's stats.
OCPP 2.1: `notify()` sends a SEND (unconfirmed); a SEND received is counted,
never answered; a CALLRESULTERROR received (the CSMS could not process a
CALLRESULT of ours) is counted as a protocol error.

`CallChannel` is one part of a charge point, held by it (`Charger.channel`);
it knows the WebSocket (`link`) and nothing of the charge point above it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from engine.ocpp import frames
from engine.simulate.link import Link
from engine.simulate.model import resolve, retrieve
from engine.simulate.options import SimOptions
from engine.simulate.stats import Stats

log = logging.getLogger("ocppgw.simulate")

# a CSMS CALL's answer: the CALLRESULT payload, and what to do once it has been sent (or None)
Answer = tuple[dict[str, Any], Callable[[], object] | None]
Answerer = Callable[[str, dict[str, Any]], Answer]


class Refuse(Exception):
    """Answer with a CALLERROR."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


class CallError(Exception):
    """The CSMS answered our CALL with a CALLERROR."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code


class CallTimeout(Exception):
    """No answer within call_timeout."""


class ConnectionLost(Exception):
    """The connection ended before the answer came."""


class Call:
    """A CALL of ours, from its queueing to its answer."""

    __slots__ = ("action", "future", "payload", "sent_at", "timer", "uid")

    def __init__(self, action: str, payload: dict[str, Any], future: asyncio.Future[dict[str, Any]]) -> None:
        self.action = action
        self.payload = payload
        self.future = future
        self.uid = ""
        self.sent_at = 0.0
        self.timer: asyncio.TimerHandle | None = None


class CallChannel:
    """CALLs out, frames in: the part of a charge point that speaks OCPP-J."""

    __slots__ = ("answer", "cid", "connected_at", "drain_waiters", "inflight", "link", "loop", "options", "queue",
                 "stats", "uid", "version")

    def __init__(self, cid: str, version: str, loop: asyncio.AbstractEventLoop, options: SimOptions, stats: Stats,
                 answer: Answerer) -> None:
        self.cid = cid
        self.version = version
        self.loop = loop
        self.options = options
        self.stats = stats
        self.answer = answer  # the CSMS's CALLs: action, payload → the answer, or Refuse
        self.link: Link | None = None
        self.connected_at = 0.0  # of the current connection
        self.uid = 0
        self.inflight: Call | None = None
        self.queue: deque[Call] = deque()
        self.drain_waiters: list[asyncio.Future[None]] = []

    # --- CALLs: one in flight, the rest queued ------------------------------------------------------------

    def call(self, action: str, payload: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        fut: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        link = self.link
        if link is None or link.closing or link.transport is None:
            fut.set_exception(ConnectionLost(self.cid))
            return fut
        call = Call(action, payload, fut)
        if self.inflight is None:
            self._send_call(call)
        else:
            self.queue.append(call)
        return fut

    def send(self, action: str, payload: dict[str, Any]) -> None:
        """A CALL whose answer nobody waits for."""
        self.call(action, payload).add_done_callback(retrieve)

    def notify(self, action: str, payload: dict[str, Any]) -> None:
        """2.1: a SEND, unconfirmed: out at once, beside the CALL in flight; nothing waits for it."""
        self.uid += 1
        self._write(frames.send_bytes(str(self.uid), action, payload))
        self.stats.sends_sent += 1

    def _send_call(self, call: Call) -> None:
        self.uid += 1
        call.uid = str(self.uid)
        self.inflight = call
        self._write(frames.call_bytes(call.uid, call.action, call.payload))
        stats = self.stats
        stats.calls_sent += 1
        stats.sent[call.action] += 1
        call.sent_at = self.loop.time()
        call.timer = self.loop.call_later(self.options.call_timeout, self._timed_out, call)

    def _write(self, data: bytes) -> None:
        link = self.link
        if link is None or link.transport is None:
            return
        link.send(data)
        self.stats.frames_sent += 1
        self.stats.bytes_sent += len(data)

    def _settle(self, call: Call, outcome: dict[str, Any] | Exception) -> None:
        """Give the CALL its answer (unless its caller gave up) and send the next one."""
        if not call.future.done():
            if isinstance(outcome, Exception):
                call.future.set_exception(outcome)
            else:
                call.future.set_result(outcome)
        self._next()

    def _next(self) -> None:
        self.inflight = None
        while self.queue and self.inflight is None:
            call = self.queue.popleft()
            if not call.future.done():  # a caller that gave up (cancelled) sends nothing
                self._send_call(call)
        if self.inflight is None:
            self._drained()

    def _drained(self) -> None:
        waiters, self.drain_waiters = self.drain_waiters, []
        for fut in waiters:
            resolve(fut, None)

    async def wait_drained(self, timeout: float) -> None:
        """Until no CALL is in flight or queued (at most `timeout`)."""
        if self.inflight is None and not self.queue:
            return
        fut: asyncio.Future[None] = self.loop.create_future()
        self.drain_waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass

    def _timed_out(self, call: Call) -> None:
        if self.inflight is not call:
            return
        self.stats.timeouts += 1
        self.stats.errored[call.action] += 1
        if len(self.stats.timeout_examples) < 5:
            self.stats.timeout_examples.append({"cid": self.cid, "action": call.action, "uid": call.uid,
                                                "sent_after_connect_s": round(call.sent_at - self.connected_at, 3)})
        self._settle(call, CallTimeout(f"{call.action} not answered within {self.options.call_timeout}s"))

    def fail_calls(self) -> None:
        """The connection went: the CALL in flight and the queued ones fail with ConnectionLost."""
        calls = ([self.inflight] if self.inflight else []) + list(self.queue)
        self.inflight = None
        self.queue.clear()
        for call in calls:
            if call.timer:
                call.timer.cancel()
            if not call.future.done():
                call.future.set_exception(ConnectionLost(self.cid))
        self._drained()

    # --- frames in ----------------------------------------------------------------------------------------

    def on_frame(self, data: bytes) -> None:
        stats = self.stats
        stats.frames_received += 1
        stats.bytes_received += len(data)
        try:
            frame = frames.parse(data, self.version)
        except frames.FrameError as bad:
            stats.protocol_error("bad_frame")
            # a bad CALL earns the CALLERROR the gateway's codec gives it; a bad answer is only counted
            if frames.message_type(data) == frames.CALL and bad.unique_id != frames.UNKNOWN_ID:
                self._send_callerror(bad.unique_id, bad.code, bad.description)
            return
        if isinstance(frame, frames.CallResult):
            self._on_result(frame.unique_id, frame.payload)
        elif isinstance(frame, frames.CallError):
            self._on_error(frame.unique_id, frame.code, frame.description)
        elif isinstance(frame, frames.Call):
            self._on_call(frame.unique_id, frame.action, frame.payload)
        elif isinstance(frame, frames.Send):
            stats.sends_received += 1
        else:
            stats.callresulterrors_received += 1
            stats.protocol_error("callresulterror")
            log.debug("%s: CALLRESULTERROR %s %s for %s", self.cid, frame.code, frame.description, frame.unique_id)

    def _answered(self, uid: str) -> Call | None:
        """The CALL in flight if `uid` answers it (its timer stopped); None, a protocol error, if not."""
        call = self.inflight
        if call is None or call.uid != uid:
            self.stats.protocol_error("unexpected_reply")
            return None
        if call.timer:
            call.timer.cancel()
        return call

    def _on_result(self, uid: str, payload: dict[str, Any]) -> None:
        call = self._answered(uid)
        if call is None:
            return
        stats = self.stats
        stats.calls_answered += 1
        stats.answered[call.action] += 1
        stats.record_latency(self.loop.time() - call.sent_at)
        self._settle(call, payload)

    def _on_error(self, uid: str, code: str, description: str) -> None:
        call = self._answered(uid)
        if call is None:
            return
        stats = self.stats
        stats.callerrors_received += 1
        stats.callerror_codes[code] += 1
        stats.errored[call.action] += 1
        stats.protocol_error("callerror")
        log.debug("%s: %s answered with CALLERROR %s %s", self.cid, call.action, code, description)
        self._settle(call, CallError(code, description))

    def _on_call(self, uid: str, action: str, payload: dict[str, Any]) -> None:
        stats = self.stats
        stats.server_calls[action] += 1
        try:
            result, after = self.answer(action, payload)
        except Refuse as refusal:
            self._send_callerror(uid, refusal.code, refusal.description)
            return
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self._send_callerror(uid, frames.format_violation(self.version), f"cannot read the payload: {exc!r}"[:200])
            return
        self._write(frames.result_bytes(uid, result))
        stats.server_calls_answered += 1
        if after is not None:
            after()

    def _send_callerror(self, uid: str, code: str, description: str) -> None:
        self._write(frames.error_bytes(uid, code, description))
        self.stats.server_callerrors_sent += 1

