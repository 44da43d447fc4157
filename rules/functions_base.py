"""What every part of the rule function library shares.

The `Function` record the compiler reads, the argument checks, and EMQX's
conversions between values (a value as text, as JSON, nested map paths),
which several functions and the `+` operator all rely on.

Argument checks raise `ArgError` without the function's name; `guard`
wraps each registered implementation so that every error leaves it as a
`RuleError` that names the function ("upper(): expected a string, got 5"),
and so that no stray TypeError/ValueError/ZeroDivisionError escapes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rules import limits
from rules.values import UNDEFINED, RuleError


@dataclass(frozen=True)
class Function:
    name: str
    impl: Callable[..., Any]
    min_args: int
    max_args: int | None  # None = variadic
    needs_input: bool = False  # if True: impl(columns: dict, *args)


# An optional argument the SQL call did not give (None would be a JSON null given).
ABSENT: Any = object()


class ArgError(RuleError):
    """A bad argument; `guard` prefixes the SQL function's name."""


class LimitError(ArgError):
    """A call refused by one of the limits in rules.limits (counted there)."""

    def __init__(self, limit: str, message: str) -> None:
        limits.count(limit)
        self.limit = limit
        super().__init__(message)


def guard(name: str, impl: Callable[..., Any]) -> Callable[..., Any]:
    """`impl` with every failure turned into a RuleError naming `name`."""

    def call(*args: Any) -> Any:
        try:
            return impl(*args)
        except ArgError as e:
            raise RuleError(f"{name}(): {e}") from None
        except RuleError:
            raise
        except (TypeError, ValueError, ArithmeticError, LookupError, RecursionError, MemoryError) as e:
            # A case no explicit check foresaw: still one message's error, never a crash.
            raise RuleError(f"{name}(): {e}") from None

    call.__name__ = f"sql_{name}"
    call.__doc__ = impl.__doc__
    return call


def func(
    name: str, impl: Callable[..., Any], min_args: int, max_args: int | None = -1, *, needs_input: bool = False
) -> Function:
    """A registry entry; max_args defaults to min_args, None means variadic."""
    return Function(name, guard(name, impl), min_args, min_args if max_args == -1 else max_args, needs_input)


# --- describing values in messages -------------------------------------------------


def describe(value: Any) -> str:
    """A value as a message shows it: JSON-like, short."""
    if value is UNDEFINED:
        return "undefined"
    if type(value) is str:
        text = json.dumps(value, ensure_ascii=False)
    else:
        try:
            text = json_encode(value)
        except RuleError:
            text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- argument checks -----------------------------------------------------------------


def is_int(value: Any) -> bool:
    return type(value) is int  # bool is not an integer here, as in Erlang


def is_num(value: Any) -> bool:
    return type(value) is int or type(value) is float


def text(value: Any, what: str = "a string") -> str:
    if type(value) is str:
        return value
    raise ArgError(f"expected {what}, got {describe(value)}")


def text_or_atom(value: Any) -> str:
    """String functions also take true/false as their names (EMQX converts atoms)."""
    if type(value) is str:
        return value
    if type(value) is bool:
        return "true" if value else "false"
    raise ArgError(f"expected a string, got {describe(value)}")


def integer(value: Any, what: str = "an integer") -> int:
    if type(value) is int:
        return value
    raise ArgError(f"expected {what}, got {describe(value)}")


def number(value: Any, what: str = "a number") -> int | float:
    if type(value) is int or type(value) is float:
        return value
    raise ArgError(f"expected {what}, got {describe(value)}")


def array(value: Any, what: str = "an array") -> list[Any]:
    if type(value) is list:
        return value
    raise ArgError(f"expected {what}, got {describe(value)}")


MAX_LENGTH = 1_000_000  # pad/sprintf widths: a typo must not allocate gigabytes


def length_arg(value: Any, what: str = "a length") -> int:
    n = integer(value, what)
    if n > MAX_LENGTH:
        raise ArgError(f"{what} of {n} is over the limit of {MAX_LENGTH}")
    return n


def check_size(size: int, what: str = "the result") -> None:
    """Refuse a string of `size` characters over rule_engine.max_string_size: called before
    the string is built, so an oversized one is never allocated."""
    cap = limits.current().max_string_size
    if cap and size > cap:
        raise LimitError("string_size", f"{what} would be {size} characters, over the limit of {cap} "
                                        "(rule_engine.max_string_size)")


def option(value: Any, choices: tuple[str, ...]) -> str:
    if type(value) is str and value in choices:
        return value
    raise ArgError(f"expected one of {', '.join(repr(c) for c in choices)}, got {describe(value)}")


def finite(result: float) -> float:
    """Erlang raises badarith where IEEE floats would give inf or nan."""
    if math.isfinite(result):
        return result
    raise ArgError("the result is not a finite number")


# --- values as text (EMQX's str()) -------------------------------------------------


def float_text(value: float, decimals: int) -> str:
    """Erlang's float_to_binary(F, [{decimals, D}, compact]): trailing zeros dropped, one kept."""
    out = f"{value:.{decimals}f}"
    if "." in out:
        out = out.rstrip("0")
        if out.endswith("."):
            out += "0"
    return out


def to_text(value: Any) -> str:
    """EMQX's str(): atoms by name, floats with up to 10 decimals, maps and arrays as JSON."""
    kind = type(value)
    if kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        return float_text(value, 10)
    if value is None:
        return "null"
    if value is UNDEFINED:
        return "undefined"
    if kind is dict or kind is list:
        # Erlang would print a list of character codes as text; JSON arrays stay JSON here.
        return json_encode(value)
    raise ArgError(f"cannot convert {describe(value)} to a string")


# --- JSON ----------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if value is UNDEFINED:
        return None  # a missing field inside a map or array encodes as null
    raise TypeError(f"{value!r} is not a JSON value")


_SHORTEST = {type(None): 4, bool: 4, int: 1, float: 3}  # null, true, 0, 0.0


def _leaf_size(item: Any) -> int:
    """At most the item's JSON length: escapes and further digits only add."""
    return len(item) + 2 if type(item) is str else _SHORTEST.get(type(item), 1)


def _json_size_at_least(value: Any, budget: int) -> int:
    """A lower bound of the JSON text's length (at most budget + 1). A value can hold the same
    list many times (`[a, a]` nested 40 deep is 41 lists in memory and 2^40 copies as JSON), so
    each list or map is measured once (by identity), after its children: linear in the distinct
    values, whatever the text would be."""
    if type(value) is not list and type(value) is not dict:
        return _leaf_size(value)
    sizes: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(value, False)]
    while stack:
        item, children_done = stack.pop()
        if id(item) in sizes:
            continue
        inner = item.values() if type(item) is dict else item
        if not children_done:
            stack.append((item, True))
            stack.extend((c, False) for c in inner if (type(c) is list or type(c) is dict) and id(c) not in sizes)
            continue
        size = 1 + len(item) if item else 2  # brackets and commas
        if type(item) is dict:
            size += sum(len(k) + 3 if type(k) is str else 3 for k in item)  # "key":
        for c in inner:
            size += sizes[id(c)] if type(c) is list or type(c) is dict else _leaf_size(c)
        if size > budget:
            return budget + 1
        sizes[id(item)] = size
    return sizes[id(value)]


def json_encode(value: Any) -> str:
    if type(value) is dict or type(value) is list:
        cap = limits.current().max_string_size
        if cap and _json_size_at_least(value, cap) > cap:
            raise LimitError("string_size", f"the JSON text would be over the limit of {cap} characters "
                                            "(rule_engine.max_string_size)")
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as e:
        raise ArgError(f"cannot encode as JSON: {e}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {literal}")
    return value


def json_decode(source: str) -> Any:
    """Strict JSON: no NaN/Infinity, no out-of-range floats."""
    try:
        return json.loads(source, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as e:
        raise ArgError(f"invalid JSON: {e}") from None


def try_json(source: str) -> Any:
    """The decoded value, or UNDEFINED when the text is not JSON."""
    try:
        return json_decode(source)
    except RuleError:
        return UNDEFINED


# --- Erlang term equality --------------------------------------------------------


def erl_equal(a: Any, b: Any, exact: bool) -> bool:
    """Erlang `=:=` (exact: 1 is not 1.0) or `==`; true is never 1, unlike Python."""
    ta, tb = type(a), type(b)
    if ta in (int, float) and tb in (int, float):
        return a == b and (not exact or ta is tb)
    if ta is not tb:
        return False
    if ta is list:
        return len(a) == len(b) and all(erl_equal(x, y, exact) for x, y in zip(a, b))
    if ta is dict:
        return a.keys() == b.keys() and all(erl_equal(v, b[k], exact) for k, v in a.items())
    return a is b if ta is bool or a is None or a is UNDEFINED else a == b


# --- nested map paths (emqx_rule_maps) -----------------------------------------------


def key_path(key: str) -> list[str]:
    """map_get's "a.b.c" → ["a", "b", "c"]."""
    return key.split(".")


def _as_container(value: Any) -> Any:
    # EMQX looks inside a string by decoding it as JSON, at every level.
    return try_json(value) if type(value) is str else value


def nested_get(path: list[str], data: Any, default: Any = UNDEFINED) -> Any:
    for key in path:
        data = _as_container(data)
        if type(data) is not dict or key not in data:
            return default
        data = data[key]
    return data


def nested_put(path: list[str], value: Any, data: Any) -> Any:
    """A copy of `data` with `value` at `path`; putting undefined changes nothing."""
    if value is UNDEFINED:
        return data if type(data) is dict else {}
    return _put(path, value, data if type(data) is dict else {})


def _put(path: list[str], value: Any, data: Any) -> dict[str, Any]:
    data = _as_container(data)
    out = dict(data) if type(data) is dict else {}
    key = path[0]
    out[key] = value if len(path) == 1 else _put(path[1:], value, out.get(key))
    return out
