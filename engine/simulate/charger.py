"""One simulated charge point: its life on the network (connect, boot, heartbeat, reconnect).

A charge point lives in one coroutine (`run`): connect, go online, and when
the connection ends, reconnect with backoff (or after `reboot_delay` when the
CSMS reset it). Online, an activity task boots (BootNotification until
Accepted, then any transaction messages left over from a lost connection,
then a StatusNotification per connector) and starts the heartbeat timer and
one task per connector, which runs charging sessions or waits for a remote
start.

`ChargePoint` is one object made of parts: `calls.CallChannel` (its CALLs,
one in flight, and the frames it receives, which resolve the waiting CALL or
are the CSMS's CALLs, answered at once by `handlers`) and
`sessions.Sessions` (its connectors and their sessions). `link` has the
WebSocket, `model` the connectors and transactions.
"""

from __future__ import annotations

import asyncio
import random
from collections import ChainMap, deque
from typing import TYPE_CHECKING, Any

from engine.simulate import messages as m
from engine.simulate.calls import CallChannel, CallError, CallTimeout, ConnectionLost
from engine.simulate.link import Link, connect
from engine.simulate.model import Connector, Waiter, resolve, retrieve
from engine.simulate.sessions import Sessions

if TYPE_CHECKING:
    from engine.simulate.calls import Call
    from engine.simulate.run import Fleet

class ChargePoint(CallChannel, Sessions):
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
        self.link: Link | None = None
        self.uid = 0
        self.inflight: Call | None = None
        self.queue: deque[Call] = deque()
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
        connected_before = False
        try:
            while not self.fleet.stopping:
                link = await connect(self)
                if link is None:
                    await self._back_off()
                    continue
                if connected_before:
                    self.stats.reconnects += 1
                connected_before = True
                outcome = await self._online(link)
                if outcome in ("stop", "done"):
                    return
                if outcome == "reboot":
                    await self._pause(self.options.reboot_delay)
                else:
                    await self._back_off()
        finally:
            self._cancel_tasks()
            link = self.link
            if link is not None and link.transport is not None:
                link.closing = True
                link.transport.disconnect()

    async def _pause(self, seconds: float) -> None:
        if not self.fleet.stopping:
            await self.waiter.sleep(seconds)

    async def _back_off(self) -> None:
        """Wait about the backoff (±50%), which doubles for the next time, up to backoff_max."""
        await self._pause(self._jitter(self.backoff, 0.5))
        self.backoff = min(self.backoff * 2, self.options.backoff_max)

    def stop(self) -> None:
        """The fleet stops: end sessions, wait for the answers, close (or stop retrying)."""
        if self.outcome is not None:
            resolve(self.outcome, "stop")
        self.waiter.wake()

    async def _online(self, link: Link) -> str:
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
            resolve(self.outcome, "lost")
        elif self.fleet.stopping:
            resolve(self.outcome, "stop")
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
            resolve(self.outcome, outcome)

    def on_disconnected(self, link: Link) -> None:
        if link is not self.link:
            return
        self.link = None
        if not link.closing:
            self.stats.unexpected_closes += 1
            self.stats.protocol_error("unexpected_close")
        self._stop_heartbeat()
        self._fail_calls()
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

    async def _wind_down(self, outcome: str, link: Link) -> None:
        """Stop the sessions, let the answers come, close with 1000."""
        self.winding_down = outcome
        self._stop_heartbeat()
        if self.activity is not None and not self.activity.done():
            self.activity.cancel()
        reason = self._wind_down_reason()
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
        await self._close(link)
        self.winding_down = None
        self.booted = False
        if outcome == "reboot":
            for c in self.connectors.values():
                c.status = "Available" if c.operative else "Unavailable"

    async def _close(self, link: Link) -> None:
        """Close with 1000 and wait for the end; cut the connection if it has not come within 5 s."""
        link.close()
        try:
            await asyncio.wait_for(asyncio.shield(link.closed), 5.0)
        except TimeoutError:
            if link.transport is not None:
                link.transport.disconnect(graceful=False)

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
            if self._boot_accepted(answer):
                self.booted = True
                self.boot_reason = "PowerUp"
                self.backoff = self.options.backoff_min
                self.stats.boots += 1
                return
            await self.waiter.sleep(_interval(answer) or 10.0)

    async def triggered_boot(self) -> None:
        try:
            answer = await self.call("BootNotification", m.boot(self.version, self.cid, "Triggered"))
        except (CallError, CallTimeout, ConnectionLost):
            return
        self._boot_accepted(answer)

    def _boot_accepted(self, answer: dict[str, Any]) -> bool:
        """Whether the CSMS accepted the boot; if so, its interval is the heartbeat's (unless --heartbeat)."""
        accepted = answer.get("status") == "Accepted"
        interval = _interval(answer)
        if accepted and self.options.heartbeat is None and interval is not None:
            self.set_heartbeat(interval)
        return accepted

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
        retrieve(fut)

    def send_heartbeat(self) -> None:
        self.send("Heartbeat", {})

    def _jitter(self, value: float, spread: float = 0.25) -> float:
        return value * self.rng.uniform(1.0 - spread, 1.0 + spread)


def _interval(answer: dict[str, Any]) -> int | None:
    """The BootNotification answer's interval, if it is a positive whole number."""
    interval = answer.get("interval")
    return interval if isinstance(interval, int) and interval > 0 else None
