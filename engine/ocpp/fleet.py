"""What the dashboard shows of a charge point beyond its connection: who it says it is (its last
BootNotification) and the status of each of its connectors (its StatusNotifications, and in 2.x
the AvailabilityState of a Connector or EVSE component in NotifyEvent).

The session calls `note` for the CALLs it lets through, only when the action is one of `WATCHED`
(one set lookup per upstream CALL: nothing else on the hot path). A payload the schema check did
not look at (checking off) may be anything: what is not of the expected type is left out, never
raised on.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

WATCHED = frozenset({"BootNotification", "StatusNotification", "NotifyEvent"})
MAX_CONNECTORS = 256  # default of gateway.ocpp.max_connectors_per_client: endless connector ids cannot grow us
BOUND_KEY = "gateway.ocpp.max_connectors_per_client"  # its count in GatewayMetrics.bounded
MAX_TEXT = 128  # characters kept of a vendor, model, status...

# BootNotification fields as the contract names them: 1.6 payload key, 2.x chargingStation key
_BOOT_FIELDS = (
    ("vendor", "chargePointVendor", "vendorName"),
    ("model", "chargePointModel", "model"),
    ("firmware_version", "firmwareVersion", "firmwareVersion"),
    ("serial_number", "chargePointSerialNumber", "serialNumber"),
)


def _text(value: Any) -> str | None:
    return value[:MAX_TEXT] if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def rfc3339(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


class FleetInfo:
    """The boot identity and connector statuses of one charge point (kept on its session)."""

    __slots__ = ("boot", "connectors", "statuses", "limit", "_not_kept")

    def __init__(self, limit: int = MAX_CONNECTORS, not_kept: Counter[str] | None = None) -> None:
        self.limit = limit  # connectors kept (the setting when the charge point connected)
        self._not_kept = not_kept  # counts, under BOUND_KEY, the statuses of a connector beyond `limit`
        self.boot: dict[str, str | None] | None = None
        # (evse_id, connector_id) → [status, error_code, updated_at ms]
        self.connectors: dict[tuple[int | None, int], list[Any]] = {}
        self.statuses: frozenset[str] = frozenset()  # of the connectors now: what the list's filter reads

    def as_dict(self) -> dict[str, Any]:
        def order(key: tuple[int | None, int]) -> tuple[int, int]:
            return (-1 if key[0] is None else key[0], key[1])

        return {
            "boot": dict(self.boot) if self.boot is not None else None,
            "connectors": [
                {"evse_id": key[0], "connector_id": key[1], "status": entry[0], "error_code": entry[1],
                 "updated_at": rfc3339(entry[2])}
                for key, entry in sorted(self.connectors.items(), key=lambda item: order(item[0]))
            ],
        }

    def _set(self, evse_id: int | None, connector_id: int, status: str, error_code: str | None) -> None:
        key = (evse_id, connector_id)
        if key not in self.connectors and len(self.connectors) >= self.limit:
            if self._not_kept is not None:
                self._not_kept[BOUND_KEY] += 1
            return
        self.connectors[key] = [status, error_code, time.time() * 1000]
        self.statuses = frozenset(entry[0] for entry in self.connectors.values())


def note(info: FleetInfo, proto_ver: str, action: str, payload: Any) -> None:
    """Record what a BootNotification, StatusNotification or NotifyEvent says."""
    if not isinstance(payload, dict):
        return
    v16 = proto_ver == "ocpp1.6"
    if action == "BootNotification":
        source = payload if v16 else payload.get("chargingStation")
        if not isinstance(source, dict):
            source = {}
        info.boot = {name: _text(source.get(key16 if v16 else key2)) for name, key16, key2 in _BOOT_FIELDS}
    elif action == "StatusNotification":
        connector_id = _int(payload.get("connectorId"))
        status = _text(payload.get("status" if v16 else "connectorStatus"))
        if connector_id is None or status is None:
            return
        if v16:
            info._set(None, connector_id, status, _text(payload.get("errorCode")))
        else:
            info._set(_int(payload.get("evseId")), connector_id, status, None)
    elif action == "NotifyEvent" and not v16:
        events = payload.get("eventData")
        if isinstance(events, list):
            for event in events[:info.limit]:
                if isinstance(event, dict):
                    _availability(info, event)


def _availability(info: FleetInfo, event: dict[str, Any]) -> None:
    """A 2.x event reporting the AvailabilityState of a Connector or an EVSE."""
    component, variable = event.get("component"), event.get("variable")
    if not (isinstance(component, dict) and isinstance(variable, dict)):
        return
    if variable.get("name") != "AvailabilityState" or component.get("name") not in ("Connector", "EVSE"):
        return
    evse = component.get("evse")
    status = _text(event.get("actualValue"))
    if not isinstance(evse, dict) or status is None:
        return
    evse_id = _int(evse.get("id"))
    connector_id = _int(evse.get("connectorId"))
    if evse_id is None:
        return
    if connector_id is None:  # the EVSE as a whole: every connector of it we know of
        for key in [k for k in info.connectors if k[0] == evse_id] or [(evse_id, 0)]:
            info._set(evse_id, key[1], status, None)
    else:
        info._set(evse_id, connector_id, status, None)
