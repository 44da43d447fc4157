"""Values kept on disk as JSON, with the types JSON has not: what a durable queue's owners store.

`tagged(value)` turns bytes, tuples and dicts (any keys, as pairs) into JSON-safe tags, and
`untagged` turns them back: the bridge's MQTT properties (Correlation Data is bytes, User
Properties are pairs) and an action's rendered requests (SQL row values, HTTP requests) both
go through it.
"""

from __future__ import annotations

import base64
from typing import Any


def tagged(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return {"b": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, tuple):
        return {"t": [tagged(v) for v in value]}
    if isinstance(value, list):
        return [tagged(v) for v in value]
    if isinstance(value, dict):
        return {"d": [[tagged(k), tagged(v)] for k, v in value.items()]}
    return str(value)  # a value a template produced that JSON cannot hold: its text, as a driver would send it


def untagged(value: Any) -> Any:
    if isinstance(value, list):
        return [untagged(v) for v in value]
    if isinstance(value, dict):
        if "b" in value:
            return base64.b64decode(value["b"])
        if "t" in value:
            return tuple(untagged(v) for v in value["t"])
        return {untagged(k): untagged(v) for k, v in value["d"]}
    return value
