"""`ctl clients`, `client`, `kick`, `call`: the connected charge points."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

import orjson

from engine.ctl.api import (
    CALL_GRACE,
    EXIT_API,
    EXIT_OK,
    EXIT_USAGE,
    OCPP,
    REQUEST_TIMEOUT,
    Api,
    ApiFailure,
    CtlError,
    _json,
    _segment,
)
from engine.ctl.output import _cell, _key_values, _out, _table

CLIENT_COLUMNS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("CLIENTID", lambda c: c.get("clientid")),
    ("PROTO", lambda c: c.get("proto_ver")),
    ("ADDRESS", lambda c: f"{c.get('ip_address')}:{c.get('port')}"),
    ("USERNAME", lambda c: c.get("username")),
    ("CONNECTED_AT", lambda c: c.get("connected_at")),
    ("KEEPALIVE", lambda c: c.get("keepalive")),
    ("MQUEUE", lambda c: c.get("mqueue_len")),
    ("RECV", lambda c: c.get("recv_cnt")),
    ("SEND", lambda c: c.get("send_cnt")),
]


def cmd_clients(api: Api, args: argparse.Namespace) -> int:
    body, text = api.get_all(f"{OCPP}/clients", {"like_clientid": args.like} if args.like else None)
    if args.json:
        _out(text)
        return EXIT_OK
    clients = body.get("data", [])
    if not clients:
        _out("no charge points connected" + (f" with {args.like!r} in their id" if args.like else ""))
        return EXIT_OK
    _table(clients, CLIENT_COLUMNS)
    return EXIT_OK


def cmd_client(api: Api, args: argparse.Namespace) -> int:
    response = api.request("GET", f"{OCPP}/clients/{_segment(args.cid)}")
    if args.json:
        _out(response.text)
        return EXIT_OK
    _key_values(_json(response).items())
    return EXIT_OK


def cmd_kick(api: Api, args: argparse.Namespace) -> int:
    api.request("DELETE", f"{OCPP}/clients/{_segment(args.cid)}")
    if not args.json:  # 204: the API has no JSON to show
        _out(f"kicked {args.cid}")
    return EXIT_OK


def _call_payload(args: argparse.Namespace) -> dict[str, Any]:
    try:
        payload = orjson.loads(args.payload)
    except orjson.JSONDecodeError as exc:
        raise CtlError(EXIT_USAGE, f"the payload is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise CtlError(EXIT_USAGE, "the payload must be a JSON object, e.g. '{\"type\": \"Soft\"}'")
    return payload


def cmd_call(api: Api, args: argparse.Namespace) -> int:
    payload = _call_payload(args)
    body: dict[str, Any] = {"action": args.action, "payload": payload}
    timeout = args.timeout
    if timeout is not None:
        if not (timeout > 0 and math.isfinite(timeout)):
            raise CtlError(EXIT_USAGE, "--timeout must be a number of seconds greater than 0")
        body["timeout"] = timeout
    wait = api.httpx.Timeout(REQUEST_TIMEOUT, read=None if timeout is None else timeout + CALL_GRACE)
    try:
        response = api.request("POST", f"{OCPP}/clients/{_segment(args.cid)}/call", json=body, timeout=wait)
    except ApiFailure as exc:
        if exc.status == 504:
            # the API's message says which: no answer within the timeout, or a disconnect
            within = f"{timeout:g}s" if timeout is not None else "the gateway's dnstream.awaiting_timeout"
            exc.message = exc.message or f"the charge point {args.cid} did not answer within {within}"
        raise
    answer = _json(response)
    if args.json:
        _out(response.text)
    if isinstance(answer, dict) and answer.get("MessageTypeId") == 4:
        details = answer.get("ErrorDetails")
        message = f"error: the charge point answered CALLERROR {answer.get('ErrorCode')}: {answer.get('ErrorDescription')}"
        if details:
            message += f"\ndetails: {_cell(details)}"
        raise CtlError(EXIT_API, message)
    if not args.json:
        result = answer.get("Payload", answer) if isinstance(answer, dict) else answer
        _out(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return EXIT_OK
