"""The bus envelope of an OCPP-J frame: the JSON object the rules and the backend see.

    {"MessageTypeId": 2, "UniqueId": "...", "Action": "...", "Payload": {...}}          CALL
    {"MessageTypeId": 3, "UniqueId": "...", ["Action": "...",] "Payload": {...}}        CALLRESULT
    {"MessageTypeId": 4, "UniqueId": "...", ["Action": "...",] "ErrorCode": "...",
     "ErrorDescription": "...", "ErrorDetails": {...}}                                   CALLERROR
    {"MessageTypeId": 5, ...as a CALLERROR...}                                         CALLRESULTERROR (2.1)
    {"MessageTypeId": 6, "UniqueId": "...", "Action": "...", "Payload": {...}}          SEND (2.1)

Upstream, a parsed frame becomes one (`call_body`, `result_body`, `error_body`; a reply names
its Action when it answers a CALL we sent). Downstream, `check_downstream` says what is wrong
with one before it becomes a frame (`downstream_error_frame` for a CALLERROR; a CALL and a
CALLRESULT are a `frames.encode_*` of their fields).
"""

from __future__ import annotations

from typing import Any

from engine.ocpp import frames


def call_body(unique_id: str, action: str, payload: Any) -> dict[str, Any]:
    return {"MessageTypeId": frames.CALL, "UniqueId": unique_id, "Action": action, "Payload": payload}


def result_body(unique_id: str, action: str | None, payload: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"MessageTypeId": frames.CALLRESULT, "UniqueId": unique_id}
    if action is not None:
        body["Action"] = action
    body["Payload"] = payload
    return body


def error_body(unique_id: str, action: str | None, error: frames.CallError) -> dict[str, Any]:
    body: dict[str, Any] = {"MessageTypeId": frames.CALLERROR, "UniqueId": unique_id}
    if action is not None:
        body["Action"] = action
    body.update(ErrorCode=error.code, ErrorDescription=error.description, ErrorDetails=error.details)
    return body


def send_body(unique_id: str, action: str, payload: Any) -> dict[str, Any]:
    return {"MessageTypeId": frames.SEND, "UniqueId": unique_id, "Action": action, "Payload": payload}


def result_error_body(unique_id: str, action: str | None, error: frames.CallResultError) -> dict[str, Any]:
    body: dict[str, Any] = {"MessageTypeId": frames.CALLRESULTERROR, "UniqueId": unique_id}
    if action is not None:
        body["Action"] = action
    body.update(ErrorCode=error.code, ErrorDescription=error.description, ErrorDetails=error.details)
    return body


def downstream_error_frame(unique_id: str, body: dict[str, Any]) -> str:
    """The CALLERROR (or CALLRESULTERROR, by its MessageTypeId) frame of a checked downstream error
    envelope (`frames.EncodeError` if it cannot be)."""
    encode = frames.encode_result_error if body.get("MessageTypeId") == frames.CALLRESULTERROR else frames.encode_error
    return encode(unique_id, body["ErrorCode"], body.get("ErrorDescription", ""), body.get("ErrorDetails") or {})


def check_downstream(body: Any) -> str | None:
    """What is wrong with a downstream message's shape, or None."""
    if not isinstance(body, dict):
        return "the payload must be a JSON object"
    type_id = body.get("MessageTypeId")
    if type(type_id) is not int or type_id not in frames.TYPE_NAMES:
        return "MessageTypeId must be 2, 3, 4, 5 or 6 (an integer)"
    unique_id = body.get("UniqueId")
    if unique_id is not None and (not isinstance(unique_id, str) or not 0 < len(unique_id) <= frames.MAX_UNIQUE_ID):
        return f"UniqueId must be a string of 1 to {frames.MAX_UNIQUE_ID} characters"
    if "Payload" in body and not isinstance(body["Payload"], dict):
        return "Payload must be a JSON object"
    if type_id == frames.CALL or type_id == frames.SEND:
        if not isinstance(body.get("Action"), str) or not body["Action"]:
            return f"a {frames.TYPE_NAMES[type_id]} needs an Action string"
        return None
    if unique_id is None:
        if type_id == frames.CALLRESULTERROR:
            return "a CALLRESULTERROR needs the UniqueId of the CALLRESULT it concerns"
        return "a reply needs the UniqueId of the CALL it answers"
    if type_id == frames.CALLERROR or type_id == frames.CALLRESULTERROR:
        if not isinstance(body.get("ErrorCode"), str):
            return f"a {frames.TYPE_NAMES[type_id]} needs an ErrorCode string"
        if not isinstance(body.get("ErrorDescription", ""), str):
            return "ErrorDescription must be a string"
        if not isinstance(body.get("ErrorDetails", {}), dict):
            return "ErrorDetails must be a JSON object"
    return None
