"""The values rules compute with, and EMQX's rules for comparing and converting them.

A value is what JSON gives (dict, list, str, int, float, bool, None for
null) plus `UNDEFINED`: a field that is not there. EMQX compares loosely: a
number against a string converts the string to a number; true/false/null
against a string compare as the strings "true"/"false"/"null"; `undefined`
equals only `undefined`, and any other comparison with it is false. Values
of different kinds order as Erlang terms do (numbers < atoms < maps < lists
< strings), so `>` never raises on mixed kinds.
"""

from __future__ import annotations

import re
from typing import Any

from engine.undefined import UNDEFINED as UNDEFINED  # re-exported: the rules modules import it from here
from engine.undefined import Undefined

_Undefined = Undefined  # the rank table below orders it with the atoms


class _End:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


# `AS c[0]` and `AS c[-0]`: EMQX's prepend to / append to the list at c (a path step, not an index)
HEAD: Any = _End("head")
TAIL: Any = _End("tail")


class RuleError(Exception):
    """An error while evaluating a rule for one message: counted, logged, never fatal."""


def is_number(value: Any) -> bool:
    return type(value) is int or type(value) is float


# what Erlang's binary_to_integer / binary_to_float accept: Python's int() and float() also
# take " 1", "1_000", "1e5", ".5", "nan" and "inf", which EMQX rejects
_INTEGER = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?[0-9]+\.[0-9]+(?:[eE][+-]?[0-9]+)?")
_INF = float("inf")


def to_number(text: str) -> int | float:
    """EMQX's string → number for comparisons and arithmetic: an integer, else a float."""
    if _INTEGER.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        value = float(text)
        if value not in (_INF, -_INF):  # "1.0e999": Erlang has no infinity
            return value
    raise RuleError(f"cannot convert {text!r} to a number")


def atom_text(value: Any) -> str | None:
    """true/false/null as EMQX turns them into text for comparisons, else None."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    return None


_RANK = {int: 0, float: 0, bool: 1, type(None): 1, _Undefined: 1, dict: 2, list: 3, str: 4}
_ATOM_ORDER = {False: 0, None: 1, True: 2}  # false < null < true < undefined, as atom names sort


def _order_key(value: Any) -> tuple[int, Any]:
    rank = _RANK.get(type(value), 5)
    if rank == 1:
        return rank, 3 if value is UNDEFINED else _ATOM_ORDER[value]
    return rank, value


def compare(op: str, left: Any, right: Any) -> bool:
    """`=`, `!=`/`<>`, `<`, `<=`, `>`, `>=` with EMQX's coercions."""
    if left is UNDEFINED or right is UNDEFINED:
        if not (left is UNDEFINED and right is UNDEFINED):
            return False
        return op in ("=", "<=", ">=")
    if is_number(left) and type(right) is str:
        right = to_number(right)
    elif type(left) is str and is_number(right):
        left = to_number(left)
    elif type(right) is str and atom_text(left) is not None:
        left = atom_text(left)
    elif type(left) is str and atom_text(right) is not None:
        right = atom_text(right)
    if op == "=":
        return equal(left, right)
    if op in ("!=", "<>"):
        return not equal(left, right)
    if _RANK.get(type(left)) != _RANK.get(type(right)) or _RANK.get(type(left)) == 1:
        left, right = _order_key(left), _order_key(right)
    try:
        if op == "<":
            return left < right
        if op == "<=":
            return left <= right
        if op == ">":
            return left > right
        if op == ">=":
            return left >= right
    except TypeError:
        raise RuleError(f"cannot order {left!r} and {right!r}") from None
    raise RuleError(f"unknown comparison {op}")


def equal(left: Any, right: Any) -> bool:
    """Erlang's `==`: 1 == 1.0, but true is not 1 (Python says it is)."""
    if type(left) is bool or type(right) is bool:
        return left is right
    return left == right


def same(left: Any, right: Any) -> bool:
    """Erlang's `=:=`, what EMQX's IN (lists:member) and CASE x WHEN (a pattern match) use:
    equal and of the same type, so 1 is not 1.0 there, though 1 = 1.0."""
    if type(left) is not type(right):
        return False
    if type(left) is list:
        return len(left) == len(right) and all(same(a, b) for a, b in zip(left, right, strict=True))
    if type(left) is dict:
        return left.keys() == right.keys() and all(same(v, right[k]) for k, v in left.items())
    return left == right


def truthy_condition(value: Any) -> bool:
    """A WHERE/INCASE/WHEN result: only `true` passes."""
    return value is True
