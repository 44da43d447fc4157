"""Payloads a simulated charge point sends, per OCPP version, valid against the OCA schemas.

Everything here is a pure function of its arguments (no clock, no state), so
tests can check each builder against `engine.ocpp.schemas.SchemaRegistry`.
The charger model: 1.6 connectors 1..n (plus connector 0, the charge point
itself, for StatusNotification); 2.0.1 and 2.1 EVSEs 1..n with one connector
each.
"""

from __future__ import annotations

import time
from typing import Any

VENDOR = "ocpp-gateway"
MODEL = "sim-ac-22"
FIRMWARE = "sim-1.0"
ENERGY = "Energy.Active.Import.Register"
POWER = "Power.Active.Import"

# generic connector states → 2.x ConnectorStatus (1.6 uses them as they are)
V2_STATUS = {
    "Available": "Available",
    "Preparing": "Occupied",
    "Charging": "Occupied",
    "SuspendedEV": "Occupied",
    "SuspendedEVSE": "Occupied",
    "Finishing": "Occupied",
    "Reserved": "Reserved",
    "Unavailable": "Unavailable",
    "Faulted": "Faulted",
}

# generic stop reasons (1.6's names) → 2.x (stoppedReason, triggerReason)
V2_STOP = {
    "Local": ("Local", "StopAuthorized"),
    "Remote": ("Remote", "RemoteStop"),
    "HardReset": ("ImmediateReset", "ResetCommand"),
    "SoftReset": ("ImmediateReset", "ResetCommand"),
    "DeAuthorized": ("DeAuthorized", "Deauthorized"),
    "UnlockCommand": ("Other", "UnlockCommand"),
    "EVDisconnected": ("EVDisconnected", "EVCommunicationLost"),
    "PowerLoss": ("PowerLoss", "AbnormalCondition"),
    "Other": ("Other", "AbnormalCondition"),
}


def timestamp(t: float | None = None) -> str:
    """RFC 3339 UTC with milliseconds (the OCA schemas refuse a timestamp without a zone)."""
    t = time.time() if t is None else t
    seconds = int(t)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((t - seconds) * 1000):03d}Z"


def is_v16(version: str) -> bool:
    return version == "ocpp1.6"


# --- charge point → CSMS ----------------------------------------------------------------------


def boot(version: str, serial: str, reason: str = "PowerUp") -> dict[str, Any]:
    if is_v16(version):
        return {"chargePointVendor": VENDOR, "chargePointModel": MODEL,
                "chargePointSerialNumber": serial[-25:], "firmwareVersion": FIRMWARE}
    return {"reason": reason, "chargingStation": {"model": MODEL, "vendorName": VENDOR,
                                                  "serialNumber": serial[-25:], "firmwareVersion": FIRMWARE}}


def status(version: str, connector: int, state: str, ts: str) -> dict[str, Any]:
    """`state` is a 1.6 ChargePointStatus; for 2.x it is mapped to the connector status."""
    if is_v16(version):
        return {"connectorId": connector, "errorCode": "NoError", "status": state, "timestamp": ts}
    return {"timestamp": ts, "connectorStatus": V2_STATUS[state], "evseId": connector, "connectorId": 1}


def id_token(tag: str) -> dict[str, Any]:
    return {"idToken": tag, "type": "ISO14443"}


def authorize(version: str, tag: str) -> dict[str, Any]:
    if is_v16(version):
        return {"idTag": tag}
    return {"idToken": id_token(tag)}


def meter_value(version: str, ts: str, energy_wh: float, power_w: float, context: str) -> dict[str, Any]:
    """One sample of the energy register (Wh, never decreasing) and the power (W)."""
    energy, power = int(energy_wh), int(power_w)
    if is_v16(version):
        return {"timestamp": ts, "sampledValue": [
            {"value": str(energy), "context": context, "format": "Raw", "measurand": ENERGY,
             "location": "Outlet", "unit": "Wh"},
            {"value": str(power), "context": context, "format": "Raw", "measurand": POWER,
             "location": "Outlet", "unit": "W"},
        ]}
    return {"timestamp": ts, "sampledValue": [
        {"value": energy, "context": context, "measurand": ENERGY, "location": "Outlet",
         "unitOfMeasure": {"unit": "Wh"}},
        {"value": power, "context": context, "measurand": POWER, "location": "Outlet",
         "unitOfMeasure": {"unit": "W"}},
    ]}


def periodic_event_stream(stream_id: int, ts: str, power_w: float) -> dict[str, Any]:
    """2.1 NotifyPeriodicEventStream (a SEND): one data element, the power (W) at `ts`."""
    return {"id": stream_id, "pending": 0, "basetime": ts, "data": [{"t": 0, "v": str(int(power_w))}]}


def meter_values(version: str, connector: int, sample: dict[str, Any], transaction_id: int | None = None) -> dict[str, Any]:
    if is_v16(version):
        payload: dict[str, Any] = {"connectorId": connector}
        if transaction_id is not None:
            payload["transactionId"] = transaction_id
        payload["meterValue"] = [sample]
        return payload
    return {"evseId": connector, "meterValue": [sample]}


def start_transaction(connector: int, tag: str, meter_start: int, ts: str,
                      reservation_id: int | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"connectorId": connector, "idTag": tag, "meterStart": meter_start, "timestamp": ts}
    if reservation_id is not None:
        payload["reservationId"] = reservation_id
    return payload


def stop_transaction(transaction_id: int, meter_stop: int, ts: str, reason: str, tag: str | None,
                     end_sample: dict[str, Any] | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"transactionId": transaction_id, "meterStop": meter_stop, "timestamp": ts, "reason": reason}
    if tag is not None and reason in ("Local", "DeAuthorized"):
        payload["idTag"] = tag
    if end_sample is not None:
        payload["transactionData"] = [end_sample]
    return payload


def transaction_event(event_type: str, ts: str, trigger: str, seq_no: int, transaction_id: str, *,
                      evse: int | None = None, charging_state: str | None = None, tag: str | None = None,
                      sample: dict[str, Any] | None = None, stopped_reason: str | None = None,
                      remote_start_id: int | None = None, offline: bool = False,
                      reservation_id: int | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"transactionId": transaction_id}
    if charging_state is not None:
        info["chargingState"] = charging_state
    if stopped_reason is not None:
        info["stoppedReason"] = stopped_reason
    if remote_start_id is not None:
        info["remoteStartId"] = remote_start_id
    payload: dict[str, Any] = {"eventType": event_type, "timestamp": ts, "triggerReason": trigger,
                               "seqNo": seq_no, "transactionInfo": info}
    if offline:
        payload["offline"] = True
    if evse is not None:
        payload["evse"] = {"id": evse, "connectorId": 1}
    if tag is not None:
        payload["idToken"] = id_token(tag)
    if sample is not None:
        payload["meterValue"] = [sample]
    if reservation_id is not None:
        payload["reservationId"] = reservation_id
    return payload


def firmware_status(version: str) -> dict[str, Any]:
    return {"status": "Idle"}


def diagnostics_status() -> dict[str, Any]:
    return {"status": "Idle"}


def log_status() -> dict[str, Any]:
    return {"status": "Idle"}


def notify_report(request_id: int, ts: str, variables: list[tuple[str, str, str, bool, str]]) -> dict[str, Any]:
    """2.x NotifyReport with every variable: (component, variable, value, writable, data type)."""
    report = []
    for component, variable, value, writable, data_type in variables:
        report.append({
            "component": {"name": component},
            "variable": {"name": variable},
            "variableAttribute": [{"type": "Actual", "value": value, "mutability": "ReadWrite" if writable else "ReadOnly",
                                   "persistent": True, "constant": False}],
            "variableCharacteristics": {"dataType": data_type, "supportsMonitoring": False},
        })
    payload: dict[str, Any] = {"requestId": request_id, "generatedAt": ts, "tbc": False, "seqNo": 0}
    if report:
        payload["reportData"] = report
    return payload
