"""The node's monitor and alarms, on EMQX's paths: `GET /api/v5/monitor?latest=<seconds>` (the samples
of the last `latest` seconds, default 3600, oldest first), `GET /api/v5/monitor_current` (the last
rates and the gauges now) and `GET /api/v5/alarms?activated=true|false` (paged as every list).

Alarms carry EMQX's `activate_at`/`deactivate_at` and `duration` (ms), and the same times again as
`activated_at`/`deactivated_at`; all times RFC 3339 in UTC, `deactivate_at` null while active.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.admin.common import bad_request, json_response, page_args, paged
from engine.admin.nodeview import NodeView
from engine.alarms import Alarm
from engine.ocpp.fleet import rfc3339

MAX_LATEST = 366 * 86_400  # seconds: beyond the ring anyway


def _latest(request: Request) -> int:
    text = request.query_params.get("latest", "3600")
    if not (text.isdigit() and len(text) <= 12) or not 1 <= int(text) <= MAX_LATEST:
        raise bad_request(f"latest: expected a whole number of seconds from 1 to {MAX_LATEST}")
    return int(text)


def _alarm(alarm: Alarm) -> dict[str, Any]:
    activated = rfc3339(alarm.activated_at)
    deactivated = rfc3339(alarm.deactivated_at) if alarm.deactivated_at is not None else None
    end = alarm.deactivated_at if alarm.deactivated_at is not None else time.time() * 1000
    return {
        "name": alarm.name, "message": alarm.message, "details": alarm.details, "node": alarm.node,
        "activated": alarm.activated, "activate_at": activated, "deactivate_at": deactivated,
        "activated_at": activated, "deactivated_at": deactivated, "duration": int(end - alarm.activated_at),
    }


def routes(node: NodeView) -> list[Route]:
    async def monitor(request: Request) -> Response:
        return json_response(node.monitor.latest(_latest(request)))

    async def monitor_current(request: Request) -> Response:
        return json_response(node.monitor.current())

    async def alarms(request: Request) -> Response:
        page, limit = page_args(request)
        activated = request.query_params.get("activated")
        if activated not in (None, "true", "false"):
            raise bad_request("activated: expected true or false")
        found = node.monitor.alarms.listing(None if activated is None else activated == "true")
        result = paged(found, page, limit)
        result["data"] = [_alarm(a) for a in result["data"]]
        return json_response(result)

    return [
        Route("/api/v5/monitor", monitor, methods=["GET"]),
        Route("/api/v5/monitor_current", monitor_current, methods=["GET"]),
        Route("/api/v5/alarms", alarms, methods=["GET"]),
    ]

