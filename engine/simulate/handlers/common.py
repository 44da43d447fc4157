"""What the 1.6 and the 2.x answers share: connector targets, limits, profiles, reservations, triggers.

Each function takes the charge point's state (`state.Charger`); the ones
named like an action (`remote_stop`, `cancel_reservation`, `send_local_list`)
are answers both versions' tables hold.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from engine.simulate import messages as m
from engine.simulate.calls import Answer
from engine.simulate.model import Connector
from engine.simulate.state import Charger


def parse_time(text: Any) -> float | None:
    """Seconds from now until an RFC 3339 time (None if unreadable)."""
    if not isinstance(text, str):
        return None
    try:
        when = datetime.datetime.fromisoformat(text)  # 3.11 reads "Z"
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)  # a time without a zone is taken as UTC
    return (when - datetime.datetime.now(datetime.UTC)).total_seconds()


def with_status(value: str) -> dict[str, Any]:
    return {"status": value}


def target_connectors(cp: Charger, connector_id: int | None) -> list[Connector] | None:
    """Connector 0 / no id: all of them; an unknown id: None."""
    if connector_id in (None, 0):
        return list(cp.connectors.values())
    c = cp.connector(connector_id)
    return None if c is None else [c]


def limit_w(unit: Any, periods: Any) -> float | None:
    """The first period's limit in W (A at 230 V per phase, 3 phases unless given)."""
    if not isinstance(periods, list) or not periods or not isinstance(periods[0], dict):
        return None
    limit = periods[0].get("limit")
    if not isinstance(limit, (int, float)):
        return None
    if unit == "A":
        phases = periods[0].get("numberPhases") or 3
        return float(limit) * 230.0 * phases
    return float(limit)


def add_profile(cp: Charger, profile_id: int, target: int, schedule: dict[str, Any]) -> None:
    """Keep the profile's limit (its schedule's first period) for connector `target` (0: all) and apply it."""
    cp.profiles[profile_id] = (target, limit_w(schedule.get("chargingRateUnit"), schedule.get("chargingSchedulePeriod")))
    apply_limits(cp)


def apply_limits(cp: Charger) -> None:
    for c in cp.connectors.values():
        limits = [w for connector, w in cp.profiles.values() if w is not None and connector in (0, c.id)]
        c.advance(cp.loop.time())
        c.limit_w = min(limits) if limits else None


def composite_limit(c: Connector, unit: str) -> int:
    watts = c.limit_w if c.limit_w is not None else 22000.0
    return int(watts) if unit == "W" else int(watts / 690.0)


def change_availability(cp: Charger, targets: list[Connector], operative: bool) -> str:
    scheduled = False
    for c in targets:
        if c.tx is not None and not operative:
            c.pending_operative = False
            scheduled = True
            continue
        c.operative = operative
        c.pending_operative = None
        if c.tx is None and not c.starting:
            cp.set_status(c, cp.idle_status(c))
    return "Scheduled" if scheduled else "Accepted"


def reserve(cp: Charger, c: Connector | None, reservation_id: int, tag: str, expiry: Any) -> str:
    if c is None:
        return "Rejected"
    if not c.operative:
        return "Unavailable"
    if c.tx is not None or c.starting or c.remote is not None:
        return "Occupied"
    if c.reservation is not None and c.reservation[0] != reservation_id:
        return "Occupied"
    seconds = parse_time(expiry)
    if seconds is not None and seconds <= 0:
        return "Rejected"
    if c.reservation is not None:
        cp.cancel_reservation(reservation_id)
    cp.reserve(c, reservation_id, tag, seconds)
    return "Accepted"


def remote_stop(cp: Charger, p: dict[str, Any]) -> Answer:
    """RemoteStopTransaction (1.6), RequestStopTransaction (2.x)."""
    tx_id = p["transactionId"]
    for c in cp.connectors.values():
        if c.tx is not None and c.tx.id == tx_id and c.tx.stop_reason is None:
            return with_status("Accepted"), lambda c=c: cp.stop_transaction(c, "Remote")
    return with_status("Rejected"), None


def trigger_either(cp: Charger, what: str) -> Answer | None:
    """A TriggerMessage that 1.6 and 2.x answer alike; None for the others."""
    if what == "BootNotification":
        return with_status("Accepted"), lambda: cp.loop.create_task(cp.triggered_boot())
    if what == "Heartbeat":
        return with_status("Accepted"), cp.send_heartbeat
    if what == "FirmwareStatusNotification":
        return with_status("Accepted"), lambda: cp.send("FirmwareStatusNotification", m.firmware_status(cp.version))
    return None


def remote_target(cp: Charger, connector_id: int | None, tag: str) -> Connector | None:
    if connector_id is not None:
        c = cp.connector(connector_id)
        if c is None or not c.free():
            return None
        if c.reservation is not None and c.reservation[1] != tag:
            return None
        return c
    for c in cp.connectors.values():
        if c.free() and (c.reservation is None or c.reservation[1] == tag):
            return c
    return None


def set_profile(cp: Charger, target: int, profile_id: int, purpose: str, station_max: str,
                 schedule: dict[str, Any]) -> Answer:
    """SetChargingProfile as a charger would take it (same rules in 1.6 and 2.x, other field names)."""
    if target != 0 and cp.connector(target) is None:
        return with_status("Rejected"), None
    if purpose == station_max and target != 0:
        return with_status("Rejected"), None
    if purpose == "TxProfile":
        c = cp.connector(target)
        if c is None or c.tx is None:
            return with_status("Rejected"), None
    add_profile(cp, profile_id, target, schedule)
    return with_status("Accepted"), None


def clear_profile(cp: Charger, profile_id: int | None, target: int | None) -> Answer:
    """ClearChargingProfile: one profile by id, else every profile of the connector/EVSE (or all)."""
    if profile_id is not None:
        matched = [profile_id] if profile_id in cp.profiles else []
    else:
        matched = [k for k, (conn, _) in cp.profiles.items() if target is None or conn == target]
    for k in matched:
        del cp.profiles[k]
    apply_limits(cp)
    return with_status("Accepted" if matched else "Unknown"), None


def cancel_reservation(cp: Charger, p: dict[str, Any]) -> Answer:
    return with_status("Accepted" if cp.cancel_reservation(p["reservationId"]) else "Rejected"), None


def send_local_list(cp: Charger, p: dict[str, Any]) -> Answer:
    cp.local_list_version = p["listVersion" if cp.v16 else "versionNumber"]
    return with_status("Accepted"), None


def for_each(connectors: list[Connector], act: Callable[[Connector], object]) -> Callable[[], None]:
    """What to do once the answer has been sent: `act` on each of `connectors`."""
    def after() -> None:
        for c in connectors:
            act(c)
    return after
