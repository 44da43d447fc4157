"""OCPP-J frames: text ↔ CALL / CALLRESULT / CALLERROR (and, in 2.1, CALLRESULTERROR / SEND), and
the errors a bad frame earns.

Error codes follow each version's RPC framework:
- 1.6: a frame that is not valid OCPP-J → FormationViolation; an unknown
  MessageTypeId → ProtocolError (1.6 has no closer code).
- 2.0.1 and 2.1: a frame whose structure cannot be read as an RPC message
  (not JSON, not an array, no readable MessageId, wrong length) →
  RpcFrameworkError; an unknown MessageTypeId → MessageTypeNotSupported; a
  payload that is not an object → FormatViolation (OCPP 2.0.1 part 4 §4.3).
`FrameError` carries the code, the frame's UniqueId when it can be read ("-1"
otherwise) and its MessageTypeId when that can be read: the session answers a
bad CALL (or a frame of no readable type) with a CALLERROR, but never a bad
reply (`is_reply_type`): a CALLERROR answers a CALL only.

OCPP 2.1 adds two types (part 4): CALLRESULTERROR `[5, id, code, description,
details]`, sent by whoever received a CALLRESULT it could not process, and
SEND `[6, id, action, payload]`, an unconfirmed message. Other versions read
them as unknown MessageTypeIds.

Two limits come from the JSON codec (orjson) and are the same both ways:
integers are carried exactly in -2**63 .. 2**64-1 (orjson reads a wider
integer literal as a float, so a frame or downstream message with one is
refused rather than silently rounded), and a document nests at most
`MAX_DEPTH` levels (orjson encodes no deeper; it reads up to 1,024).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, final

import orjson

CALL, CALLRESULT, CALLERROR = 2, 3, 4
CALLRESULTERROR, SEND = 5, 6  # OCPP 2.1 only
TYPE_NAMES = {CALL: "CALL", CALLRESULT: "CALLRESULT", CALLERROR: "CALLERROR",
              CALLRESULTERROR: "CALLRESULTERROR", SEND: "SEND"}
MAX_UNIQUE_ID = 36
UNKNOWN_ID = "-1"
MAX_DEPTH = 254  # orjson.dumps refuses deeper documents ("Recursion limit reached")
INT_MIN, INT_MAX = -(2**63), 2**64 - 1  # the integers orjson reads as integers

_LENGTHS = {CALL: 4, CALLRESULT: 3, CALLERROR: 5}
_LENGTHS_21 = {**_LENGTHS, CALLRESULTERROR: 5, SEND: 4}


@final  # so that `type(frame) is Call` narrows the union for the type checker
@dataclass(slots=True)
class Call:
    type_id: ClassVar[int] = CALL
    unique_id: str
    action: str
    payload: dict[str, Any]


@final
@dataclass(slots=True)
class CallResult:
    type_id: ClassVar[int] = CALLRESULT
    unique_id: str
    payload: dict[str, Any]


@final
@dataclass(slots=True)
class CallError:
    type_id: ClassVar[int] = CALLERROR
    unique_id: str
    code: str
    description: str
    details: dict[str, Any]


@final
@dataclass(slots=True)
class CallResultError:
    """OCPP 2.1: the sender could not process the CALLRESULT `unique_id`."""

    type_id: ClassVar[int] = CALLRESULTERROR
    unique_id: str
    code: str
    description: str
    details: dict[str, Any]


@final
@dataclass(slots=True)
class Send:
    """OCPP 2.1: an unconfirmed message (never answered)."""

    type_id: ClassVar[int] = SEND
    unique_id: str
    action: str
    payload: dict[str, Any]


Frame = Call | CallResult | CallError | CallResultError | Send


class FrameError(Exception):
    """A frame the gateway refuses; `code`/`description`/`unique_id` make the CALLERROR (or, for a
    bad reply in 2.1, the CALLRESULTERROR); `type_id` is its MessageTypeId if readable, else None."""

    def __init__(self, code: str, description: str, unique_id: str = UNKNOWN_ID, type_id: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.unique_id = unique_id
        self.type_id = type_id


def is_v16(proto_ver: str) -> bool:
    return proto_ver == "ocpp1.6"


def is_v21(proto_ver: str) -> bool:
    """Whether the version has CALLRESULTERROR and SEND."""
    return proto_ver == "ocpp2.1"


def is_reply_type(type_id: int | None, proto_ver: str) -> bool:
    """A frame of this MessageTypeId must not be answered with a CALLERROR: a CALLRESULT or a
    CALLERROR (and, in 2.1, a CALLRESULTERROR or a SEND, which are never answered)."""
    if type_id in (CALLRESULT, CALLERROR):
        return True
    return type_id in (CALLRESULTERROR, SEND) and is_v21(proto_ver)


def format_violation(proto_ver: str) -> str:
    return "FormationViolation" if is_v16(proto_ver) else "FormatViolation"


def occurrence_violation(proto_ver: str) -> str:
    return "OccurenceConstraintViolation" if is_v16(proto_ver) else "OccurrenceConstraintViolation"


def _rpc_error(proto_ver: str) -> str:
    return "FormationViolation" if is_v16(proto_ver) else "RpcFrameworkError"


def _type_not_supported(proto_ver: str) -> str:
    return "ProtocolError" if is_v16(proto_ver) else "MessageTypeNotSupported"


class EncodeError(ValueError):
    """A frame or message the JSON codec cannot write; the text says why, for a log line or an event."""


def dumps(value: Any) -> bytes:
    """orjson.dumps, with its refusals (too deep, integer too wide, non-string key) as `EncodeError`."""
    try:
        return orjson.dumps(value)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        reason = str(exc)
        if "Recursion" in reason:
            reason = f"nested deeper than {MAX_DEPTH} levels"
        raise EncodeError(f"cannot be encoded as JSON: {reason}") from None


# a JSON integer literal outside INT_MIN..INT_MAX has at least 19 digits: find such a run cheaply
# (one C pass; a regex costs several times more per frame), then look at the literals for real
_ONLY_DIGITS = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_LONG_RUN = b"0" * 19
_STRING_OR_NUMBER = re.compile(rb'"(?:[^"\\]|\\.)*"|(-?[0-9]+)(\.[0-9]+)?([eE][+-]?[0-9]+)?')


def wide_integer(raw: str | bytes) -> str | None:
    """The first integer literal of a valid JSON text that orjson cannot read exactly, or None."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if _LONG_RUN not in data.translate(_ONLY_DIGITS):
        return None
    for m in _STRING_OR_NUMBER.finditer(data):
        digits = m.group(1)
        if digits is None or m.group(2) is not None or m.group(3) is not None:
            continue  # a string, or a number with a fraction or exponent: a float anyway
        # more than 20 digits is out of range for sure (and int() refuses very long literals)
        if len(digits.lstrip(b"-")) > 20 or not INT_MIN <= int(digits) <= INT_MAX:
            literal = digits.decode()
            return literal if len(literal) <= 40 else f"{literal[:20]}...({len(literal)} digits)"
    return None


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
    expected = (_LENGTHS_21 if is_v21(proto_ver) else _LENGTHS).get(type_id)
    if expected is None:
        raise FrameError(_type_not_supported(proto_ver), f"unknown MessageTypeId {type_id}", unique_id)
    if len(msg) != expected:
        raise FrameError(_rpc_error(proto_ver), f"a frame of type {type_id} has {expected} elements, not {len(msg)}",
                         unique_id, type_id)
    if not isinstance(msg[1], str):
        raise FrameError(_rpc_error(proto_ver), "UniqueId must be a string", UNKNOWN_ID, type_id)
    if not msg[1] or len(msg[1]) > MAX_UNIQUE_ID:
        raise FrameError(_rpc_error(proto_ver), f"UniqueId must be 1 to {MAX_UNIQUE_ID} characters",
                         unique_id, type_id)
    wide = wide_integer(text)
    if wide is not None:
        raise FrameError(format_violation(proto_ver),
                         f"the integer {wide} is outside the range carried exactly ({INT_MIN} to {INT_MAX})",
                         unique_id, type_id)
    if type_id == CALL or type_id == SEND:
        if not isinstance(msg[2], str) or not msg[2]:
            raise FrameError(_rpc_error(proto_ver), "Action must be a non-empty string", unique_id, type_id)
        if not isinstance(msg[3], dict):
            raise FrameError(format_violation(proto_ver), "the payload must be a JSON object", unique_id, type_id)
        return Call(unique_id, msg[2], msg[3]) if type_id == CALL else Send(unique_id, msg[2], msg[3])
    if type_id == CALLRESULT:
        if not isinstance(msg[2], dict):
            raise FrameError(format_violation(proto_ver), "the payload must be a JSON object", unique_id, type_id)
        return CallResult(unique_id, msg[2])
    code, description, details = msg[2], msg[3], msg[4]
    if not isinstance(code, str) or not isinstance(description, str) or not isinstance(details, dict):
        name = "CALLERROR" if type_id == CALLERROR else "CALLRESULTERROR"
        raise FrameError(
            _rpc_error(proto_ver),
            f"a {name} has a string ErrorCode, a string ErrorDescription and an object ErrorDetails",
            unique_id, type_id,
        )
    if type_id == CALLERROR:
        return CallError(unique_id, code, description, details)
    return CallResultError(unique_id, code, description, details)


# the encoders raise EncodeError for what JSON cannot carry (see `dumps`)

def encode_call(unique_id: str, action: str, payload: Any) -> str:
    return dumps([CALL, unique_id, action, payload]).decode()


def encode_result(unique_id: str, payload: Any) -> str:
    return dumps([CALLRESULT, unique_id, payload]).decode()


def encode_error(unique_id: str, code: str, description: str, details: Any = None) -> str:
    return dumps([CALLERROR, unique_id, code, description, details if details is not None else {}]).decode()


def encode_result_error(unique_id: str, code: str, description: str, details: Any = None) -> str:
    return dumps([CALLRESULTERROR, unique_id, code, description, details if details is not None else {}]).decode()


def encode_send(unique_id: str, action: str, payload: Any) -> str:
    return dumps([SEND, unique_id, action, payload]).decode()


# --- the charge point's side: bytes for a picows transport, and a cheap look at an answer --------------


def call_bytes(unique_id: str, action: str, payload: Any) -> bytes:
    """`encode_call` as bytes (what a picows transport sends), without the round trip through str."""
    return dumps([CALL, unique_id, action, payload])


def result_bytes(unique_id: str, payload: Any) -> bytes:
    return dumps([CALLRESULT, unique_id, payload])


def error_bytes(unique_id: str, code: str, description: str, details: Any = None) -> bytes:
    return dumps([CALLERROR, unique_id, code, description, details if details is not None else {}])


def result_error_bytes(unique_id: str, code: str, description: str, details: Any = None) -> bytes:
    return dumps([CALLRESULTERROR, unique_id, code, description, details if details is not None else {}])


def send_bytes(unique_id: str, action: str, payload: Any) -> bytes:
    return dumps([SEND, unique_id, action, payload])


def call_with_json(unique_id: bytes, action: bytes, payload_json: bytes) -> bytes:
    """A CALL whose payload is JSON already, for a load generator that sends the same few payloads
    millions of times: no encoding per frame. `unique_id` and `action` must need no JSON escaping
    (digits and letters do not)."""
    return b'[2,"%b","%b",%b]' % (unique_id, action, payload_json)


def peek_answer(data: bytes) -> tuple[int, bytes] | None:
    """(MessageTypeId, UniqueId) of an answer (CALLRESULT or CALLERROR) written compactly as servers
    write them (`[3,"id",...`), read without decoding the JSON; None for anything else (a CALL, or a
    frame not written so: `parse` it). A load generator matches answers to its CALL with this: the
    payload is not read."""
    parts = data.split(b'"', 2)  # one C call: measured faster than slicing the head and finding the end
    if len(parts) == 3:
        type_id = _ANSWER_HEADS.get(parts[0])
        if type_id is not None:
            return type_id, parts[1]
    return None


_ANSWER_HEADS = {b"[%d," % type_id: type_id for type_id in (CALLRESULT, CALLERROR)}


def message_type(text: str | bytes) -> int | None:
    """The MessageTypeId of a JSON array, however wrong the rest, or None: a charge point that `parse`
    refused a frame from answers a bad CALL with a CALLERROR but only counts a bad answer."""
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return msg[0] if isinstance(msg, list) and msg and type(msg[0]) is int else None
