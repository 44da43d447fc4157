"""Paths into rule values: `payload.a.b[2]` as steps, and one step taken the EMQX way."""

from __future__ import annotations

from typing import Any

import orjson
from sqlglot import exp

from rules.values import UNDEFINED


def path_of(node: exp.Expression, dynamic: bool = False) -> list[Any] | None:
    """Column / Dot / Bracket chains → path steps: str keys, int (1-based) indexes, or
    (with dynamic) expressions computed per message."""
    if isinstance(node, exp.Column):
        return [part.name for part in node.parts]
    if isinstance(node, exp.Dot):
        base = path_of(node.this, dynamic)
        if base is None or not isinstance(node.expression, exp.Identifier):
            return None
        return base + [node.expression.name]
    if isinstance(node, exp.Bracket):
        base = path_of(node.this, dynamic)
        if base is None or len(node.expressions) != 1:
            return None
        index = node.expressions[0]
        if isinstance(index, exp.Literal):
            return base + [index.this if index.is_string else int(index.this)]
        if isinstance(index, exp.Neg) and isinstance(index.this, exp.Literal) and not index.this.is_string:
            return base + [-int(index.this.this)]
        return base + [index] if dynamic else None
    return None


def json_or_undefined(text: str) -> Any:
    """A JSON text decoded, or undefined when it is not JSON."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return UNDEFINED


def take_step(value: Any, step: Any) -> Any:
    """value[step]: a key of a map, or a 1-based index of a list (negative from the end); else undefined."""
    if type(value) is str:
        value = json_or_undefined(value)  # emqx_rule_maps: a path goes on into a JSON text
    if type(step) is str:
        return value.get(step, UNDEFINED) if type(value) is dict else UNDEFINED
    if type(step) is int and type(value) is list:
        n = len(value)
        if 1 <= step <= n:
            return value[step - 1]
        if -n <= step <= -1:
            return value[step]
    return UNDEFINED
