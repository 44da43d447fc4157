"""One simulated charge point's life on the network: connect, boot, heartbeat, reconnect.

A charge point lives in one coroutine (`run`): connect, go online, and when
the connection ends, reconnect with backoff (or after `reboot_delay` when the
CSMS reset it). Online, an activity task boots (BootNotification until
Accepted, then any transaction messages left over from a lost connection,
then a StatusNotification per connector) and starts the heartbeat timer and
one task per connector, which runs charging sessions or waits for a remote
start.

`ChargePoint` is the top of a charge point: it holds its state
(`state.Charger`: connectors, configuration, its CALLs in `calls`), whose
CSMS CALLs are answered from the version's table in `handlers`, and whose
sessions run in `sessions`; `link` has the WebSocket. What it needs of the
fleet is the `FleetView` shape, so that nothing here imports the fleet.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from typing import Protocol

from engine.simulate import handlers, sessions
from engine.simulate import messages as m
from engine.simulate.calls import CallError, CallTimeout, ConnectionLost
from engine.simulate.link import Link, connect
from engine.simulate.model import Connector, resolve
from engine.simulate.options import SimOptions
from engine.simulate.state import Charger, boot_interval
from engine.simulate.stats import Stats


class FleetView(Protocol):
    """What a charge point asks of its fleet."""

    options: SimOptions
    stats: Stats
    rng: random.Random
    default_config: dict[str, str]
    stopping: bool

    def url_for(self, cid: str) -> str: ...
    def headers_for(self, cid: str) -> dict[str, str]: ...
    def ssl_for(self, cid: str) -> ssl.SSLContext | None: ...
    def source_address(self, index: int) -> str | None: ...


class ChargePoint:
    """A charge point's connections, one after the other, around its state (`state`)."""

    def __init__(self, fleet: FleetView, index: int) -> None:
        self.fleet = fleet
        self.options = o = fleet.options
        self.stats = fleet.stats
        self.loop = asyncio.get_running_loop()
        self.index = index
        self.cid = o.cid(index)
        self.state = Charger(self.cid, o, fleet.stats, fleet.rng, fleet.default_config, handlers.answer,
                             self._start_connector)
        self.activity: asyncio.Task[None] | None = None
        self.backoff = o.backoff_min
        self.source = fleet.source_address(index)
        self.local_address: tuple[str, int] | None = None  # of the current connection

    # --- the link's reports (`link.LinkOwner`) ------------------------------------------------------------

    def on_connected(self, link: Link) -> None:
        self.state.channel.link = link

    def on_frame(self, link: Link, data: bytes) -> None:
        self.state.channel.on_frame(data)

    def _start_connector(self, c: Connector) -> None:
        c.task = self.loop.create_task(sessions.connector_loop(self.state, c))

    # --- lifecycle ----------------------------------------------------------------------------------

    async def run(self) -> None:
        connected_before = False
        try:
            while not self.fleet.stopping:
                link = await connect(self, self.fleet.url_for(self.cid), subprotocol=self.state.version,
                                     headers=self.fleet.headers_for(self.cid), ssl_context=self.fleet.ssl_for(self.cid),
                                     source=self.source, handshake_timeout=min(self.options.call_timeout, 30.0))
                if link is None:
                    self.state.channel.link = None
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
            link = self.state.link
            if link is not None and link.transport is not None:
                link.closing = True
                link.transport.disconnect()

    async def _pause(self, seconds: float) -> None:
        if not self.fleet.stopping:
            await self.state.waiter.sleep(seconds)

    async def _back_off(self) -> None:
        """Wait about the backoff (±50%), which doubles for the next time, up to backoff_max."""
        await self._pause(self.state.jitter(self.backoff, 0.5))
        self.backoff = min(self.backoff * 2, self.options.backoff_max)

    def stop(self) -> None:
        """The fleet stops: end sessions, wait for the answers, close (or stop retrying)."""
        self.state.finish("stop")
        self.state.waiter.wake()

    async def _online(self, link: Link) -> str:
        cp = self.state
        stats = self.stats
        stats.connected += 1
        stats.connected_peak = max(stats.connected_peak, stats.connected)
        transport = link.transport
        if transport is not None:
            local = transport.underlying_transport.get_extra_info("sockname")
            self.local_address = (local[0], local[1]) if local else None
        cp.channel.connected_at = self.loop.time()
        outcome_future: asyncio.Future[str] = self.loop.create_future()
        cp.outcome = outcome_future
        if link.closed.done():
            resolve(outcome_future, "lost")
        elif self.fleet.stopping:
            resolve(outcome_future, "stop")
        else:
            self.activity = self.loop.create_task(self._activity())
        outcome = await outcome_future
        if outcome == "lost":
            self._on_lost()
        else:
            await self._wind_down(outcome, link)
        stats.connected -= 1
        cp.outcome = None
        return outcome

    def on_disconnected(self, link: Link) -> None:
        cp = self.state
        if link is not cp.link:
            return
        cp.channel.link = None
        if not link.closing:
            self.stats.unexpected_closes += 1
            self.stats.protocol_error("unexpected_close")
        cp.stop_heartbeat()
        cp.channel.fail_calls()
        cp.finish("lost")

    def _on_lost(self) -> None:
        """The connection went: sessions end here; their stop messages wait for the next boot."""
        cp = self.state
        self._cancel_tasks()
        now = self.loop.time()
        for c in cp.connectors.values():
            c.starting = False
            c.remote = None
            if c.tx is not None:
                c.advance(now)
                cp.backlog.append(cp.stop_message(c, c.tx, "Other", offline=True))
                cp.stopped(c, c.tx)
            c.charging = False
            c.status = "Available" if c.operative else "Unavailable"
        cp.booted = False

    async def _wind_down(self, outcome: str, link: Link) -> None:
        """Stop the sessions, let the answers come, close with 1000."""
        cp = self.state
        cp.winding_down = outcome
        cp.stop_heartbeat()
        if self.activity is not None and not self.activity.done():
            self.activity.cancel()
        reason = cp.wind_down_reason()
        tasks = []
        for c in cp.connectors.values():
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
        if cp.link is link:
            await cp.channel.wait_drained(timeout)
        await self._close(link)
        cp.winding_down = None
        cp.booted = False
        if outcome == "reboot":
            for c in cp.connectors.values():
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
        for c in self.state.connectors.values():
            if c.task is not None and not c.task.done():
                c.task.cancel()
            c.task = None

    # --- online: boot, heartbeats, connectors -------------------------------------------------------------

    async def _activity(self) -> None:
        cp = self.state
        try:
            await self._boot()
            backlog, cp.backlog = cp.backlog, []
            for action, payload in backlog:
                cp.send(action, payload)
            cp.send_all_statuses()
            cp.arm_heartbeat()
            if self.options.scenario == "boot":
                await cp.channel.wait_drained(self.options.drain_timeout)
                cp.finish("done")
                return
            if self.options.scenario == "charge":  # otherwise a connector gets its task at a remote start
                for c in cp.connectors.values():
                    self._start_connector(c)
        except ConnectionLost:
            pass

    async def _boot(self) -> None:
        cp = self.state
        while True:
            try:
                answer = await cp.call("BootNotification", m.boot(cp.version, self.cid, cp.boot_reason))
            except (CallError, CallTimeout):
                await cp.waiter.sleep(cp.jitter(10.0))
                continue
            if cp.boot_accepted(answer):
                cp.booted = True
                cp.boot_reason = "PowerUp"
                self.backoff = self.options.backoff_min
                self.stats.boots += 1
                return
            await cp.waiter.sleep(boot_interval(answer) or 10.0)
