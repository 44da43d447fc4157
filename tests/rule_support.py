"""Shared by the rule SQL conformance tests: a message with fixed columns, run through a compiled rule.

Every case runs three ways that must agree: the closures alone, the generated
function on an Env of the columns, and the generated function on a bus message
carrying the same columns (checked against the closures on that message).
"""

from __future__ import annotations

from typing import Any

import orjson

from engine.bus import Message
from rules.compiler import compile_sql
from rules.env import Env

COLUMNS = {
    "clientid": "CP1",
    "username": "u1",
    "topic": "ocpp/cp/CP1",
    "qos": 1,
    "timestamp": 1700000000000,
    "event": "message.publish",
}


def outputs(sql: str, payload: Any = "{}", **columns: Any) -> list[dict[str, Any]]:
    """The rule's outputs for a message with exactly COLUMNS + columns (no tester defaults)."""
    text = payload if isinstance(payload, str) else orjson.dumps(payload).decode()
    cols = {**COLUMNS, "payload": text, **columns}
    closures, generated = compile_sql(sql, "r1", generate=False), compile_sql(sql, "r1")
    expected = _outcome(closures.apply, Env(cols))
    assert _outcome(generated.apply, Env(cols)) == expected, generated.sources
    headers = {k: v for k, v in cols.items() if k != "payload"}
    message = Message(str(cols["topic"]), text.encode(), headers=headers)
    on_message = _outcome(generated.run, message)
    assert _without_id(on_message) == _without_id(_outcome(closures.apply, Env.for_message(message))), generated.sources
    if isinstance(expected, _Raised):
        raise expected.exc
    return expected


def _outcome(fn: Any, arg: Any) -> Any:
    """What fn(arg) returned, or the exception it raised (compared by type and text)."""
    try:
        return fn(arg)
    except Exception as exc:  # noqa: BLE001 - every outcome is compared, errors included
        return _Raised(exc)


class _Raised(Exception):
    def __init__(self, exc: Exception) -> None:
        super().__init__(str(exc))
        self.exc = exc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Raised) and type(other.exc) is type(self.exc) and str(other) == str(self)

    __hash__ = None  # type: ignore[assignment]


def _without_id(result: Any) -> Any:
    """`id` is a fresh uuid per Env: equal outcomes differ there."""
    if isinstance(result, list):
        return [{k: v for k, v in out.items() if k != "id"} if isinstance(out, dict) else out for out in result]
    return result
