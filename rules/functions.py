"""The rule engine's function library, EMQX-compatible: the registry the compiler reads.

SQL names are case-insensitive: `FUNCTIONS` keys are lower case and
`lookup` lowers the name. Each entry's `min_args`/`max_args` count the SQL
arguments (the compiler checks them at load time, so implementations assume
the arity is right); a `needs_input` implementation also receives the rule
input (the message's columns, read by indexing so that an Env's lazy
columns work; a missing one is undefined) first. Every argument error is a
`RuleError` naming the function; an optional argument given as null is an
argument, not a missing one.

`OPERATORS` holds `+ - * / div mod` and `negate` unary minus, with EMQX's
semantics (see functions_math).
"""

from __future__ import annotations

from rules import (
    functions_data,
    functions_fmt,
    functions_math,
    functions_str,
    functions_time,
)
from rules.functions_base import Function
from rules.functions_math import OPERATORS, negate

__all__ = ["FUNCTIONS", "OPERATORS", "Function", "lookup", "negate"]


def _registry() -> dict[str, Function]:
    registry: dict[str, Function] = {}
    for module in (functions_math, functions_str, functions_fmt, functions_data, functions_time):
        for entry in module.FUNCS:
            if entry.name in registry:
                raise RuntimeError(f"rule function {entry.name}() is defined twice")
            registry[entry.name] = entry
    return registry


FUNCTIONS: dict[str, Function] = _registry()


def lookup(name: str) -> Function | None:
    return FUNCTIONS.get(name.lower())
