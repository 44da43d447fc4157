"""Shared by the rule SQL conformance tests: a message with fixed columns, run through a compiled rule."""

from __future__ import annotations

from typing import Any

import orjson

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
    return compile_sql(sql, "r1").apply(Env({**COLUMNS, "payload": text, **columns}))
