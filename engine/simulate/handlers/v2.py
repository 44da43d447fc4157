"""How a simulated charge point answers the CSMS's OCPP 2.0.1 and 2.1 CALLs: the 2.x answer table, `V2`."""

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
from engine.simulate.handlers.config import get_base_report, get_variables, set_variables
from engine.simulate.model import Connector
from engine.simulate.state import Charger


def _reset_2(cp: Charger, p: dict[str, Any]) -> Answer:
    kind = p["type"]
    evse_id = p.get("evseId")
    if evse_id is not None:
        c = cp.connector(evse_id)
        if c is None:
            return with_status("Rejected"), None
        return with_status("Accepted"), (lambda: cp.stop_transaction(c, "HardReset")) if c.tx is not None else None
    busy = any(c.tx is not None for c in cp.connectors.values())
    if kind == "OnIdle" and busy:
        cp.pending_reset = "SoftReset"
        return with_status("Scheduled"), None
    return with_status("Accepted"), lambda: cp.request_reboot("HardReset")


def _request_start(cp: Charger, p: dict[str, Any]) -> Answer:
    tag = p["idToken"]["idToken"]
    c = remote_target(cp, p.get("evseId"), tag)
    if c is None:
        return with_status("Rejected"), None
    profile = p.get("chargingProfile")
    if isinstance(profile, dict):
        if profile.get("chargingProfilePurpose") != "TxProfile":
            return with_status("Rejected"), None
        add_profile(cp, profile.get("id", -1), c.id, (profile.get("chargingSchedule") or [{}])[0])
    return with_status("Accepted"), lambda: cp.remote_start(c, tag, p["remoteStartId"])


def _unlock_2(cp: Charger, p: dict[str, Any]) -> Answer:
    c = cp.connector(p["evseId"])
    if c is None or p["connectorId"] != 1:
        return with_status("UnknownConnector"), None
    if c.tx is not None:
        return with_status("OngoingAuthorizedTransaction"), None
    return with_status("Unlocked"), None


def _change_availability_2(cp: Charger, p: dict[str, Any]) -> Answer:
    evse = p.get("evse")
    targets = target_connectors(cp, evse.get("id") if isinstance(evse, dict) else None)
    if targets is None:
        return with_status("Rejected"), None
    return with_status(change_availability(cp, targets, p["operationalStatus"] == "Operative")), None


def _trigger_2(cp: Charger, p: dict[str, Any]) -> Answer:
    what = p["requestedMessage"]
    evse = p.get("evse")
    evse_id = evse.get("id") if isinstance(evse, dict) else None
    targets = target_connectors(cp, evse_id)
    if targets is None:
        return with_status("Rejected"), None
    either = trigger_either(cp, what)
    if either is not None:
        return either
    if what == "StatusNotification":
        return with_status("Accepted"), for_each(targets, lambda c: cp.set_status(c, c.status, force=True))
    if what == "MeterValues":  # outside the transaction, if any (TransactionEvent is the one within)
        return with_status("Accepted"), for_each(targets, lambda c: cp.send(*cp.meter_now(c, in_transaction=False)))
    if what == "TransactionEvent":
        busy = [c for c in targets if c.tx is not None]
        if not busy:
            return with_status("Rejected"), None
        def sample(c: Connector) -> None:
            if c.tx is not None:  # the transaction may have ended by the time the answer is out
                cp.send(*cp.meter_now(c))
        return with_status("Accepted"), for_each(busy, sample)
    if what == "LogStatusNotification":
        return with_status("Accepted"), lambda: cp.send("LogStatusNotification", m.log_status())
    return with_status("NotImplemented"), None


def _set_profile_2(cp: Charger, p: dict[str, Any]) -> Answer:
    profile = p["chargingProfile"]
    return set_profile(cp, p["evseId"], profile["id"], profile["chargingProfilePurpose"],
                        "ChargingStationMaxProfile", (profile.get("chargingSchedule") or [{}])[0])


def _clear_profile_2(cp: Charger, p: dict[str, Any]) -> Answer:
    return clear_profile(cp, p.get("chargingProfileId"), (p.get("chargingProfileCriteria") or {}).get("evseId"))


def _composite_2(cp: Charger, p: dict[str, Any]) -> Answer:
    evse_id = p["evseId"]
    c = cp.connector(evse_id) if evse_id != 0 else next(iter(cp.connectors.values()))
    if c is None:
        return with_status("Rejected"), None
    unit = p.get("chargingRateUnit") or "W"
    return {"status": "Accepted", "schedule": {
        "evseId": evse_id, "duration": p["duration"], "scheduleStart": m.timestamp(), "chargingRateUnit": unit,
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": composite_limit(c, unit)}]}}, None


def _reserve_2(cp: Charger, p: dict[str, Any]) -> Answer:
    evse_id = p.get("evseId")
    tag = p["idToken"]["idToken"]
    if evse_id is None:
        c = next((x for x in cp.connectors.values() if x.free() and x.reservation is None), None)
        if c is None:
            return with_status("Occupied"), None
    else:
        c = cp.connector(evse_id)
    return with_status(reserve(cp, c, p["id"], tag, p["expiryDateTime"])), None


def _transaction_status(cp: Charger, p: dict[str, Any]) -> Answer:
    tx_id = p.get("transactionId")
    result: dict[str, Any] = {"messagesInQueue": bool(cp.channel.queue) or bool(cp.backlog)}
    if tx_id is not None:
        result["ongoingIndicator"] = any(c.tx is not None and c.tx.id == tx_id for c in cp.connectors.values())
    return result, None


V2: dict[str, Callable[[Charger, dict[str, Any]], Answer]] = {
    "Reset": _reset_2,
    "RequestStartTransaction": _request_start,
    "RequestStopTransaction": remote_stop,
    "UnlockConnector": _unlock_2,
    "GetVariables": get_variables,
    "SetVariables": set_variables,
    "GetBaseReport": get_base_report,
    "ChangeAvailability": _change_availability_2,
    "TriggerMessage": _trigger_2,
    "SetChargingProfile": _set_profile_2,
    "ClearChargingProfile": _clear_profile_2,
    "GetCompositeSchedule": _composite_2,
    "ReserveNow": _reserve_2,
    "CancelReservation": cancel_reservation,
    "GetTransactionStatus": _transaction_status,
    "ClearCache": lambda cp, p: (with_status("Accepted"), None),
    "DataTransfer": lambda cp, p: (with_status("UnknownVendorId"), None),
    "GetLocalListVersion": lambda cp, p: ({"versionNumber": cp.local_list_version}, None),
    "SendLocalList": send_local_list,
    "CostUpdated": lambda cp, p: ({}, None),
    "GetLog": lambda cp, p: (with_status("Rejected"), None),
    "UpdateFirmware": lambda cp, p: (with_status("Rejected"), None),
}
