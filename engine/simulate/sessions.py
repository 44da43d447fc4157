"""A charge point's charging sessions, one connector at a time.

Each connector has a task (`connector_loop`) that runs sessions one after
the other (scenario `charge`) or waits for a remote start. A session:
Authorize (a remote start only if AuthorizeRemoteTxRequests), Preparing, the
transaction's start, a sample every `meter_interval`, and the stop when its
time is up, the CSMS stops it, or the charge point winds down. A CALLERROR
or a timeout ends the session, not the charge point. The messages that
differ between 1.6 and 2.x are in `transactions`; the start, which differs
in who makes the transaction id, is here (`start_transaction`).

Functions of the charge point's state (`state.Charger`), which they read and
change; nothing here is kept between calls.
"""

from __future__ import annotations

import logging

from engine.simulate import messages as m
from engine.simulate import transactions
from engine.simulate.calls import CallError, CallTimeout, ConnectionLost
from engine.simulate.model import Connector, Tx
from engine.simulate.state import Charger

log = logging.getLogger("ocppgw.simulate")

POWERS_W = (3700, 7400, 11000, 22000)


async def connector_loop(cp: Charger, c: Connector) -> None:
    o = cp.options
    charge = o.scenario == "charge"
    delay = cp.rng.uniform(0.0, o.session_pause) if o.session_pause > 0 else 0.0
    try:
        while cp.winding_down is None:
            if c.remote is None:
                await c.waiter.sleep(delay if charge else 86400.0)
            if cp.winding_down is not None:
                return
            if c.remote is not None:
                tag, remote_start_id = c.remote
                c.remote = None
                await _session(cp, c, tag, remote=True, remote_start_id=remote_start_id)
            elif charge and c.free() and c.reservation is None:
                await _session(cp, c, _tag(cp), remote=False)
            else:
                delay = cp.jitter(max(o.session_pause, 0.1))
                continue
            delay = cp.jitter(o.session_pause) if o.session_pause > 0 else 0.0
    except ConnectionLost:
        pass


def _tag(cp: Charger) -> str:
    return f"TAG{cp.rng.randrange(10 ** 8):08d}"


async def _session(cp: Charger, c: Connector, tag: str, remote: bool, remote_start_id: int | None = None) -> None:
    """Authorize, start, meter every interval, stop; errors end the session, not the charger."""
    c.starting = True
    try:
        if not remote or cp.config.get("AuthorizeRemoteTxRequests") == "true":
            answer = await cp.call("Authorize", m.authorize(cp.version, tag))
            if not transactions.authorized(cp.version, answer):
                return
        if cp.winding_down is not None:
            return
        tx = await _start(cp, c, tag, remote, remote_start_id)
        await _charge(cp, c, tx)
        await _stop(cp, c, tx, tx.stop_reason or cp.wind_down_reason())
    except (CallError, CallTimeout, KeyError, TypeError) as exc:
        log.debug("%s connector %d: session ended: %r", cp.cid, c.id, exc)
        if c.tx is not None:
            tx = c.tx
            c.advance(cp.loop.time())
            cp.send(*cp.stop_message(c, tx, "Other"))
            cp.stopped(c, tx)
        c.charging = False
        cp.set_status(c, cp.idle_status(c))
    finally:
        c.starting = False


async def _start(cp: Charger, c: Connector, tag: str, remote: bool, remote_start_id: int | None) -> Tx:
    """Preparing, then the transaction; one the CSMS does not accept is to stop at once (DeAuthorized)."""
    reservation_id = None
    if c.reservation is not None and c.reservation[1] == tag:
        reservation_id = cp.take_reservation(c)
    now = cp.loop.time()
    c.power = cp.rng.choice(POWERS_W) * cp.rng.uniform(0.85, 1.0)
    c.last = now
    meter_start = int(c.register)
    ts = m.timestamp()
    cp.set_status(c, "Preparing")
    tx, accepted = await start_transaction(cp, c, tag, meter_start, ts, remote=remote,
                                           remote_start_id=remote_start_id, reservation_id=reservation_id)
    c.starting = False
    cp.stats.tx_started += 1
    c.charging = accepted
    c.last = cp.loop.time()
    if not accepted:
        tx.stop_reason = tx.stop_reason or "DeAuthorized"
    else:
        cp.set_status(c, "Charging")
    return tx


async def _charge(cp: Charger, c: Connector, tx: Tx) -> None:
    """Sample the meter every interval until the session's time is up or something stops it."""
    loop = cp.loop
    end = loop.time() + cp.jitter(cp.options.session_duration)
    while tx.stop_reason is None and cp.winding_down is None:
        now = loop.time()
        if now >= end:
            tx.stop_reason = "Local"
            break
        interval = cp.meter_interval
        due = tx.last_sample + interval if interval else end
        if now < due:
            await c.waiter.sleep(min(due, end) - now)
            continue
        tx.last_sample = now
        c.advance(now)
        await cp.call(*transactions.meter(cp.version, c, tx, "Sample.Periodic", "MeterValuePeriodic"))
        if cp.version == "ocpp2.1":  # and the power as a periodic event stream: a SEND, unconfirmed
            cp.channel.notify("NotifyPeriodicEventStream", m.periodic_event_stream(c.id, m.timestamp(), c.effective_power()))


async def _stop(cp: Charger, c: Connector, tx: Tx, reason: str) -> None:
    c.advance(cp.loop.time())
    await cp.call(*cp.stop_message(c, tx, reason))
    cp.stopped(c, tx)
    if cp.link is not None:
        cp.set_status(c, "Finishing")
        cp.set_status(c, cp.idle_status(c))


# --- the transaction's start, each version's way ------------------------------------------------------------


async def start_transaction(cp: Charger, c: Connector, tag: str, meter_start: int, ts: str, *, remote: bool,
                            remote_start_id: int | None, reservation_id: int | None) -> tuple[Tx, bool]:
    """Start a transaction on `c` (it becomes `c.tx`): the transaction, and whether the CSMS accepted it."""
    if cp.v16:
        return await _start_16(cp, c, tag, meter_start, ts, reservation_id)
    return await _start_2(cp, c, tag, meter_start, ts, remote, remote_start_id, reservation_id)


async def _start_16(cp: Charger, c: Connector, tag: str, meter_start: int, ts: str,
                    reservation_id: int | None) -> tuple[Tx, bool]:
    answer = await cp.call("StartTransaction", m.start_transaction(c.id, tag, meter_start, ts, reservation_id))
    tx = Tx(answer["transactionId"], tag, meter_start, cp.loop.time())
    c.tx = tx
    return tx, (answer.get("idTagInfo") or {}).get("status") == "Accepted"


async def _start_2(cp: Charger, c: Connector, tag: str, meter_start: int, ts: str, remote: bool,
                   remote_start_id: int | None, reservation_id: int | None) -> tuple[Tx, bool]:
    """The transaction is ours from the start: it charges while the CSMS reads the Started event."""
    tx = Tx(f"{cp.rng.getrandbits(128):032x}", tag, meter_start, cp.loop.time(), remote_start_id)
    c.tx = tx
    c.charging = True
    sample = m.meter_value(cp.version, ts, c.register, c.effective_power(), "Transaction.Begin")
    answer = await cp.call("TransactionEvent", m.transaction_event(
        "Started", ts, "RemoteStart" if remote else "Authorized", tx.next_seq(), tx.id, evse=c.id,
        charging_state="Charging", tag=tag, sample=sample, remote_start_id=remote_start_id,
        reservation_id=reservation_id))
    return tx, (answer.get("idTokenInfo") or {"status": "Accepted"}).get("status") == "Accepted"
