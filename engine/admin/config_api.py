"""Config over the API: read it, change it, reload it (EMQX's /configs)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.admin.common import bad_request, json_response
from engine.config import ConfigError, dump_hocon, load_settings_in_background
from engine.config.overlay import merge, parse_hocon, read_overlay, write_overlay
from engine.reload import ReloadError


def refused(errors: list[str]) -> Response:
    return json_response({"code": "BAD_CONFIG", "message": "; ".join(errors), "errors": errors}, 400)


async def apply_overlay(node: Any, overlay: dict[str, Any]) -> Response:
    """Check the file + `overlay` as a whole, apply it, and only then keep the overlay."""
    try:
        settings = await load_settings_in_background(node.config_path, overlay=overlay)
        report = await node.reload(settings)
    except (ConfigError, ReloadError) as exc:
        return refused(exc.errors)
    write_overlay(node.settings.node.data_dir, overlay)
    return json_response({"status": "reloaded", **report.as_dict()})


def routes(node: Any) -> list[Route]:
    async def get_configs(request: Request) -> Response:
        return Response(dump_hocon(node.settings), media_type="text/plain; charset=utf-8")

    async def put_configs(request: Request) -> Response:
        mode = request.query_params.get("mode", "merge")
        if mode not in ("merge", "replace"):
            raise bad_request("mode: expected merge or replace")
        text = (await request.body()).decode("utf-8", "replace")
        if not text.strip():
            raise bad_request("a HOCON body is required")
        try:
            body = parse_hocon(text)
        except ConfigError as exc:
            return refused(exc.errors)
        current = read_overlay(node.settings.node.data_dir)
        return await apply_overlay(node, merge(current, body) if mode == "merge" else body)

    async def reload_configs(request: Request) -> Response:
        try:
            report = await node.reload_from_files()
        except ReloadError as exc:
            return refused(exc.errors)
        return json_response({"status": "reloaded", **report.as_dict()})

    return [
        Route("/api/v5/configs", get_configs, methods=["GET"]),
        Route("/api/v5/configs", put_configs, methods=["PUT"]),
        Route("/api/v5/configs/reload", reload_configs, methods=["POST"]),
    ]


