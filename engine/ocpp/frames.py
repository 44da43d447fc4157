"""OCPP-J frames: text ↔ CALL / CALLRESULT / CALLERROR, and the errors a bad frame earns.

Error codes follow each version's RPC framework:
- 1.6: a frame that is not valid OCPP-J → FormationViolation; an unknown
  MessageTypeId → ProtocolError (1.6 has no closer code).
- 2.0.1 and 2.1: a frame whose structure cannot be read as an RPC message
  (not JSON, not an array, no readable MessageId, wrong length) →
  RpcFrameworkError; an unknown MessageTypeId → MessageTypeNotSupported; a
  payload that is not an object → FormatViolation (OCPP 2.0.1 part 4 §4.3).
A CALLERROR answers every bad frame, with the frame's UniqueId when it can be
read and "-1" otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

CALL, CALLRESULT, CALLERROR = 2, 3, 4
MAX_UNIQUE_ID = 36
UNKNOWN_ID = "-1"

_LENGTHS = {CALL: 4, CALLRESULT: 3, CALLERROR: 5}


@dataclass(slots=True)
class Call:
    unique_id: str
    action: str
    payload: dict[str, Any]


@dataclass(slots=True)
class CallResult:
    unique_id: str
    payload: dict[str, Any]


@dataclass(slots=True)
class CallError:
    unique_id: str
    code: str
    description: str
    details: dict[str, Any]


Frame = Call | CallResult | CallError


class FrameError(Exception):
    """A frame the gateway refuses; `code`/`description`/`unique_id` make the CALLERROR."""

    def __init__(self, code: str, description: str, unique_id: str = UNKNOWN_ID) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.unique_id = unique_id


def is_v16(proto_ver: str) -> bool:
    return proto_ver == "ocpp1.6"


def format_violation(proto_ver: str) -> str:
    return "FormationViolation" if is_v16(proto_ver) else "FormatViolation"


def occurrence_violation(proto_ver: str) -> str:
    return "OccurenceConstraintViolation" if is_v16(proto_ver) else "OccurrenceConstraintViolation"


def _rpc_error(proto_ver: str) -> str:
    return "FormationViolation" if is_v16(proto_ver) else "RpcFrameworkError"


def _type_not_supported(proto_ver: str) -> str:
    return "ProtocolError" if is_v16(proto_ver) else "MessageTypeNotSupported"


def parse(text: str | bytes, proto_ver: str) -> Frame:
    """Decode one frame; raise `FrameError` describing what is wrong with it."""
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise FrameError(_rpc_error(proto_ver), f"not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(msg, list) or not msg:
        raise FrameError(_rpc_error(proto_ver), "a frame must be a non-empty JSON array")
    unique_id = msg[1] if len(msg) > 1 and isinstance(msg[1], str) else UNKNOWN_ID
    type_id = msg[0]
    if type(type_id) is not int:
        raise FrameError(_rpc_error(proto_ver), "MessageTypeId must be an integer", unique_id)
    expected = _LENGTHS.get(type_id)
    if expected is None:
        raise FrameError(_type_not_supported(proto_ver), f"unknown MessageTypeId {type_id}", unique_id)
    if len(msg) != expected:
        raise FrameError(
            _rpc_error(proto_ver), f"a frame of type {type_id} has {expected} elements, not {len(msg)}", unique_id
        )
    if not isinstance(msg[1], str):
        raise FrameError(_rpc_error(proto_ver), "UniqueId must be a string")
    if not msg[1] or len(msg[1]) > MAX_UNIQUE_ID:
        raise FrameError(_rpc_error(proto_ver), f"UniqueId must be 1 to {MAX_UNIQUE_ID} characters", unique_id)
    if type_id == CALL:
        if not isinstance(msg[2], str) or not msg[2]:
            raise FrameError(_rpc_error(proto_ver), "Action must be a non-empty string", unique_id)
        if not isinstance(msg[3], dict):
            raise FrameError(format_violation(proto_ver), "the payload must be a JSON object", unique_id)
        return Call(unique_id, msg[2], msg[3])
    if type_id == CALLRESULT:
        if not isinstance(msg[2], dict):
            raise FrameError(format_violation(proto_ver), "the payload must be a JSON object", unique_id)
        return CallResult(unique_id, msg[2])
    code, description, details = msg[2], msg[3], msg[4]
    if not isinstance(code, str) or not isinstance(description, str) or not isinstance(details, dict):
        raise FrameError(
            _rpc_error(proto_ver),
            "a CALLERROR has a string ErrorCode, a string ErrorDescription and an object ErrorDetails",
            unique_id,
        )
    return CallError(unique_id, code, description, details)


def encode_call(unique_id: str, action: str, payload: Any) -> str:
    return orjson.dumps([CALL, unique_id, action, payload]).decode()


def encode_result(unique_id: str, payload: Any) -> str:
    return orjson.dumps([CALLRESULT, unique_id, payload]).decode()


def encode_error(unique_id: str, code: str, description: str, details: Any = None) -> str:
    return orjson.dumps([CALLERROR, unique_id, code, description, details if details is not None else {}]).decode()
