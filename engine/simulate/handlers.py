"""How a simulated charge point answers the CSMS's CALLs, as a real charger would.

`answer(cp, action, payload)` returns the CALLRESULT payload and, optionally,
what to do once it has been sent (send the triggered message, start the
remote session, reboot). An action the charger does not support earns a
CALLERROR: NotSupported if the version defines it, NotImplemented if not.

Configuration: one store of 1.6 keys (`GetConfiguration`/`ChangeConfiguration`);
2.0.1 and 2.1 reach the same values through device-model variables
(`GetVariables`/`SetVariables`/`GetBaseReport`).
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.simulate import messages as m

if TYPE_CHECKING:
    from engine.simulate.charger import ChargePoint
    from engine.simulate.model import Connector
    from engine.simulate.options import SimOptions

Answer = tuple[dict[str, Any], Callable[[], None] | None]


class Refuse(Exception):
    """Answer with a CALLERROR."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


# key: (writable, kind)
CONFIG_16: dict[str, tuple[bool, str]] = {
    "AllowOfflineTxForUnknownId": (True, "bool"),
    "AuthorizationCacheEnabled": (True, "bool"),
    "AuthorizeRemoteTxRequests": (True, "bool"),
    "ChargeProfileMaxStackLevel": (False, "int"),
    "ChargingScheduleAllowedChargingRateUnit": (False, "csl"),
    "ChargingScheduleMaxPeriods": (False, "int"),
    "ClockAlignedDataInterval": (True, "int"),
    "ConnectionTimeOut": (True, "int"),
    "GetConfigurationMaxKeys": (False, "int"),
    "HeartbeatInterval": (True, "int"),
    "LocalAuthListEnabled": (True, "bool"),
    "LocalAuthListMaxLength": (False, "int"),
    "LocalAuthorizeOffline": (True, "bool"),
    "LocalPreAuthorize": (True, "bool"),
    "MaxChargingProfilesInstalled": (False, "int"),
    "MeterValueSampleInterval": (True, "int"),
    "MeterValuesAlignedData": (True, "csl"),
    "MeterValuesSampledData": (True, "csl"),
    "NumberOfConnectors": (False, "int"),
    "ReserveConnectorZeroSupported": (False, "bool"),
    "ResetRetries": (True, "int"),
    "SendLocalListMaxLength": (False, "int"),
    "StopTransactionOnEVSideDisconnect": (True, "bool"),
    "StopTransactionOnInvalidId": (True, "bool"),
    "StopTxnSampledData": (True, "csl"),
    "SupportedFeatureProfiles": (False, "csl"),
    "TransactionMessageAttempts": (True, "int"),
    "TransactionMessageRetryInterval": (True, "int"),
    "UnlockConnectorOnEVSideDisconnect": (True, "bool"),
    "WebSocketPingInterval": (True, "int"),
}

# 2.x (component, variable) → the 1.6 key holding its value
VARIABLES_2: dict[tuple[str, str], str] = {
    ("OCPPCommCtrlr", "HeartbeatInterval"): "HeartbeatInterval",
    ("OCPPCommCtrlr", "WebSocketPingInterval"): "WebSocketPingInterval",
    ("OCPPCommCtrlr", "ResetRetries"): "ResetRetries",
    ("SampledDataCtrlr", "TxUpdatedInterval"): "MeterValueSampleInterval",
    ("SampledDataCtrlr", "TxUpdatedMeasurands"): "MeterValuesSampledData",
    ("SampledDataCtrlr", "TxEndedMeasurands"): "StopTxnSampledData",
    ("AlignedDataCtrlr", "Interval"): "ClockAlignedDataInterval",
    ("AlignedDataCtrlr", "Measurands"): "MeterValuesAlignedData",
    ("AuthCtrlr", "AuthorizeRemoteStart"): "AuthorizeRemoteTxRequests",
    ("AuthCtrlr", "LocalPreAuthorize"): "LocalPreAuthorize",
    ("AuthCtrlr", "LocalAuthorizeOffline"): "LocalAuthorizeOffline",
    ("AuthCacheCtrlr", "Enabled"): "AuthorizationCacheEnabled",
    ("TxCtrlr", "EVConnectionTimeOut"): "ConnectionTimeOut",
    ("TxCtrlr", "StopTxOnEVSideDisconnect"): "StopTransactionOnEVSideDisconnect",
    ("TxCtrlr", "StopTxOnInvalidId"): "StopTransactionOnInvalidId",
    ("LocalAuthListCtrlr", "Enabled"): "LocalAuthListEnabled",
    ("SmartChargingCtrlr", "ProfileStackLevel"): "ChargeProfileMaxStackLevel",
    ("SmartChargingCtrlr", "PeriodsPerSchedule"): "ChargingScheduleMaxPeriods",
}
COMPONENTS_2 = frozenset(component for component, _ in VARIABLES_2)
_DATA_TYPE = {"int": "integer", "bool": "boolean", "csl": "MemberList", "str": "string"}


def default_config(o: SimOptions) -> dict[str, str]:
    """The configuration every charge point starts with (each keeps only its changes)."""
    return {
        "AllowOfflineTxForUnknownId": "false",
        "AuthorizationCacheEnabled": "false",
        "AuthorizeRemoteTxRequests": "false",
        "ChargeProfileMaxStackLevel": "10",
        "ChargingScheduleAllowedChargingRateUnit": "Current,Power",
        "ChargingScheduleMaxPeriods": "24",
        "ClockAlignedDataInterval": "0",
        "ConnectionTimeOut": "60",
        "GetConfigurationMaxKeys": "50",
        "HeartbeatInterval": "60",
        "LocalAuthListEnabled": "true",
        "LocalAuthListMaxLength": "1000",
        "LocalAuthorizeOffline": "true",
        "LocalPreAuthorize": "false",
        "MaxChargingProfilesInstalled": "10",
        "MeterValueSampleInterval": str(max(1, round(o.meter_interval))),
        "MeterValuesAlignedData": m.ENERGY,
        "MeterValuesSampledData": f"{m.ENERGY},{m.POWER}",
        "NumberOfConnectors": str(o.connectors),
        "ReserveConnectorZeroSupported": "false",
        "ResetRetries": "3",
        "SendLocalListMaxLength": "100",
        "StopTransactionOnEVSideDisconnect": "true",
        "StopTransactionOnInvalidId": "true",
        "StopTxnSampledData": m.ENERGY,
        "SupportedFeatureProfiles": "Core,FirmwareManagement,LocalAuthListManagement,Reservation,SmartCharging,RemoteTrigger",
        "TransactionMessageAttempts": "3",
        "TransactionMessageRetryInterval": "60",
        "UnlockConnectorOnEVSideDisconnect": "true",
        "WebSocketPingInterval": "0",
    }


@functools.cache
def _known_actions(version: str) -> frozenset[str]:
    """Actions the version defines (a request schema ships for them)."""
    from engine.ocpp.schemas import DEFAULT_SCHEMA_DIR

    names = set()
    for path in (DEFAULT_SCHEMA_DIR / version).glob("*.json"):
        stem = path.stem
        if stem.endswith("Response"):
            continue
        names.add(stem.removesuffix("Request"))
    return frozenset(names)


def answer(cp: ChargePoint, action: str, payload: dict[str, Any]) -> Answer:
    handler = (_V16 if cp.v16 else _V2).get(action)
    if handler is None:
        if action in _known_actions(cp.version):
            raise Refuse("NotSupported", f"{action} is not supported by this charge point")
        raise Refuse("NotImplemented", f"unknown action {action!r}")
    return handler(cp, payload)


def _set_config(cp: ChargePoint, key: str, value: str) -> str:
    """Accepted / Rejected / NotSupported; applies the side effects."""
    spec = CONFIG_16.get(key)
    if spec is None:
        return "NotSupported"
    writable, kind = spec
    if not writable:
        return "Rejected"
    if kind == "int":
        try:
            number = int(value)
        except ValueError:
            return "Rejected"
        if number < 0:
            return "Rejected"
        value = str(number)
        if key == "HeartbeatInterval":
            cp.set_heartbeat(number)
        elif key == "MeterValueSampleInterval":
            cp.meter_interval = float(number) if number > 0 else None
    elif kind == "bool":
        if value.lower() not in ("true", "false"):
            return "Rejected"
        value = value.lower()
    cp.config[key] = value
    return "Accepted"


def _parse_time(text: Any) -> float | None:
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


def _status(value: str) -> dict[str, Any]:
    return {"status": value}


def _targets(cp: ChargePoint, connector_id: int | None) -> list[Connector] | None:
    """Connector 0 / no id: all of them; an unknown id: None."""
    if connector_id in (None, 0):
        return list(cp.connectors.values())
    c = cp.connector(connector_id)
    return None if c is None else [c]


def _limit_w(unit: Any, periods: Any) -> float | None:
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


def _add_profile(cp: ChargePoint, profile_id: int, target: int, schedule: dict[str, Any]) -> None:
    """Keep the profile's limit (its schedule's first period) for connector `target` (0: all) and apply it."""
    cp.profiles[profile_id] = (target, _limit_w(schedule.get("chargingRateUnit"), schedule.get("chargingSchedulePeriod")))
    _apply_limits(cp)


def _apply_limits(cp: ChargePoint) -> None:
    for c in cp.connectors.values():
        limits = [w for connector, w in cp.profiles.values() if w is not None and connector in (0, c.id)]
        c.advance(cp.loop.time())
        c.limit_w = min(limits) if limits else None


def _composite_limit(c: Connector, unit: str) -> int:
    watts = c.limit_w if c.limit_w is not None else 22000.0
    return int(watts) if unit == "W" else int(watts / 690.0)


# --- shared by the versions ------------------------------------------------------------------------


def _change_availability(cp: ChargePoint, targets: list[Connector], operative: bool) -> str:
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


def _reserve(cp: ChargePoint, c: Connector | None, reservation_id: int, tag: str, expiry: Any) -> str:
    if c is None:
        return "Rejected"
    if not c.operative:
        return "Unavailable"
    if c.tx is not None or c.starting or c.remote is not None:
        return "Occupied"
    if c.reservation is not None and c.reservation[0] != reservation_id:
        return "Occupied"
    seconds = _parse_time(expiry)
    if seconds is not None and seconds <= 0:
        return "Rejected"
    if c.reservation is not None:
        cp.cancel_reservation(reservation_id)
    cp.reserve(c, reservation_id, tag, seconds)
    return "Accepted"


def _remote_stop(cp: ChargePoint, p: dict[str, Any]) -> Answer:
    """RemoteStopTransaction (1.6), RequestStopTransaction (2.x)."""
    tx_id = p["transactionId"]
    for c in cp.connectors.values():
        if c.tx is not None and c.tx.id == tx_id and c.tx.stop_reason is None:
            return _status("Accepted"), lambda c=c: cp.stop_transaction(c, "Remote")
    return _status("Rejected"), None


def _trigger_either(cp: ChargePoint, what: str) -> Answer | None:
    """A TriggerMessage that 1.6 and 2.x answer alike; None for the others."""
    if what == "BootNotification":
        return _status("Accepted"), lambda: cp.loop.create_task(cp.triggered_boot())
    if what == "Heartbeat":
        return _status("Accepted"), cp.send_heartbeat
    if what == "FirmwareStatusNotification":
        return _status("Accepted"), lambda: cp.send("FirmwareStatusNotification", m.firmware_status(cp.version))
    return None


def _remote_target(cp: ChargePoint, connector_id: int | None, tag: str) -> Connector | None:
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


# --- 1.6 ------------------------------------------------------------------------------------------


def _reset_16(cp: ChargePoint, p: dict[str, Any]) -> Answer:
    kind = p["type"]
    if kind not in ("Hard", "Soft"):
        raise ValueError(f"Reset type {kind!r}")
    reason = "HardReset" if kind == "Hard" else "SoftReset"
    return _status("Accepted"), lambda: cp.request_reboot(reason)


def _remote_start_16(cp: ChargePoint, p: dict[str, Any]) -> Answer:
    tag = p["idTag"]
    c = _remote_target(cp, p.get("connectorId"), tag)
    if c is None:
        return _status("Rejected"), None
    profile = p.get("chargingProfile")
    if isinstance(profile, dict) and profile.get("chargingProfilePurpose") != "TxProfile":
        return _status("Rejected"), None
    if isinstance(profile, dict):
        _add_profile(cp, profile.get("chargingProfileId", -1), c.id, profile.get("chargingSchedule") or {})
    return _status("Accepted"), lambda: cp.remote_start(c, tag, None)


def _unlock_16(cp: ChargePoint, p: dict[str, Any]) -> Answer:
    c = cp.connector(p["connectorId"])
    if c is None:
        return _status("NotSupported"), None
    if c.tx is not None:
        return _status("Unlocked"), lambda: cp.stop_transaction(c, "UnlockCommand")
    return _status("Unlocked"), None


def _get_configuration(cp: ChargePoint, p: dict[str, Any]) -> Answer:
    keys = p.get("key") or list(CONFIG_16)
    known, unknown = [], []
    for key in keys:
        if key in CONFIG_16:
            known.append({"key": key, "readonly": not CONFIG_16[key][0], "value": cp.config[key]})
        else:
            unknown.append(key)
    result: dict[str, Any] = {}
    if known:
        result["configurationKey"] = known
    if unknown:
        result["unknownKey"] = unknown
    return result, None


def _change_configuration(cp: ChargePoint, p: dict[str, Any]) -> Answer:
    return _status(_set_config(cp, p["key"], p["value"])), None


def _change_availability_16(cp: ChargePoint, p: dict[str, Any]) -> Answer:
    targets = _targets(cp, p["connectorId"])
    if targets is None:
        return _status("Rejected"), None
    return _status(_change_availability(cp, targets, p["type"] == "Operative")), None


def _trigger_16(cp: ChargePoint, p: dict[str, Any], extended: bool = False) -> Answer:
    what = p["requestedMessage"]
    connector_id = p.get("connectorId")
    if connector_id is not None and connector_id != 0 and cp.connector(connector_id) is None:
        return _status("Rejected"), None
    either = _trigger_either(cp, what)
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
        return _status("Accepted"), statuses
    if what == "MeterValues":
        targets = _targets(cp, connector_id) or []
        return _status("Accepted"), lambda: [cp.send(*cp.meter_now(c)) for c in targets]
    if what == "DiagnosticsStatusNotification" and not extended:
        return _status("Accepted"), lambda: cp.send("DiagnosticsStatusNotification", m.diagnostics_status())
    if what == "LogStatusNotification" and extended:
        return _status("Accepted"), lambda: cp.send("LogStatusNotification", m.log_status())
    return _status("NotImplemented" if extended else "Rejected"), None


def _set_profile_16(cp: ChargePoint, p: dict[str, Any]) -> Answer:
    profile = p["csChargingProfiles"]
    return _set_profile(cp, p["connectorId"], profile["chargingProfileId"], profile["chargingProfilePurpose"],
                        "ChargePointMaxProfile", profile["chargingSchedule"])


def _clear_profile_16(cp: ChargePoint, p: dict[str, Any]) -> Answer:
    return _clear_profile(cp, p.get("id"), p.get("connectorId"))


def _composite_16(cp: ChargePoint, p: dict[str, Any]) -> Answer:
    c = cp.connector(p["connectorId"])
    if c is None:
        return _status("Rejected"), None
    unit = p.get("chargingRateUnit") or "W"
    return {"status": "Accepted", "connectorId": c.id, "scheduleStart": m.timestamp(),
            "chargingSchedule": {"duration": p["duration"], "chargingRateUnit": unit,
                                 "chargingSchedulePeriod": [{"startPeriod": 0, "limit": _composite_limit(c, unit)}]}}, None


def _reserve_16(cp: ChargePoint, p: dict[str, Any]) -> Answer:
    connector_id = p["connectorId"]
    c = None if connector_id == 0 else cp.connector(connector_id)
    return _status(_reserve(cp, c, p["reservationId"], p["idTag"], p["expiryDate"])), None


def _cancel_reservation(cp: ChargePoint, p: dict[str, Any]) -> Answer:
    return _status("Accepted" if cp.cancel_reservation(p["reservationId"]) else "Rejected"), None


def _send_local_list(cp: ChargePoint, p: dict[str, Any]) -> Answer:
    cp.local_list_version = p["listVersion" if cp.v16 else "versionNumber"]
    return _status("Accepted"), None


_V16: dict[str, Callable[[ChargePoint, dict[str, Any]], Answer]] = {
    "Reset": _reset_16,
    "RemoteStartTransaction": _remote_start_16,
    "RemoteStopTransaction": _remote_stop,
    "UnlockConnector": _unlock_16,
    "GetConfiguration": _get_configuration,
    "ChangeConfiguration": _change_configuration,
    "ChangeAvailability": _change_availability_16,
    "TriggerMessage": _trigger_16,
    "ExtendedTriggerMessage": lambda cp, p: _trigger_16(cp, p, extended=True),
    "SetChargingProfile": _set_profile_16,
    "ClearChargingProfile": _clear_profile_16,
    "GetCompositeSchedule": _composite_16,
    "ReserveNow": _reserve_16,
    "CancelReservation": _cancel_reservation,
    "ClearCache": lambda cp, p: (_status("Accepted"), None),
    "DataTransfer": lambda cp, p: (_status("UnknownVendorId"), None),
    "GetLocalListVersion": lambda cp, p: ({"listVersion": cp.local_list_version}, None),
    "SendLocalList": _send_local_list,
    "GetDiagnostics": lambda cp, p: ({}, None),
    "UpdateFirmware": lambda cp, p: ({}, None),
}


# --- 2.0.1 and 2.1 ----------------------------------------------------------------------------------------


def _reset_2(cp: ChargePoint, p: dict[str, Any]) -> Answer:
    kind = p["type"]
    evse_id = p.get("evseId")
    if evse_id is not None:
        c = cp.connector(evse_id)
        if c is None:
            return _status("Rejected"), None
        return _status("Accepted"), (lambda: cp.stop_transaction(c, "HardReset")) if c.tx is not None else None
    busy = any(c.tx is not None for c in cp.connectors.values())
    if kind == "OnIdle" and busy:
        cp.pending_reset = "SoftReset"
        return _status("Scheduled"), None
    return _status("Accepted"), lambda: cp.request_reboot("HardReset")


def _request_start(cp: ChargePoint, p: dict[str, Any]) -> Answer:
    tag = p["idToken"]["idToken"]
    c = _remote_target(cp, p.get("evseId"), tag)
    if c is None:
        return _status("Rejected"), None
    profile = p.get("chargingProfile")
    if isinstance(profile, dict):
        if profile.get("chargingProfilePurpose") != "TxProfile":
            return _status("Rejected"), None
        _add_profile(cp, profile.get("id", -1), c.id, (profile.get("chargingSchedule") or [{}])[0])
    return _status("Accepted"), lambda: cp.remote_start(c, tag, p["remoteStartId"])


def _unlock_2(cp: ChargePoint, p: dict[str, Any]) -> Answer:
    c = cp.connector(p["evseId"])
    if c is None or p["connectorId"] != 1:
        return _status("UnknownConnector"), None
    if c.tx is not None:
        return _status("OngoingAuthorizedTransaction"), None
    return _status("Unlocked"), None


def _variable_key(component: Any, variable: Any) -> tuple[str | None, str]:
    """(1.6 key, status if none): Accepted means found."""
    name = component.get("name") if isinstance(component, dict) else None
    var = variable.get("name") if isinstance(variable, dict) else None
    if name not in COMPONENTS_2:
        return None, "UnknownComponent"
    key = VARIABLES_2.get((name, var))
    if key is None:
        return None, "UnknownVariable"
    return key, "Accepted"


def _get_variables(cp: ChargePoint, p: dict[str, Any]) -> Answer:
    results = []
    for item in p["getVariableData"]:
        attribute = item.get("attributeType", "Actual")
        key, status = _variable_key(item["component"], item["variable"])
        if key is not None and attribute != "Actual":
            status = "NotSupportedAttributeType"
        result: dict[str, Any] = {"attributeStatus": status, "attributeType": attribute,
                                  "component": item["component"], "variable": item["variable"]}
        if status == "Accepted" and key is not None:
            result["attributeValue"] = cp.config[key]
        results.append(result)
    return {"getVariableResult": results}, None


def _set_variables(cp: ChargePoint, p: dict[str, Any]) -> Answer:
    results = []
    for item in p["setVariableData"]:
        attribute = item.get("attributeType", "Actual")
        key, status = _variable_key(item["component"], item["variable"])
        if key is not None:
            if attribute != "Actual":
                status = "NotSupportedAttributeType"
            else:
                outcome = _set_config(cp, key, str(item["attributeValue"]))
                status = "Accepted" if outcome == "Accepted" else "Rejected"
        results.append({"attributeStatus": status, "attributeType": attribute,
                        "component": item["component"], "variable": item["variable"]})
    return {"setVariableResult": results}, None


def _get_base_report(cp: ChargePoint, p: dict[str, Any]) -> Answer:
    request_id = p["requestId"]
    if p["reportBase"] not in ("ConfigurationInventory", "FullInventory", "SummaryInventory"):
        return _status("NotSupported"), None

    def report() -> None:
        variables = []
        for (component, variable), key in VARIABLES_2.items():
            writable, kind = CONFIG_16[key]
            variables.append((component, variable, cp.config[key], writable, _DATA_TYPE[kind]))
        cp.send("NotifyReport", m.notify_report(request_id, m.timestamp(), variables))

    return _status("Accepted"), report


def _change_availability_2(cp: ChargePoint, p: dict[str, Any]) -> Answer:
    evse = p.get("evse")
    targets = _targets(cp, evse.get("id") if isinstance(evse, dict) else None)
    if targets is None:
        return _status("Rejected"), None
    return _status(_change_availability(cp, targets, p["operationalStatus"] == "Operative")), None


def _trigger_2(cp: ChargePoint, p: dict[str, Any]) -> Answer:
    what = p["requestedMessage"]
    evse = p.get("evse")
    evse_id = evse.get("id") if isinstance(evse, dict) else None
    targets = _targets(cp, evse_id)
    if targets is None:
        return _status("Rejected"), None
    either = _trigger_either(cp, what)
    if either is not None:
        return either
    if what == "StatusNotification":
        return _status("Accepted"), lambda: [cp.set_status(c, c.status, force=True) for c in targets]
    if what == "MeterValues":  # outside the transaction, if any (TransactionEvent is the one within)
        return _status("Accepted"), lambda: [cp.send(*cp.meter_now(c, in_transaction=False)) for c in targets]
    if what == "TransactionEvent":
        busy = [c for c in targets if c.tx is not None]
        if not busy:
            return _status("Rejected"), None
        return _status("Accepted"), lambda: [cp.send(*cp.meter_now(c)) for c in busy if c.tx is not None]
    if what == "LogStatusNotification":
        return _status("Accepted"), lambda: cp.send("LogStatusNotification", m.log_status())
    return _status("NotImplemented"), None


def _set_profile_2(cp: ChargePoint, p: dict[str, Any]) -> Answer:
    profile = p["chargingProfile"]
    return _set_profile(cp, p["evseId"], profile["id"], profile["chargingProfilePurpose"],
                        "ChargingStationMaxProfile", (profile.get("chargingSchedule") or [{}])[0])


def _set_profile(cp: ChargePoint, target: int, profile_id: int, purpose: str, station_max: str,
                 schedule: dict[str, Any]) -> Answer:
    """SetChargingProfile as a charger would take it (same rules in 1.6 and 2.x, other field names)."""
    if target != 0 and cp.connector(target) is None:
        return _status("Rejected"), None
    if purpose == station_max and target != 0:
        return _status("Rejected"), None
    if purpose == "TxProfile":
        c = cp.connector(target)
        if c is None or c.tx is None:
            return _status("Rejected"), None
    _add_profile(cp, profile_id, target, schedule)
    return _status("Accepted"), None


def _clear_profile_2(cp: ChargePoint, p: dict[str, Any]) -> Answer:
    return _clear_profile(cp, p.get("chargingProfileId"), (p.get("chargingProfileCriteria") or {}).get("evseId"))


def _clear_profile(cp: ChargePoint, profile_id: int | None, target: int | None) -> Answer:
    """ClearChargingProfile: one profile by id, else every profile of the connector/EVSE (or all)."""
    if profile_id is not None:
        matched = [profile_id] if profile_id in cp.profiles else []
    else:
        matched = [k for k, (conn, _) in cp.profiles.items() if target is None or conn == target]
    for k in matched:
        del cp.profiles[k]
    _apply_limits(cp)
    return _status("Accepted" if matched else "Unknown"), None


def _composite_2(cp: ChargePoint, p: dict[str, Any]) -> Answer:
    evse_id = p["evseId"]
    c = cp.connector(evse_id) if evse_id != 0 else next(iter(cp.connectors.values()))
    if c is None:
        return _status("Rejected"), None
    unit = p.get("chargingRateUnit") or "W"
    return {"status": "Accepted", "schedule": {
        "evseId": evse_id, "duration": p["duration"], "scheduleStart": m.timestamp(), "chargingRateUnit": unit,
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": _composite_limit(c, unit)}]}}, None


def _reserve_2(cp: ChargePoint, p: dict[str, Any]) -> Answer:
    evse_id = p.get("evseId")
    tag = p["idToken"]["idToken"]
    if evse_id is None:
        c = next((x for x in cp.connectors.values() if x.free() and x.reservation is None), None)
        if c is None:
            return _status("Occupied"), None
    else:
        c = cp.connector(evse_id)
    return _status(_reserve(cp, c, p["id"], tag, p["expiryDateTime"])), None


def _transaction_status(cp: ChargePoint, p: dict[str, Any]) -> Answer:
    tx_id = p.get("transactionId")
    result: dict[str, Any] = {"messagesInQueue": bool(cp.queue) or bool(cp.backlog)}
    if tx_id is not None:
        result["ongoingIndicator"] = any(c.tx is not None and c.tx.id == tx_id for c in cp.connectors.values())
    return result, None


_V2: dict[str, Callable[[ChargePoint, dict[str, Any]], Answer]] = {
    "Reset": _reset_2,
    "RequestStartTransaction": _request_start,
    "RequestStopTransaction": _remote_stop,
    "UnlockConnector": _unlock_2,
    "GetVariables": _get_variables,
    "SetVariables": _set_variables,
    "GetBaseReport": _get_base_report,
    "ChangeAvailability": _change_availability_2,
    "TriggerMessage": _trigger_2,
    "SetChargingProfile": _set_profile_2,
    "ClearChargingProfile": _clear_profile_2,
    "GetCompositeSchedule": _composite_2,
    "ReserveNow": _reserve_2,
    "CancelReservation": _cancel_reservation,
    "GetTransactionStatus": _transaction_status,
    "ClearCache": lambda cp, p: (_status("Accepted"), None),
    "DataTransfer": lambda cp, p: (_status("UnknownVendorId"), None),
    "GetLocalListVersion": lambda cp, p: ({"versionNumber": cp.local_list_version}, None),
    "SendLocalList": _send_local_list,
    "CostUpdated": lambda cp, p: ({}, None),
    "GetLog": lambda cp, p: (_status("Rejected"), None),
    "UpdateFirmware": lambda cp, p: (_status("Rejected"), None),
}
