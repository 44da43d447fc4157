"""The dashboard's page and assets (engine/admin/dashboard/, package data), served without login:
they hold no data, only the code that asks /api/v5 for it once the operator has logged in.

`/` is the page, `/dashboard/<file>` its scripts and styles. Everything is read once, from the
package, and answered with a Content-Security-Policy that lets the page talk to this listener and
nothing else (no CDN, no other host: the machine may be offline).
"""

from __future__ import annotations

import functools
from pathlib import Path

from starlette.responses import Response

from engine.admin.common import ApiError, error_response

FOLDER = Path(__file__).parent / "dashboard"
PREFIX = "/dashboard/"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


@functools.cache
def _files() -> dict[str, tuple[bytes, str]]:
    return {path.name: (path.read_bytes(), TYPES[path.suffix])
            for path in sorted(FOLDER.iterdir()) if path.is_file() and path.suffix in TYPES}


def is_dashboard_path(path: str) -> bool:
    return path == "/" or path.startswith(PREFIX) or path == "/favicon.ico"


def dashboard_response(path: str, method: str) -> Response:
    if method not in ("GET", "HEAD"):
        return error_response(ApiError(405, "METHOD_NOT_ALLOWED", "the dashboard's files are only read"))
    name = "index.html" if path == "/" else "favicon.svg" if path == "/favicon.ico" else path[len(PREFIX):]
    found = _files().get(name)
    if found is None:
        return error_response(ApiError(404, "NOT_FOUND", f"{path[:200]} not found"))
    body, media_type = found
    return Response(body, media_type=media_type, headers=HEADERS)  # the server leaves a HEAD's body out
