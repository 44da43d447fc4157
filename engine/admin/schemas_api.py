"""The OCPP schemas for the dashboard's command form: which actions the gateway can send a charge
point, and a check of a payload against the schema of its version before it is sent.

- `GET /api/v5/gateways/ocpp/schemas/{proto_ver}` → the actions the CSMS sends (CALLs to the charge
  point) that have a request schema in that version, sorted: every action of the schema directory
  but those only a charge point sends (DataTransfer goes both ways and is listed).
- `POST /api/v5/gateways/ocpp/schemas/validate` `{"proto_ver", "action", "kind": "request"|"response",
  "payload"}` → `{"valid": true}` or `{"valid": false, "errors": ["<path>: <message>"]}`; the check the
  gateway itself makes (`message_format_checking`), so it reports the first violation it finds.

The schemas are those of `gateway.ocpp.json_schema_dir` (the shipped ones when empty), compiled once
for this API when message checking is off everywhere (the gateway then holds none).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.admin.common import ApiError, bad_request, check_fields, json_body, json_response
from engine.admin.nodeview import NodeView

if TYPE_CHECKING:
    from engine.ocpp.schemas import SchemaRegistry

PROTOCOLS = ("ocpp1.6", "ocpp2.0.1", "ocpp2.1")
MAX_ACTION = 128

# actions only a charge point sends (CALLs, and 2.1 SENDs), by version
_CP_16 = {"Authorize", "BootNotification", "DiagnosticsStatusNotification", "FirmwareStatusNotification",
          "Heartbeat", "MeterValues", "StartTransaction", "StatusNotification", "StopTransaction",
          "SecurityEventNotification", "SignCertificate", "LogStatusNotification",
          "SignedFirmwareStatusNotification"}
_CP_201 = {"Authorize", "BootNotification", "ClearedChargingLimit", "FirmwareStatusNotification",
           "Get15118EVCertificate", "GetCertificateStatus", "Heartbeat", "LogStatusNotification", "MeterValues",
           "NotifyChargingLimit", "NotifyCustomerInformation", "NotifyDisplayMessages", "NotifyEVChargingNeeds",
           "NotifyEVChargingSchedule", "NotifyEvent", "NotifyMonitoringReport", "NotifyReport",
           "PublishFirmwareStatusNotification", "ReportChargingProfiles", "ReservationStatusUpdate",
           "SecurityEventNotification", "SignCertificate", "StatusNotification", "TransactionEvent"}
_CP_21 = _CP_201 | {"BatterySwap", "ClosePeriodicEventStream", "GetCertificateChainStatus", "NotifyDERAlarm",
                    "NotifyDERStartStop", "NotifyPeriodicEventStream", "NotifyPriorityCharging",
                    "NotifyQRCodeScanned", "NotifySettlement", "OpenPeriodicEventStream",
                    "PullDynamicScheduleUpdate", "ReportDERControl", "VatNumberValidation"}
CHARGE_POINT_ONLY = {"ocpp1.6": frozenset(_CP_16), "ocpp2.0.1": frozenset(_CP_201), "ocpp2.1": frozenset(_CP_21)}


class SchemasApi:
    def __init__(self, node: NodeView) -> None:
        self.node = node
        self._own: SchemaRegistry | None = None
        self._lock = asyncio.Lock()

    async def registry(self) -> SchemaRegistry:
        ctx = self.node.ocpp
        if ctx is not None and ctx.registry is not None:
            return ctx.registry
        async with self._lock:
            schema_dir = self.node.settings.gateway.ocpp.json_schema_dir or None
            if self._own is None or not self._own.unchanged(schema_dir):
                from engine.ocpp.schemas import SchemaError, SchemaRegistry

                try:  # ~30 ms of compiling: off the event loop
                    self._own = await asyncio.to_thread(SchemaRegistry, schema_dir)
                except SchemaError as exc:
                    raise ApiError(503, "SERVICE_UNAVAILABLE", f"the OCPP schemas do not load: {exc}") from None
            return self._own

    async def actions(self, request: Request) -> Response:
        version = request.path_params["proto_ver"]
        if version not in PROTOCOLS:
            raise ApiError(404, "NOT_FOUND", f"protocol {version[:40]!r} not found: expected one of "
                           f"{', '.join(PROTOCOLS)}")
        registry = await self.registry()
        directory = registry.schema_dir / version
        names = {p.stem.removesuffix("Response").removesuffix("Request") for p in directory.glob("*.json")}
        found = sorted(a for a in names if a not in CHARGE_POINT_ONLY[version] and registry.has_action(version, a))
        return json_response(found)

    async def validate(self, request: Request) -> Response:
        body = check_fields(await json_body(request), {"proto_ver": str, "action": str, "payload": (dict, list, str,
                            int, float, bool, type(None))}, {"kind": str})
        version, action, kind = body["proto_ver"], body["action"], body.get("kind", "request")
        if version not in PROTOCOLS:
            raise bad_request(f"proto_ver: expected one of {', '.join(PROTOCOLS)}")
        if kind not in ("request", "response"):
            raise bad_request("kind: expected request or response")
        if not action or len(action) > MAX_ACTION:
            raise bad_request(f"action: expected 1 to {MAX_ACTION} characters")
        from engine.ocpp.schemas import UnknownAction

        registry = await self.registry()
        try:
            violation = registry.check(version, action, kind, body["payload"])
        except UnknownAction as exc:
            return json_response({"valid": False, "errors": [f"unknown action: {exc}"]})
        if violation is None:
            return json_response({"valid": True})
        description = violation.description
        if not description.startswith(violation.path):
            description = f"{violation.path}: {description}"
        return json_response({"valid": False, "errors": [description], "code": violation.code})


def routes(node: NodeView) -> list[Route]:
    api = SchemasApi(node)
    prefix = "/api/v5/gateways/ocpp/schemas"
    return [
        Route(f"{prefix}/validate", api.validate, methods=["POST"]),
        Route(f"{prefix}/{{proto_ver}}", api.actions, methods=["GET"]),
    ]
