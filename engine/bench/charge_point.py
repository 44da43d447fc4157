"""The bench load's charge point on picows: one CALL in flight, its answer matched without reading the payload.

Frames are `engine.ocpp.frames`'s: the CALLs' payloads are encoded once
(`call_with_json`), and an answer is matched to its CALL by `peek_answer`
(its type and id); anything not written as the servers we test write it is
`parse`d. A CALL from the server gets an empty CALLRESULT. This is the hot
path of every throughput scenario: keep it cheap.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Protocol

from picows import WSFrame, WSListener, WSMsgType, WSTransport

from engine.bench.tally import Stats
from engine.ocpp import frames

SUBPROTOCOL_HEADERS = {"Sec-WebSocket-Protocol": "ocpp1.6"}
HEARTBEAT = (b"Heartbeat", b"{}")
METER_VALUES = (b"MeterValues", frames.dumps({
    "connectorId": 1, "transactionId": 1,
    "meterValue": [{"timestamp": "2026-11-22T10:00:00Z", "sampledValue": [
        {"value": "1234.5", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
        {"value": "16.0", "measurand": "Current.Import", "unit": "A", "phase": "L1"},
    ]}],
}))
BOOT = (b"BootNotification", frames.dumps({"chargePointVendor": "Bench", "chargePointModel": "Load"}))
ACTIONS = (METER_VALUES, HEARTBEAT)  # by CALL number: odd Heartbeat, even MeterValues

# the hot path's codec functions and constants as globals: one lookup each instead of two per frame
_call_with_json, _peek_answer, _CALLERROR = frames.call_with_json, frames.peek_answer, frames.CALLERROR


class LoadSink(Protocol):
    """What a charge point reports to (`load.Load`): its answers, its late answers, its losses."""

    stats: Stats
    lost: int
    close_reasons: Counter[str]

    def on_answer(self, cp: ChargePoint, latency: float, error: bool, data: bytes) -> None: ...


class ChargePoint(WSListener):
    """One simulated charge point; everything it sees goes to its `Load`."""

    def __init__(self, load: LoadSink, cid: str) -> None:
        self.load = load
        self.cid = cid
        self.transport: WSTransport | None = None
        self.n = 0
        self.uid = b""
        self.t0 = 0.0
        self.waiting = False
        self.due = 0.0  # rate-limited mode: when the next CALL may go
        self.timer: asyncio.TimerHandle | None = None
        self.closing = False
        self.closed = False
        self.booted = False
        self.answers = 0

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def send_call(self, call: tuple[bytes, bytes] | None = None) -> None:
        if self.closed or self.transport is None:
            return
        self.timer = None
        self.n += 1
        action, payload = call or ACTIONS[self.n & 1]
        uid = b"%d" % self.n
        self.uid = uid
        self.waiting = True
        self.t0 = time.perf_counter()
        self.transport.send(WSMsgType.TEXT, _call_with_json(uid, action, payload))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            if frame.msg_type == WSMsgType.CLOSE and not self.closing:
                # the server closed us: why (the gateway's reason, e.g. keepalive_timeout)
                reason = frame.get_close_message().decode(errors="replace")
                self.load.close_reasons[f"{int(frame.get_close_code())} {reason}"] += 1
                transport.send_close(frame.get_close_code())
                transport.disconnect()
            return
        data = frame.get_payload_as_bytes()
        peeked = _peek_answer(data)
        if peeked is None:  # a CALL, or not written as the servers we test write answers: read it properly
            try:
                msg = frames.parse(data, "ocpp1.6")
            except frames.FrameError:
                return
            if isinstance(msg, frames.Call):  # a CALL to us: answer with an empty CALLRESULT
                transport.send(WSMsgType.TEXT, frames.result_bytes(msg.unique_id, {}))
                return
            peeked = (frames.CALLERROR if isinstance(msg, frames.CallError) else frames.CALLRESULT,
                      msg.unique_id.encode())
        now = time.perf_counter()
        kind, uid = peeked
        if not self.waiting or uid != self.uid:
            self.load.stats.late += 1
            return
        self.waiting = False
        self.answers += 1
        self.load.on_answer(self, now - self.t0, kind == _CALLERROR, data)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed = True
        if self.timer:
            self.timer.cancel()
        if not self.closing:
            self.load.stats.disconnects += 1
            self.load.lost += 1
