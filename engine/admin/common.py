"""What every admin endpoint shares: authentication, JSON errors, body checking, paging."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from engine.ocpp.frames import wide_integer

# their home before engine.admin.credentials; imported from here by the CLI, the node and tools
from engine.admin.credentials import PBKDF2_ITERATIONS, Credentials, hash_secret, secret_matches  # noqa: F401


class ApiError(Exception):
    """Answered as `{"code": ..., "message": ...}` with `status`."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body, default=str), status_code=status, media_type="application/json")


def error_response(exc: ApiError) -> Response:
    headers = dict(exc.headers or {})
    if exc.status == 401:
        headers["www-authenticate"] = 'Basic realm="ocpp-gateway"'
    return Response(orjson.dumps({"code": exc.code, "message": exc.message}), status_code=exc.status,
                    media_type="application/json", headers=headers)


def not_found(what: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"{what} not found")


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BAD_REQUEST", message)


async def json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        raise bad_request("a JSON body is required")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"the body is not JSON: {exc}") from None
    wide = wide_integer(raw)
    if wide is not None:  # orjson would have read it as a float: refused as frames refuse it
        raise bad_request(f"the integer {wide} is outside the 64-bit range the gateway carries exactly")
    return body


_TYPES = {str: "a string", int: "an integer", bool: "true or false", dict: "an object", list: "a list", float: "a number"}


def check_fields(body: Any, required: dict[str, type | tuple[type, ...]], optional: dict[str, type | tuple[type, ...]] | None = None) -> dict[str, Any]:
    """The body as a dict with its fields' types checked; every message names the field."""
    optional = optional or {}
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    unknown = sorted(set(body) - set(required) - set(optional))
    if unknown:
        raise bad_request(f"unknown field: {unknown[0]}")
    for name, kind in {**required, **optional}.items():
        if name not in body:
            if name in required:
                raise bad_request(f"{name}: required")
            continue
        value = body[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            ok = False
        else:
            ok = isinstance(value, kinds) or (float in kinds and isinstance(value, int) and not isinstance(value, bool))
        if not ok:
            raise bad_request(f"{name}: expected {' or '.join(_TYPES.get(k, k.__name__) for k in kinds)}")
    return body


def page_args(request: Request) -> tuple[int, int]:
    try:
        page = int(request.query_params.get("page", "1"))
        limit = int(request.query_params.get("limit", "100"))
    except ValueError:
        raise bad_request("page and limit must be integers") from None
    if page < 1 or not 1 <= limit <= 10_000:
        raise bad_request("page must be at least 1 and limit 1 to 10000")
    return page, limit


def paged(items: list[Any], page: int, limit: int) -> dict[str, Any]:
    start = (page - 1) * limit
    data = items[start : start + limit]
    return {"data": data, "meta": {"page": page, "limit": limit, "count": len(items), "hasnext": start + limit < len(items)}}


# --- credentials ------------------------------------------------------------------------


def basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None
