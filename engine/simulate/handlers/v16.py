"""How a simulated charge point answers the CSMS's OCPP 1.6 CALLs: the 1.6 answer table, `V16`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.simulate import messages as m
from engine.simulate.calls import Answer
from engine.simulate.handlers.common import (
    add_profile,
    cancel_reservation,
    change_availability,
    clear_profile,
    composite_limit,
    for_each,
    remote_stop,
    remote_target,
    reserve,
    send_local_list,
    set_profile,
    target_connectors,
    trigger_either,
    with_status,
)
from engine.simulate.handlers.config import change_configuration, get_configuration
from engine.simulate.state import Charger


def _reset_16(cp: Charger, p: dict[str, Any]) -> Answer:
    kind = p["type"]
    if kind not in ("Hard", "Soft"):
        raise ValueError(f"Reset type {kind!r}")
    reason = "HardReset" if kind == "Hard" else "SoftReset"
    return with_status("Accepted"), lambda: cp.request_reboot(reason)


def _remote_start_16(cp: Charger, p: dict[str, Any]) -> Answer:
    tag = p["idTag"]
    c = remote_target(cp, p.get("connectorId"), tag)
    if c is None:
        return with_status("Rejected"), None
    profile = p.get("chargingProfile")
    if isinstance(profile, dict) and profile.get("chargingProfilePurpose") != "TxProfile":
        return with_status("Rejected"), None
    if isinstance(profile, dict):
        add_profile(cp, profile.get("chargingProfileId", -1), c.id, profile.get("chargingSchedule") or {})
    return with_status("Accepted"), lambda: cp.remote_start(c, tag, None)


def _unlock_16(cp: Charger, p: dict[str, Any]) -> Answer:
    c = cp.connector(p["connectorId"])
    if c is None:
        return with_status("NotSupported"), None
    if c.tx is not None:
        return with_status("Unlocked"), lambda: cp.stop_transaction(c, "UnlockCommand")
    return with_status("Unlocked"), None


def _change_availability_16(cp: Charger, p: dict[str, Any]) -> Answer:
    targets = target_connectors(cp, p["connectorId"])
    if targets is None:
        return with_status("Rejected"), None
    return with_status(change_availability(cp, targets, p["type"] == "Operative")), None


def _trigger_16(cp: Charger, p: dict[str, Any], extended: bool = False) -> Answer:
    what = p["requestedMessage"]
    connector_id = p.get("connectorId")
    if connector_id is not None and connector_id != 0 and cp.connector(connector_id) is None:
        return with_status("Rejected"), None
    either = trigger_either(cp, what)
    if either is not None:
        return either
    if what == "StatusNotification":
        def statuses() -> None:
            if connector_id is None:
                cp.send_all_statuses()
            elif connector_id == 0:
                cp.send_station_status()
            else:
                c = cp.connectors[connector_id]
                cp.set_status(c, c.status, force=True)
        return with_status("Accepted"), statuses
    if what == "MeterValues":
        targets = target_connectors(cp, connector_id) or []
        return with_status("Accepted"), for_each(targets, lambda c: cp.send(*cp.meter_now(c)))
    if what == "DiagnosticsStatusNotification" and not extended:
        return with_status("Accepted"), lambda: cp.send("DiagnosticsStatusNotification", m.diagnostics_status())
    if what == "LogStatusNotification" and extended:
        return with_status("Accepted"), lambda: cp.send("LogStatusNotification", m.log_status())
    return with_status("NotImplemented" if extended else "Rejected"), None


def _set_profile_16(cp: Charger, p: dict[str, Any]) -> Answer:
    profile = p["csChargingProfiles"]
    return set_profile(cp, p["connectorId"], profile["chargingProfileId"], profile["chargingProfilePurpose"],
                        "ChargerMaxProfile", profile["chargingSchedule"])


def _clear_profile_16(cp: Charger, p: dict[str, Any]) -> Answer:
    return clear_profile(cp, p.get("id"), p.get("connectorId"))


def _composite_16(cp: Charger, p: dict[str, Any]) -> Answer:
    c = cp.connector(p["connectorId"])
    if c is None:
        return with_status("Rejected"), None
    unit = p.get("chargingRateUnit") or "W"
    return {"status": "Accepted", "connectorId": c.id, "scheduleStart": m.timestamp(),
            "chargingSchedule": {"duration": p["duration"], "chargingRateUnit": unit,
                                 "chargingSchedulePeriod": [{"startPeriod": 0, "limit": composite_limit(c, unit)}]}}, None


def _reserve_16(cp: Charger, p: dict[str, Any]) -> Answer:
    connector_id = p["connectorId"]
    c = None if connector_id == 0 else cp.connector(connector_id)
    return with_status(reserve(cp, c, p["reservationId"], p["idTag"], p["expiryDate"])), None


V16: dict[str, Callable[[Charger, dict[str, Any]], Answer]] = {
    "Reset": _reset_16,
    "RemoteStartTransaction": _remote_start_16,
    "RemoteStopTransaction": remote_stop,
    "UnlockConnector": _unlock_16,
    "GetConfiguration": get_configuration,
    "ChangeConfiguration": change_configuration,
    "ChangeAvailability": _change_availability_16,
    "TriggerMessage": _trigger_16,
    "ExtendedTriggerMessage": lambda cp, p: _trigger_16(cp, p, extended=True),
    "SetChargingProfile": _set_profile_16,
    "ClearChargingProfile": _clear_profile_16,
    "GetCompositeSchedule": _composite_16,
    "ReserveNow": _reserve_16,
    "CancelReservation": cancel_reservation,
    "ClearCache": lambda cp, p: (with_status("Accepted"), None),
    "DataTransfer": lambda cp, p: (with_status("UnknownVendorId"), None),
    "GetLocalListVersion": lambda cp, p: ({"listVersion": cp.local_list_version}, None),
    "SendLocalList": send_local_list,
    "GetDiagnostics": lambda cp, p: ({}, None),
    "UpdateFirmware": lambda cp, p: ({}, None),
}
