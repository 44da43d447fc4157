"""The charge point's configuration: one store of 1.6 keys, and the answers that read and change it.

1.6 reads and writes the keys (`GetConfiguration`/`ChangeConfiguration`);
2.0.1 and 2.1 reach the same values through device-model variables
(`GetVariables`/`SetVariables`/`GetBaseReport`), mapped in `VARIABLES_2`.
"""

from __future__ import annotations

from typing import Any

from engine.simulate import messages as m
from engine.simulate.calls import Answer
from engine.simulate.handlers.common import with_status
from engine.simulate.options import SimOptions
from engine.simulate.state import Charger


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


DATA_TYPE = {"int": "integer", "bool": "boolean", "csl": "MemberList", "str": "string"}


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


def set_config(cp: Charger, key: str, value: str) -> str:
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


def get_configuration(cp: Charger, p: dict[str, Any]) -> Answer:
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


def change_configuration(cp: Charger, p: dict[str, Any]) -> Answer:
    return with_status(set_config(cp, p["key"], p["value"])), None


def variable_key(component: Any, variable: Any) -> tuple[str | None, str]:
    """(1.6 key, status if none): Accepted means found."""
    name = component.get("name") if isinstance(component, dict) else None
    var = variable.get("name") if isinstance(variable, dict) else None
    if name not in COMPONENTS_2:
        return None, "UnknownComponent"
    key = VARIABLES_2.get((name, var)) if isinstance(var, str) else None
    if key is None:
        return None, "UnknownVariable"
    return key, "Accepted"


def get_variables(cp: Charger, p: dict[str, Any]) -> Answer:
    results = []
    for item in p["getVariableData"]:
        attribute = item.get("attributeType", "Actual")
        key, status = variable_key(item["component"], item["variable"])
        if key is not None and attribute != "Actual":
            status = "NotSupportedAttributeType"
        result: dict[str, Any] = {"attributeStatus": status, "attributeType": attribute,
                                  "component": item["component"], "variable": item["variable"]}
        if status == "Accepted" and key is not None:
            result["attributeValue"] = cp.config[key]
        results.append(result)
    return {"getVariableResult": results}, None


def set_variables(cp: Charger, p: dict[str, Any]) -> Answer:
    results = []
    for item in p["setVariableData"]:
        attribute = item.get("attributeType", "Actual")
        key, status = variable_key(item["component"], item["variable"])
        if key is not None:
            if attribute != "Actual":
                status = "NotSupportedAttributeType"
            else:
                outcome = set_config(cp, key, str(item["attributeValue"]))
                status = "Accepted" if outcome == "Accepted" else "Rejected"
        results.append({"attributeStatus": status, "attributeType": attribute,
                        "component": item["component"], "variable": item["variable"]})
    return {"setVariableResult": results}, None


def get_base_report(cp: Charger, p: dict[str, Any]) -> Answer:
    request_id = p["requestId"]
    if p["reportBase"] not in ("ConfigurationInventory", "FullInventory", "SummaryInventory"):
        return with_status("NotSupported"), None

    def report() -> None:
        variables = []
        for (component, variable), key in VARIABLES_2.items():
            writable, kind = CONFIG_16[key]
            variables.append((component, variable, cp.config[key], writable, DATA_TYPE[kind]))
        cp.send("NotifyReport", m.notify_report(request_id, m.timestamp(), variables))

    return with_status("Accepted"), report
