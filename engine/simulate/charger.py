"""One simulated charge point: its WebSocket, its CALLs (one in flight), its sessions.

A charge point lives in one coroutine (`run`): connect, go online, and when
the connection ends, reconnect with backoff (or after `reboot_delay` when the
CSMS reset it). Online, an activity task boots (BootNotification until
Accepted, then any transaction messages left over from a lost connection,
then a StatusNotification per connector) and starts the heartbeat timer and
one task per connector, which runs charging sessions (`charge`) or waits for a
remote start. The frames arrive in picows callbacks, which resolve the
waiting CALL or answer the CSMS's CALL at once (see `handlers`).

Energy: each connector has a meter register (Wh) that advances with the
session's power over time, so every MeterValues, StopTransaction and
TransactionEvent reads a value at least the previous one.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import socket
from collections import ChainMap, deque
from typing import TYPE_CHECKING, Any

import orjson
from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)

from engine.simulate import handlers
from engine.simulate import messages as m

if TYPE_CHECKING:
    from engine.simulate.run import Fleet

log = logging.getLogger("ocppgw.simulate")

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux: pick the port at connect()
# picows uses aiofastnet's transports when it is installed; on uvloop, uvloop's own are lighter and faster
# (measured: 19 vs 24 KB per idle charge point, 50 vs 59 µs CPU per call)
_HAS_AIOFASTNET_SWITCH = "use_aiofastnet" in inspect.signature(ws_connect).parameters
POWERS_W = (3700, 7400, 11000, 22000)


class CallError(Exception):
    """The CSMS answered our CALL with a CALLERROR."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code


class CallTimeout(Exception):
    """No answer within call_timeout."""


class ConnectionLost(Exception):
    """The connection ended before the answer came."""


class Waiter:
    """Sleeps that `wake()` cuts short (a stop, a remote start)."""

    __slots__ = ("futures", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.futures: set[asyncio.Future[bool]] = set()

    async def sleep(self, seconds: float) -> bool:
        """True if woken before `seconds` passed."""
        fut: asyncio.Future[bool] = self.loop.create_future()
        self.futures.add(fut)
        handle = self.loop.call_later(max(0.0, seconds), _resolve, fut, False)
        try:
            return await fut
        finally:
            handle.cancel()
            self.futures.discard(fut)

    def wake(self) -> None:
        for fut in list(self.futures):
            _resolve(fut, True)


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class Tx:
    __slots__ = ("id", "last_sample", "meter_start", "remote_start_id", "seq", "stop_reason", "tag")

    def __init__(self, tx_id: Any, tag: str, meter_start: int, now: float, remote_start_id: int | None = None) -> None:
        self.id = tx_id
        self.tag = tag
        self.meter_start = meter_start
        self.seq = 0
        self.stop_reason: str | None = None
        self.last_sample = now
        self.remote_start_id = remote_start_id

    def next_seq(self) -> int:
        seq = self.seq
        self.seq += 1
        return seq


class Connector:
    """1.6: a connector; 2.x: an EVSE with one connector. `status` is a 1.6 ChargePointStatus."""

    __slots__ = (
        "charging",
        "id",
        "last",
        "limit_w",
        "operative",
        "pending_operative",
        "power",
        "register",
        "remote",
        "reservation",
        "starting",
        "status",
        "task",
        "tx",
        "waiter",
    )

    def __init__(self, connector_id: int, register: float, loop: asyncio.AbstractEventLoop) -> None:
        self.id = connector_id
        self.status = "Available"
        self.operative = True
        self.pending_operative: bool | None = None  # a ChangeAvailability waiting for the session to end
        self.reservation: tuple[int, str, asyncio.TimerHandle | None] | None = None  # (id, tag, expiry timer)
        self.tx: Tx | None = None
        self.register = register  # Wh, only ever increases
        self.power = 0.0
        self.limit_w: float | None = None  # from a charging profile
        self.last = 0.0
        self.charging = False
        self.waiter = Waiter(loop)
        self.remote: tuple[str, int | None] | None = None  # a remote start to run: (tag, remoteStartId)
        self.task: asyncio.Task[None] | None = None
        self.starting = False  # between Authorize and the transaction's start

    def advance(self, now: float) -> None:
        if self.charging:
            power = self.power if self.limit_w is None else min(self.power, self.limit_w)
            self.register += power * max(0.0, now - self.last) / 3600.0
        self.last = now

    def effective_power(self) -> float:
        if not self.charging:
            return 0.0
        return self.power if self.limit_w is None else min(self.power, self.limit_w)

    def free(self) -> bool:
        return self.operative and self.tx is None and not self.starting and self.remote is None


class _Call:
    __slots__ = ("action", "future", "payload", "sent_at", "timer", "uid")

    def __init__(self, action: str, payload: dict[str, Any], future: asyncio.Future[dict[str, Any]]) -> None:
        self.action = action
        self.payload = payload
        self.future = future
        self.uid = ""
        self.sent_at = 0.0
        self.timer: asyncio.TimerHandle | None = None


class _Link(WSListener):
    """One WebSocket connection of a charge point (picows calls these from the event loop)."""

    def __init__(self, cp: ChargePoint) -> None:
        self.cp = cp
        self.transport: WSTransport | None = None
        self.closing = False  # we started the close: its end is expected
        self.closed: asyncio.Future[None] = cp.loop.create_future()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.cp.link = self

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        try:
            if kind == WSMsgType.TEXT and frame.fin:
                self.cp.on_frame(self, frame.get_payload_as_bytes())
            elif kind == WSMsgType.CLOSE:
                if not self.closing:  # the gateway closes: answer its close frame (ours crossed it otherwise)
                    transport.send_close(WSCloseCode.OK)
                transport.disconnect()
            elif kind in (WSMsgType.BINARY, WSMsgType.CONTINUATION) or (kind == WSMsgType.TEXT and not frame.fin):
                self.cp.stats.frames_received += 1
                self.cp.stats.protocol_error("bad_frame")
        except Exception:  # a bug of ours must not pass for a network problem
            log.exception("%s: error handling a frame", self.cp.cid)
            self.cp.stats.protocol_error("internal")

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.cp.on_disconnected(self)
        _resolve(self.closed, None)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.send(WSMsgType.TEXT, data)

    def close(self) -> None:
        """Start a normal close (1000); the transport goes when the gateway answers, or after 2 s."""
        if self.closing or self.transport is None:
            return
        self.closing = True
        self.transport.send_close(WSCloseCode.OK)
        self.cp.loop.call_later(2.0, self.transport.disconnect)


class ChargePoint:
    def __init__(self, fleet: Fleet, index: int) -> None:
        self.fleet = fleet
        self.options = o = fleet.options
        self.stats = fleet.stats
        self.loop = asyncio.get_running_loop()
        self.index = index
        self.cid = o.cid(index)
        self.version = o.proto
        self.v16 = o.proto == "ocpp1.6"
        self.rng: random.Random = fleet.rng  # one for the fleet: a Random is 2.5 KB
        self.connectors = {i: Connector(i, float(self.rng.randrange(0, 5_000_000)), self.loop)
                           for i in range(1, o.connectors + 1)}
        self.link: _Link | None = None
        self.uid = 0
        self.inflight: _Call | None = None
        self.queue: deque[_Call] = deque()
        self.drain_waiters: list[asyncio.Future[None]] = []
        self.waiter = Waiter(self.loop)
        self.config: ChainMap[str, str] = ChainMap({}, fleet.default_config)  # changes only are per charger
        self.heartbeat_interval = float(o.heartbeat) if o.heartbeat else 60.0
        self.config["HeartbeatInterval"] = str(max(1, round(self.heartbeat_interval)))
        self.meter_interval: float | None = o.meter_interval
        self.hb_timer: asyncio.TimerHandle | None = None
        self.hb_pending = False
        self.booted = False
        self.boot_reason = "PowerUp"
        self.backlog: list[tuple[str, dict[str, Any]]] = []  # transaction messages for after the next boot
        self.activity: asyncio.Task[None] | None = None
        self.outcome: asyncio.Future[str] | None = None
        self.winding_down: str | None = None
        self.reset_stop_reason = "HardReset"
        self.pending_reset: str | None = None  # an OnIdle reset waiting for the sessions to end
        self.local_list_version = 0
        self.profiles: dict[int, tuple[int, float | None]] = {}  # profile id → (connector, limit in W)
        self.backoff = o.backoff_min
        self.source = fleet.source_address(index)
        self.local_address: tuple[str, int] | None = None  # of the current connection
        self.connected_at = 0.0

    # --- lifecycle ----------------------------------------------------------------------------------

    async def run(self) -> None:
        o = self.options
        connected_before = False
        try:
            while not self.fleet.stopping:
                link = await self._connect()
                if link is None:
                    await self._pause(self._jitter(self.backoff, 0.5))
                    self.backoff = min(self.backoff * 2, o.backoff_max)
                    continue
                if connected_before:
                    self.stats.reconnects += 1
                connected_before = True
                outcome = await self._online(link)
                if outcome in ("stop", "done"):
                    return
                if outcome == "reboot":
                    await self._pause(o.reboot_delay)
                else:
                    await self._pause(self._jitter(self.backoff, 0.5))
                    self.backoff = min(self.backoff * 2, o.backoff_max)
        finally:
            self._cancel_tasks()
            link = self.link
            if link is not None and link.transport is not None:
                link.closing = True
                link.transport.disconnect()

    async def _pause(self, seconds: float) -> None:
        if not self.fleet.stopping:
            await self.waiter.sleep(seconds)

    def stop(self) -> None:
        """The fleet stops: end sessions, wait for the answers, close (or stop retrying)."""
        if self.outcome is not None:
            _resolve(self.outcome, "stop")
        self.waiter.wake()

    async def _connect(self) -> _Link | None:
        fleet = self.fleet
        extra: dict[str, Any] = {}
        if _HAS_AIOFASTNET_SWITCH and type(self.loop).__module__.startswith("uvloop"):
            extra["use_aiofastnet"] = False
        try:
            transport, link = await ws_connect(
                lambda: _Link(self), fleet.url_for(self.cid), extra_headers=fleet.headers_for(self.cid),
                ssl_context=fleet.ssl_for(self.cid), socket_factory=self._socket_factory if self.source else None,
                websocket_handshake_timeout=min(self.options.call_timeout, 30.0), enable_auto_pong=True,
                logger_name="simulate", disconnect_on_exception=False, max_frame_size=16 * 1024 * 1024,
                read_buffer_init_size=2048,  # grows when needed; 16 KB each would be most of a charger's memory
                **extra,
            )
        except (TimeoutError, OSError, WSError) as exc:
            self.link = None
            self.stats.connect_failures += 1
            response = getattr(exc, "response", None)
            self.stats.connect_errors[f"http {int(response.status)}" if response is not None else type(exc).__name__] += 1
            return None
        assert isinstance(link, _Link)
        self.stats.connects += 1
        self.link = link
        offered = transport.response.headers.get("Sec-WebSocket-Protocol")
        if offered != self.version:
            self.stats.protocol_error("subprotocol")
            link.close()
            await link.closed
            return None
        return link

    def _socket_factory(self, parsed_url: Any) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        except OSError:
            pass
        try:
            sock.bind((self.source, 0))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    async def _online(self, link: _Link) -> str:
        stats = self.stats
        stats.connected += 1
        stats.connected_peak = max(stats.connected_peak, stats.connected)
        transport = link.transport
        if transport is not None:
            local = transport.underlying_transport.get_extra_info("sockname")
            self.local_address = (local[0], local[1]) if local else None
        self.connected_at = self.loop.time()
        self.outcome = self.loop.create_future()
        if link.closed.done():
            _resolve(self.outcome, "lost")
        elif self.fleet.stopping:
            _resolve(self.outcome, "stop")
        else:
            self.activity = self.loop.create_task(self._activity())
        outcome = await self.outcome
        if outcome == "lost":
            self._on_lost()
        else:
            await self._wind_down(outcome, link)
        stats.connected -= 1
        self.outcome = None
        return outcome

    def _finish(self, outcome: str) -> None:
        if self.outcome is not None:
            _resolve(self.outcome, outcome)

    def on_disconnected(self, link: _Link) -> None:
        if link is not self.link:
            return
        self.link = None
        if not link.closing:
            self.stats.unexpected_closes += 1
            self.stats.protocol_error("unexpected_close")
        self._stop_heartbeat()
        calls = ([self.inflight] if self.inflight else []) + list(self.queue)
        self.inflight = None
        self.queue.clear()
        for call in calls:
            if call.timer:
                call.timer.cancel()
            if not call.future.done():
                call.future.set_exception(ConnectionLost(self.cid))
        self._drained()
        self._finish("lost")

    def _on_lost(self) -> None:
        """The connection went: sessions end here; their stop messages wait for the next boot."""
        self._cancel_tasks()
        now = self.loop.time()
        for c in self.connectors.values():
            c.starting = False
            c.remote = None
            if c.tx is not None:
                c.advance(now)
                self.backlog.append(self._stop_message(c, c.tx, "Other", offline=True))
                self._stopped(c, c.tx)
            c.charging = False
            c.status = "Available" if c.operative else "Unavailable"
        self.booted = False

    async def _wind_down(self, outcome: str, link: _Link) -> None:
        """Stop the sessions, let the answers come, close with 1000."""
        self.winding_down = outcome
        self._stop_heartbeat()
        if self.activity is not None and not self.activity.done():
            self.activity.cancel()
        reason = self.reset_stop_reason if outcome == "reboot" else "Local"
        tasks = []
        for c in self.connectors.values():
            c.remote = None
            if c.tx is not None and c.tx.stop_reason is None:
                c.tx.stop_reason = reason
            c.waiter.wake()
            if c.task is not None and not c.task.done():
                tasks.append(c.task)
        timeout = self.options.drain_timeout
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        self._cancel_tasks()
        if self.link is link:
            await self._wait_drained(timeout)
        link.close()
        try:
            await asyncio.wait_for(asyncio.shield(link.closed), 5.0)
        except TimeoutError:
            if link.transport is not None:
                link.transport.disconnect(graceful=False)
        self.winding_down = None
        self.booted = False
        if outcome == "reboot":
            for c in self.connectors.values():
                c.status = "Available" if c.operative else "Unavailable"

    def _cancel_tasks(self) -> None:
        if self.activity is not None and not self.activity.done():
            self.activity.cancel()
        for c in self.connectors.values():
            if c.task is not None and not c.task.done():
                c.task.cancel()
            c.task = None

    def request_reboot(self, stop_reason: str) -> None:
        """After answering a Reset: stop the sessions with `stop_reason`, close, come back and boot."""
        self.reset_stop_reason = stop_reason
        self.boot_reason = "RemoteReset"
        self.pending_reset = None
        self._finish("reboot")

    # --- online: boot, heartbeats, connectors -------------------------------------------------------------

    async def _activity(self) -> None:
        try:
            await self._boot()
            backlog, self.backlog = self.backlog, []
            for action, payload in backlog:
                self.send(action, payload)
            self.send_all_statuses()
            self._arm_heartbeat()
            if self.options.scenario == "boot":
                await self._wait_drained(self.options.drain_timeout)
                self._finish("done")
                return
            if self.options.scenario == "charge":  # otherwise a connector gets its task at a remote start
                for c in self.connectors.values():
                    c.task = self.loop.create_task(self._connector_loop(c))
        except ConnectionLost:
            pass

    async def _boot(self) -> None:
        while True:
            try:
                answer = await self.call("BootNotification", m.boot(self.version, self.cid, self.boot_reason))
            except (CallError, CallTimeout):
                await self.waiter.sleep(self._jitter(10.0))
                continue
            status = answer.get("status")
            interval = answer.get("interval")
            if status == "Accepted":
                if self.options.heartbeat is None and isinstance(interval, int) and interval > 0:
                    self.set_heartbeat(interval)
                self.booted = True
                self.boot_reason = "PowerUp"
                self.backoff = self.options.backoff_min
                self.stats.boots += 1
                return
            await self.waiter.sleep(interval if isinstance(interval, int) and interval > 0 else 10.0)

    async def triggered_boot(self) -> None:
        try:
            answer = await self.call("BootNotification", m.boot(self.version, self.cid, "Triggered"))
        except (CallError, CallTimeout, ConnectionLost):
            return
        interval = answer.get("interval")
        if answer.get("status") == "Accepted" and self.options.heartbeat is None and isinstance(interval, int) and interval > 0:
            self.set_heartbeat(interval)

    def set_heartbeat(self, seconds: float) -> None:
        self.heartbeat_interval = float(seconds)
        self.config["HeartbeatInterval"] = str(max(0, round(seconds)))
        if self.hb_timer is not None:
            self._arm_heartbeat()

    def _arm_heartbeat(self) -> None:
        self._stop_heartbeat()
        if self.heartbeat_interval > 0:
            self.hb_timer = self.loop.call_later(self.heartbeat_interval, self._heartbeat)

    def _stop_heartbeat(self) -> None:
        if self.hb_timer is not None:
            self.hb_timer.cancel()
            self.hb_timer = None

    def _heartbeat(self) -> None:
        self.hb_timer = None
        if self.link is None or self.winding_down:
            return
        if not self.hb_pending:
            self.hb_pending = True
            self.call("Heartbeat", {}).add_done_callback(self._heartbeat_done)
        self._arm_heartbeat()

    def _heartbeat_done(self, fut: asyncio.Future[dict[str, Any]]) -> None:
        self.hb_pending = False
        _retrieve(fut)

    def send_heartbeat(self) -> None:
        self.send("Heartbeat", {})

    def send_all_statuses(self) -> None:
        if self.v16:
            any_operative = any(c.operative for c in self.connectors.values())
            self.send("StatusNotification", m.status(self.version, 0, "Available" if any_operative else "Unavailable", m.timestamp()))
        for c in self.connectors.values():
            self.set_status(c, c.status, force=True)

    def set_status(self, c: Connector, state: str, force: bool = False) -> None:
        previous, c.status = c.status, state
        if not force and (previous == state or (not self.v16 and m.V2_STATUS[previous] == m.V2_STATUS[state])):
            return
        if self.link is not None:
            self.send("StatusNotification", m.status(self.version, c.id, state, m.timestamp()))

    def idle_status(self, c: Connector) -> str:
        if not c.operative:
            return "Unavailable"
        return "Reserved" if c.reservation is not None else "Available"

    async def _connector_loop(self, c: Connector) -> None:
        o = self.options
        charge = o.scenario == "charge"
        delay = self.rng.uniform(0.0, o.session_pause) if o.session_pause > 0 else 0.0
        try:
            while self.winding_down is None:
                if c.remote is None:
                    await c.waiter.sleep(delay if charge else 86400.0)
                if self.winding_down is not None:
                    return
                if c.remote is not None:
                    tag, remote_start_id = c.remote
                    c.remote = None
                    await self._session(c, tag, remote=True, remote_start_id=remote_start_id)
                elif charge and c.free() and c.reservation is None:
                    await self._session(c, self._tag(), remote=False)
                else:
                    delay = self._jitter(max(o.session_pause, 0.1))
                    continue
                delay = self._jitter(o.session_pause) if o.session_pause > 0 else 0.0
        except ConnectionLost:
            pass

    def _tag(self) -> str:
        return f"TAG{self.rng.randrange(10 ** 8):08d}"

    async def _session(self, c: Connector, tag: str, remote: bool, remote_start_id: int | None = None) -> None:
        """Authorize, start, meter every interval, stop; errors end the session, not the charger."""
        loop = self.loop
        c.starting = True
        try:
            if not remote or self.config.get("AuthorizeRemoteTxRequests") == "true":
                answer = await self.call("Authorize", m.authorize(self.version, tag))
                info = answer.get("idTagInfo" if self.v16 else "idTokenInfo") or {}
                if info.get("status") != "Accepted":
                    return
            if self.winding_down is not None:
                return
            reservation_id = None
            if c.reservation is not None and c.reservation[1] == tag:
                reservation_id = self._take_reservation(c)
            now = loop.time()
            c.power = self.rng.choice(POWERS_W) * self.rng.uniform(0.85, 1.0)
            c.last = now
            meter_start = int(c.register)
            ts = m.timestamp()
            self.set_status(c, "Preparing")
            if self.v16:
                answer = await self.call("StartTransaction", m.start_transaction(c.id, tag, meter_start, ts, reservation_id))
                tx = Tx(answer["transactionId"], tag, meter_start, loop.time())
                c.tx = tx
                accepted = (answer.get("idTagInfo") or {}).get("status") == "Accepted"
            else:
                tx = Tx(f"{self.rng.getrandbits(128):032x}", tag, meter_start, loop.time(), remote_start_id)
                c.tx = tx
                c.charging = True
                sample = m.meter_value(self.version, ts, c.register, c.effective_power(), "Transaction.Begin")
                answer = await self.call("TransactionEvent", m.transaction_event(
                    "Started", ts, "RemoteStart" if remote else "Authorized", tx.next_seq(), tx.id, evse=c.id,
                    charging_state="Charging", tag=tag, sample=sample, remote_start_id=remote_start_id,
                    reservation_id=reservation_id))
                accepted = (answer.get("idTokenInfo") or {"status": "Accepted"}).get("status") == "Accepted"
            c.starting = False
            self.stats.tx_started += 1
            c.charging = accepted
            c.last = loop.time()
            if not accepted:
                tx.stop_reason = tx.stop_reason or "DeAuthorized"
            else:
                self.set_status(c, "Charging")
            end = loop.time() + self._jitter(self.options.session_duration)
            while tx.stop_reason is None and self.winding_down is None:
                now = loop.time()
                if now >= end:
                    tx.stop_reason = "Local"
                    break
                interval = self.meter_interval
                due = tx.last_sample + interval if interval else end
                if now < due:
                    await c.waiter.sleep(min(due, end) - now)
                    continue
                tx.last_sample = now
                c.advance(now)
                await self.call(*self._meter_message(c, tx, "Sample.Periodic", "MeterValuePeriodic"))
            await self._stop(c, tx, tx.stop_reason or self._wind_down_reason())
        except (CallError, CallTimeout, KeyError, TypeError) as exc:
            log.debug("%s connector %d: session ended: %r", self.cid, c.id, exc)
            if c.tx is not None:
                tx = c.tx
                c.advance(loop.time())
                self.send(*self._stop_message(c, tx, "Other"))
                self._stopped(c, tx)
            c.charging = False
            self.set_status(c, self.idle_status(c))
        finally:
            c.starting = False

    def _wind_down_reason(self) -> str:
        return self.reset_stop_reason if self.winding_down == "reboot" else "Local"

    def _meter_message(self, c: Connector, tx: Tx | None, context: str, trigger: str) -> tuple[str, dict[str, Any]]:
        ts = m.timestamp()
        sample = m.meter_value(self.version, ts, c.register, c.effective_power(), context)
        if self.v16:
            return "MeterValues", m.meter_values(self.version, c.id, sample, tx.id if tx else None)
        if tx is None:
            return "MeterValues", m.meter_values(self.version, c.id, sample)
        return "TransactionEvent", m.transaction_event("Updated", ts, trigger, tx.next_seq(), tx.id,
                                                       charging_state="Charging" if c.charging else "SuspendedEVSE",
                                                       sample=sample)

    def meter_now(self, c: Connector, context: str = "Trigger") -> tuple[str, dict[str, Any]]:
        c.advance(self.loop.time())
        return self._meter_message(c, c.tx, context, "Trigger")

    def _stop_message(self, c: Connector, tx: Tx, reason: str, offline: bool = False) -> tuple[str, dict[str, Any]]:
        ts = m.timestamp()
        c.charging = False
        sample = m.meter_value(self.version, ts, c.register, 0, "Transaction.End")
        if self.v16:
            return "StopTransaction", m.stop_transaction(tx.id, int(c.register), ts, reason, tx.tag, sample)
        stopped, trigger = m.V2_STOP.get(reason, ("Other", "AbnormalCondition"))
        return "TransactionEvent", m.transaction_event(
            "Ended", ts, trigger, tx.next_seq(), tx.id, charging_state="EVConnected", stopped_reason=stopped,
            sample=sample, tag=tx.tag if trigger == "StopAuthorized" else None, offline=offline)

    async def _stop(self, c: Connector, tx: Tx, reason: str) -> None:
        c.advance(self.loop.time())
        await self.call(*self._stop_message(c, tx, reason))
        self._stopped(c, tx)
        if self.link is not None:
            self.set_status(c, "Finishing")
            self.set_status(c, self.idle_status(c))

    def _stopped(self, c: Connector, tx: Tx) -> None:
        if c.tx is tx:
            c.tx = None
        c.charging = False
        self.stats.tx_stopped += 1
        self.stats.energy_wh += int(c.register) - tx.meter_start
        if c.pending_operative is not None:
            c.operative, c.pending_operative = c.pending_operative, None
        if self.pending_reset is not None and all(x.tx is None for x in self.connectors.values()):
            self.loop.call_soon(self.request_reboot, self.pending_reset)

    def _take_reservation(self, c: Connector) -> int | None:
        if c.reservation is None:
            return None
        reservation_id, _, timer = c.reservation
        if timer is not None:
            timer.cancel()
        c.reservation = None
        return reservation_id

    def reserve(self, c: Connector, reservation_id: int, tag: str, seconds: float | None) -> None:
        timer = self.loop.call_later(seconds, self.cancel_reservation, reservation_id) if seconds else None
        c.reservation = (reservation_id, tag, timer)
        self.set_status(c, "Reserved")

    def cancel_reservation(self, reservation_id: int) -> bool:
        for c in self.connectors.values():
            if c.reservation is not None and c.reservation[0] == reservation_id:
                self._take_reservation(c)
                if c.tx is None and not c.starting:
                    self.set_status(c, self.idle_status(c))
                return True
        return False

    def remote_start(self, c: Connector, tag: str, remote_start_id: int | None) -> None:
        c.remote = (tag, remote_start_id)
        if c.task is None or c.task.done():
            c.task = self.loop.create_task(self._connector_loop(c))
        c.waiter.wake()

    def stop_transaction(self, c: Connector, reason: str) -> None:
        if c.tx is not None and c.tx.stop_reason is None:
            c.tx.stop_reason = reason
            c.waiter.wake()

    # --- CALLs: one in flight, the rest queued ------------------------------------------------------------

    def call(self, action: str, payload: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        fut: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        link = self.link
        if link is None or link.closing or link.transport is None:
            fut.set_exception(ConnectionLost(self.cid))
            return fut
        call = _Call(action, payload, fut)
        if self.inflight is None:
            self._send_call(call)
        else:
            self.queue.append(call)
        return fut

    def send(self, action: str, payload: dict[str, Any]) -> None:
        """A CALL whose answer nobody waits for."""
        self.call(action, payload).add_done_callback(_retrieve)

    def _send_call(self, call: _Call) -> None:
        self.uid += 1
        call.uid = str(self.uid)
        self.inflight = call
        self._write(orjson.dumps([2, call.uid, call.action, call.payload]))
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
            _resolve(fut, None)

    async def _wait_drained(self, timeout: float) -> None:
        if self.inflight is None and not self.queue:
            return
        fut: asyncio.Future[None] = self.loop.create_future()
        self.drain_waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass

    def _timed_out(self, call: _Call) -> None:
        if self.inflight is not call:
            return
        self.stats.timeouts += 1
        self.stats.errored[call.action] += 1
        if len(self.stats.timeout_examples) < 5:
            self.stats.timeout_examples.append({"cid": self.cid, "action": call.action, "uid": call.uid,
                                                "sent_after_connect_s": round(call.sent_at - self.connected_at, 3)})
        if not call.future.done():
            call.future.set_exception(CallTimeout(f"{call.action} not answered within {self.options.call_timeout}s"))
        self._next()

    # --- frames in ----------------------------------------------------------------------------------------

    def on_frame(self, link: _Link, data: bytes) -> None:
        stats = self.stats
        stats.frames_received += 1
        stats.bytes_received += len(data)
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            stats.protocol_error("bad_frame")
            return
        if not isinstance(msg, list) or len(msg) < 3 or not isinstance(msg[1], str):
            stats.protocol_error("bad_frame")
            return
        kind = msg[0]
        if kind == 3 and len(msg) == 3 and isinstance(msg[2], dict):
            self._on_result(msg[1], msg[2])
        elif kind == 4 and len(msg) == 5 and isinstance(msg[2], str):
            self._on_error(msg[1], msg[2], msg[3])
        elif kind == 2 and len(msg) == 4 and isinstance(msg[2], str) and isinstance(msg[3], dict):
            self._on_call(msg[1], msg[2], msg[3])
        else:
            stats.protocol_error("bad_frame")
            if kind == 2:
                code = "FormationViolation" if self.v16 else "FormatViolation"
                self._write(orjson.dumps([4, msg[1], code, "not a valid CALL", {}]))
                stats.server_callerrors_sent += 1

    def _on_result(self, uid: str, payload: dict[str, Any]) -> None:
        call = self.inflight
        if call is None or call.uid != uid:
            self.stats.protocol_error("unexpected_reply")
            return
        if call.timer:
            call.timer.cancel()
        stats = self.stats
        stats.calls_answered += 1
        stats.answered[call.action] += 1
        stats.record_latency(self.loop.time() - call.sent_at)
        if not call.future.done():
            call.future.set_result(payload)
        self._next()

    def _on_error(self, uid: str, code: str, description: Any) -> None:
        call = self.inflight
        if call is None or call.uid != uid:
            self.stats.protocol_error("unexpected_reply")
            return
        if call.timer:
            call.timer.cancel()
        stats = self.stats
        stats.callerrors_received += 1
        stats.callerror_codes[code] += 1
        stats.errored[call.action] += 1
        stats.protocol_error("callerror")
        log.debug("%s: %s answered with CALLERROR %s %s", self.cid, call.action, code, description)
        if not call.future.done():
            call.future.set_exception(CallError(code, str(description)))
        self._next()

    def _on_call(self, uid: str, action: str, payload: dict[str, Any]) -> None:
        stats = self.stats
        stats.server_calls[action] += 1
        try:
            result, after = handlers.answer(self, action, payload)
        except handlers.Refuse as refusal:
            self._write(orjson.dumps([4, uid, refusal.code, refusal.description, {}]))
            stats.server_callerrors_sent += 1
            return
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            code = "FormationViolation" if self.v16 else "FormatViolation"
            self._write(orjson.dumps([4, uid, code, f"cannot read the payload: {exc!r}"[:200], {}]))
            stats.server_callerrors_sent += 1
            return
        self._write(orjson.dumps([3, uid, result]))
        stats.server_calls_answered += 1
        if after is not None:
            after()

    # --- helpers ------------------------------------------------------------------------------------------

    def _jitter(self, value: float, spread: float = 0.25) -> float:
        return value * self.rng.uniform(1.0 - spread, 1.0 + spread)

    def connector(self, connector_id: Any) -> Connector | None:
        return self.connectors.get(connector_id) if isinstance(connector_id, int) else None
