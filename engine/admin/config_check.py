"""`POST /api/v5/configs/validate`: check a HOCON text as `PUT /api/v5/configs` would take it, without
applying or keeping anything (the dashboard's Validate button). `?mode=merge|replace` as for the PUT.

Answers 200 `{"valid": true, "warnings": [...]}` or `{"valid": false, "errors": ["<key>: <message>", ...]}`:
every error the loader finds, each naming its key. What only a reload can find (a port in use, a
certificate file that cannot be read) shows when the config is applied.
"""

from __future__ import annotations

import os

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.admin.common import json_response
from engine.admin.config_api import hocon_upload
from engine.admin.nodeview import NodeView
from engine.config import ConfigError
from engine.config.background import in_background
from engine.config.dump import secrets_of
from engine.config.overlay import settings_for_upload


def routes(node: NodeView) -> list[Route]:
    async def validate(request: Request) -> Response:
        text, mode = await hocon_upload(request)
        try:
            _, _, warnings = await in_background(settings_for_upload, node.config_path, dict(os.environ),
                                                 node.settings.node.data_dir, text, mode, secrets_of(node.settings))
        except ConfigError as exc:
            return json_response({"valid": False, "errors": exc.errors})
        except RecursionError:
            return json_response({"valid": False, "errors": ["the config: nested too deeply"]})
        return json_response({"valid": True, "warnings": warnings})

    return [Route("/api/v5/configs/validate", validate, methods=["POST"])]
