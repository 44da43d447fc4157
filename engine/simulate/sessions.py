"""A charge point's connectors: their status, their reservations and their charging sessions.

Each connector has a task (`_connector_loop`) that runs sessions one after
the other (scenario `charge`) or waits for a remote start. A session:
Authorize (a remote start only if AuthorizeRemoteTxRequests), Preparing, the
transaction's start, a sample every `meter_interval`, and the stop when its
time is up, the CSMS stops it, or the charge point winds down. A CALLERROR
or a timeout ends the session, not the charge point. What differs between
1.6 and 2.x is in `transactions`.

`Sessions` is this part of `ChargePoint` (a mixin, so that a charge point
stays one object); the state it works on is set up by `ChargePoint`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from engine.simulate import messages as m
from engine.simulate import transactions
from engine.simulate.calls import CallError, CallTimeout, ConnectionLost

if TYPE_CHECKING:
    import asyncio
    import random
    from collections import ChainMap

    from engine.simulate.link import Link
    from engine.simulate.model import Connector, Tx
    from engine.simulate.options import SimOptions
    from engine.simulate.stats import Stats
    from engine.simulate.transactions import Message

log = logging.getLogger("ocppgw.simulate")

POWERS_W = (3700, 7400, 11000, 22000)


class Sessions:
    """Connectors and their sessions: the part of `ChargePoint` that charges."""

    # set up by ChargePoint
    cid: str
    version: str
    v16: bool
    loop: asyncio.AbstractEventLoop
    options: SimOptions
    stats: Stats
    rng: random.Random
    config: ChainMap[str, str]
    connectors: dict[int, Connector]
    link: Link | None
    meter_interval: float | None
    winding_down: str | None
    reset_stop_reason: str
    pending_reset: str | None

    if TYPE_CHECKING:  # from CallChannel and ChargePoint
        def call(self, action: str, payload: dict[str, Any]) -> asyncio.Future[dict[str, Any]]: ...
        def send(self, action: str, payload: dict[str, Any]) -> None: ...
        def request_reboot(self, stop_reason: str) -> None: ...
        def _jitter(self, value: float, spread: float = 0.25) -> float: ...

    def connector(self, connector_id: Any) -> Connector | None:
        return self.connectors.get(connector_id) if isinstance(connector_id, int) else None

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

    # --- sessions -----------------------------------------------------------------------------------------

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
        c.starting = True
        try:
            if not remote or self.config.get("AuthorizeRemoteTxRequests") == "true":
                answer = await self.call("Authorize", m.authorize(self.version, tag))
                if not transactions.authorized(self.version, answer):
                    return
            if self.winding_down is not None:
                return
            tx = await self._start(c, tag, remote, remote_start_id)
            await self._charge(c, tx)
            await self._stop(c, tx, tx.stop_reason or self._wind_down_reason())
        except (CallError, CallTimeout, KeyError, TypeError) as exc:
            log.debug("%s connector %d: session ended: %r", self.cid, c.id, exc)
            if c.tx is not None:
                tx = c.tx
                c.advance(self.loop.time())
                self.send(*self._stop_message(c, tx, "Other"))
                self._stopped(c, tx)
            c.charging = False
            self.set_status(c, self.idle_status(c))
        finally:
            c.starting = False

    async def _start(self, c: Connector, tag: str, remote: bool, remote_start_id: int | None) -> Tx:
        """Preparing, then the transaction; one the CSMS does not accept is to stop at once (DeAuthorized)."""
        reservation_id = None
        if c.reservation is not None and c.reservation[1] == tag:
            reservation_id = self._take_reservation(c)
        now = self.loop.time()
        c.power = self.rng.choice(POWERS_W) * self.rng.uniform(0.85, 1.0)
        c.last = now
        meter_start = int(c.register)
        ts = m.timestamp()
        self.set_status(c, "Preparing")
        tx, accepted = await transactions.start(self, c, tag, meter_start, ts, remote=remote,  # type: ignore[arg-type]
                                                remote_start_id=remote_start_id, reservation_id=reservation_id)
        c.starting = False
        self.stats.tx_started += 1
        c.charging = accepted
        c.last = self.loop.time()
        if not accepted:
            tx.stop_reason = tx.stop_reason or "DeAuthorized"
        else:
            self.set_status(c, "Charging")
        return tx

    async def _charge(self, c: Connector, tx: Tx) -> None:
        """Sample the meter every interval until the session's time is up or something stops it."""
        loop = self.loop
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
            await self.call(*transactions.meter(self.version, c, tx, "Sample.Periodic", "MeterValuePeriodic"))

    def _wind_down_reason(self) -> str:
        return self.reset_stop_reason if self.winding_down == "reboot" else "Local"

    def meter_now(self, c: Connector, context: str = "Trigger", in_transaction: bool = True) -> Message:
        """A triggered sample of `c` now (2.x: a TransactionEvent during a transaction, unless not `in_transaction`)."""
        c.advance(self.loop.time())
        return transactions.meter(self.version, c, c.tx if in_transaction else None, context, "Trigger")

    def _stop_message(self, c: Connector, tx: Tx, reason: str, offline: bool = False) -> Message:
        c.charging = False
        return transactions.stop(self.version, c, tx, reason, offline)

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

    # --- what the CSMS asks -------------------------------------------------------------------------------

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
