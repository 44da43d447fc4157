"""One simulated charge point's state, and what changes it: the object its answers and sessions work on.

`Charger` holds everything a charge point knows (connectors, configuration,
heartbeat, profiles, the outcome of its current connection) and its
`CallChannel` (its CALLs). Its methods are the charge point's own acts that
any part may ask for: send a status, arm the heartbeat, reserve, stop a
transaction, ask for a reboot. The CSMS's CALLs are answered from a table
per version (`handlers`), sessions run in `sessions`, the life on the network
in `charger`; all of them take a `Charger`, and this module imports none of
them. What only a part above can do is handed down: `answer` (the answer
table) and `start_connector` (a connector's session task).
"""

from __future__ import annotations

import asyncio
import random
from collections import ChainMap
from collections.abc import Callable
from typing import Any

from engine.simulate import messages as m
from engine.simulate import transactions
from engine.simulate.calls import Answer, CallChannel, CallError, CallTimeout, ConnectionLost
from engine.simulate.link import Link
from engine.simulate.model import Connector, Tx, Waiter, resolve, retrieve
from engine.simulate.options import SimOptions
from engine.simulate.stats import Stats
from engine.simulate.transactions import Message


class Charger:
    """What one charge point knows and does, whatever its OCPP version."""

    def __init__(self, cid: str, options: SimOptions, stats: Stats, rng: random.Random,
                 default_config: dict[str, str], answer: Callable[[Charger, str, dict[str, Any]], Answer],
                 start_connector: Callable[[Connector], None]) -> None:
        o = options
        self.cid = cid
        self.options = o
        self.stats = stats
        self.loop = asyncio.get_running_loop()
        self.version = o.proto
        self.v16 = o.proto == "ocpp1.6"
        self.rng = rng  # one for the fleet: a Random is 2.5 KB
        self.channel = CallChannel(cid, o.proto, self.loop, o, stats, lambda action, p: answer(self, action, p))
        self.start_connector = start_connector  # a connector's session task (see `sessions`), if it has none
        self.connectors = {i: Connector(i, float(rng.randrange(0, 5_000_000)), self.loop)
                           for i in range(1, o.connectors + 1)}
        self.waiter = Waiter(self.loop)
        self.config: ChainMap[str, str] = ChainMap({}, default_config)  # changes only are per charger
        self.heartbeat_interval = float(o.heartbeat) if o.heartbeat else 60.0
        self.config["HeartbeatInterval"] = str(max(1, round(self.heartbeat_interval)))
        self.meter_interval: float | None = o.meter_interval
        self.hb_timer: asyncio.TimerHandle | None = None
        self.hb_pending = False
        self.booted = False
        self.boot_reason = "PowerUp"
        self.backlog: list[Message] = []  # transaction messages for after the next boot
        self.outcome: asyncio.Future[str] | None = None  # how the current connection ends
        self.winding_down: str | None = None
        self.reset_stop_reason = "HardReset"
        self.pending_reset: str | None = None  # an OnIdle reset waiting for the sessions to end
        self.local_list_version = 0
        self.profiles: dict[int, tuple[int, float | None]] = {}  # profile id → (connector, limit in W)

    @property
    def link(self) -> Link | None:
        return self.channel.link

    # --- CALLs --------------------------------------------------------------------------------------------

    def call(self, action: str, payload: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        return self.channel.call(action, payload)

    def send(self, action: str, payload: dict[str, Any]) -> None:
        """A CALL whose answer nobody waits for."""
        self.channel.send(action, payload)

    def connector(self, connector_id: Any) -> Connector | None:
        return self.connectors.get(connector_id) if isinstance(connector_id, int) else None

    def jitter(self, value: float, spread: float = 0.25) -> float:
        return value * self.rng.uniform(1.0 - spread, 1.0 + spread)

    # --- the connection's outcome ------------------------------------------------------------------------

    def finish(self, outcome: str) -> None:
        if self.outcome is not None:
            resolve(self.outcome, outcome)

    def request_reboot(self, stop_reason: str) -> None:
        """After answering a Reset: stop the sessions with `stop_reason`, close, come back and boot."""
        self.reset_stop_reason = stop_reason
        self.boot_reason = "RemoteReset"
        self.pending_reset = None
        self.finish("reboot")

    def wind_down_reason(self) -> str:
        return self.reset_stop_reason if self.winding_down == "reboot" else "Local"

    # --- boot and heartbeats ------------------------------------------------------------------------------

    async def triggered_boot(self) -> None:
        try:
            answer = await self.call("BootNotification", m.boot(self.version, self.cid, "Triggered"))
        except (CallError, CallTimeout, ConnectionLost):
            return
        self.boot_accepted(answer)

    def boot_accepted(self, answer: dict[str, Any]) -> bool:
        """Whether the CSMS accepted the boot; if so, its interval is the heartbeat's (unless --heartbeat)."""
        accepted = answer.get("status") == "Accepted"
        interval = boot_interval(answer)
        if accepted and self.options.heartbeat is None and interval is not None:
            self.set_heartbeat(interval)
        return accepted

    def set_heartbeat(self, seconds: float) -> None:
        self.heartbeat_interval = float(seconds)
        self.config["HeartbeatInterval"] = str(max(0, round(seconds)))
        if self.hb_timer is not None:
            self.arm_heartbeat()

    def arm_heartbeat(self) -> None:
        self.stop_heartbeat()
        if self.heartbeat_interval > 0:
            self.hb_timer = self.loop.call_later(self.heartbeat_interval, self._heartbeat)

    def stop_heartbeat(self) -> None:
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
        self.arm_heartbeat()

    def _heartbeat_done(self, fut: asyncio.Future[dict[str, Any]]) -> None:
        self.hb_pending = False
        retrieve(fut)

    def send_heartbeat(self) -> None:
        self.send("Heartbeat", {})

    # --- status -------------------------------------------------------------------------------------------

    def send_all_statuses(self) -> None:
        if self.v16:
            self.send_station_status()
        for c in self.connectors.values():
            self.set_status(c, c.status, force=True)

    def send_station_status(self) -> None:
        """1.6: the status of connector 0, the charge point itself."""
        any_operative = any(c.operative for c in self.connectors.values())
        self.send("StatusNotification", m.status(self.version, 0, "Available" if any_operative else "Unavailable", m.timestamp()))

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

    # --- transactions -------------------------------------------------------------------------------------

    def meter_now(self, c: Connector, context: str = "Trigger", in_transaction: bool = True) -> Message:
        """A triggered sample of `c` now (2.x: a TransactionEvent during a transaction, unless not `in_transaction`)."""
        c.advance(self.loop.time())
        return transactions.meter(self.version, c, c.tx if in_transaction else None, context, "Trigger")

    def stop_message(self, c: Connector, tx: Tx, reason: str, offline: bool = False) -> Message:
        c.charging = False
        return transactions.stop(self.version, c, tx, reason, offline)

    def stopped(self, c: Connector, tx: Tx) -> None:
        if c.tx is tx:
            c.tx = None
        c.charging = False
        self.stats.tx_stopped += 1
        self.stats.energy_wh += int(c.register) - tx.meter_start
        if c.pending_operative is not None:
            c.operative, c.pending_operative = c.pending_operative, None
        if self.pending_reset is not None and all(x.tx is None for x in self.connectors.values()):
            self.loop.call_soon(self.request_reboot, self.pending_reset)

    # --- what the CSMS asks -------------------------------------------------------------------------------

    def take_reservation(self, c: Connector) -> int | None:
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
                self.take_reservation(c)
                if c.tx is None and not c.starting:
                    self.set_status(c, self.idle_status(c))
                return True
        return False

    def remote_start(self, c: Connector, tag: str, remote_start_id: int | None) -> None:
        c.remote = (tag, remote_start_id)
        if c.task is None or c.task.done():
            self.start_connector(c)
        c.waiter.wake()

    def stop_transaction(self, c: Connector, reason: str) -> None:
        if c.tx is not None and c.tx.stop_reason is None:
            c.tx.stop_reason = reason
            c.waiter.wake()


def boot_interval(answer: dict[str, Any]) -> int | None:
    """The BootNotification answer's interval, if it is a positive whole number."""
    interval = answer.get("interval")
    return interval if isinstance(interval, int) and interval > 0 else None
