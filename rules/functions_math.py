"""Arithmetic operators, math, bitwise, type tests and conversions (emqx_rule_funcs).

Numbers follow Erlang: integers are unbounded, `/` always gives a float,
`div` and `mod` truncate toward zero (`mod` is Erlang's `rem`: the sign of
the dividend), and float overflow or a math domain error is an error, not
inf or nan. true/false are never numbers.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from typing import Any

from rules.functions_base import (
    ABSENT,
    ArgError,
    Function,
    check_size,
    describe,
    finite,
    float_text,
    func,
    integer,
    is_int,
    is_num,
    json_decode,
    number,
    to_text,
)
from rules.values import UNDEFINED, RuleError

# --- operators -------------------------------------------------------------------------


def _operands(a: Any, b: Any) -> None:
    if not (is_num(a) and is_num(b)):
        raise ArgError(f"expected two numbers, got {describe(a)} and {describe(b)}")


def _checked(result: Any) -> Any:
    return finite(result) if type(result) is float else result


def op_add(a: Any, b: Any) -> Any:
    """`+`: concatenation when either side is a string, else addition."""
    if type(a) is str or type(b) is str:
        a, b = to_text(a), to_text(b)
        check_size(len(a) + len(b))
        return a + b
    _operands(a, b)
    return _checked(a + b)


def op_sub(a: Any, b: Any) -> Any:
    _operands(a, b)
    return _checked(a - b)


def op_mul(a: Any, b: Any) -> Any:
    _operands(a, b)
    return _checked(a * b)


def op_div(a: Any, b: Any) -> float:
    _operands(a, b)
    if b == 0:
        raise ArgError("division by zero")
    return finite(a / b)


def _ints(a: Any, b: Any) -> None:
    if not (is_int(a) and is_int(b)):
        raise ArgError(f"expected two integers, got {describe(a)} and {describe(b)}")
    if b == 0:
        raise ArgError("division by zero")


def op_intdiv(a: Any, b: Any) -> int:
    """Erlang `div`: truncates toward zero (-7 div 2 = -3)."""
    _ints(a, b)
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def op_mod(a: Any, b: Any) -> int:
    """EMQX's `mod` is Erlang `rem`: the result has the dividend's sign (-7 mod 2 = -1)."""
    _ints(a, b)
    r = abs(a) % abs(b)
    return -r if a < 0 else r


def negate(value: Any) -> Any:
    """Unary minus."""
    if not is_num(value):
        raise RuleError(f"unary -: expected a number, got {describe(value)}")
    return -value


def _operator(symbol: str, impl: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """`impl` with every failure a RuleError naming the operator ("operator /: division by zero")."""

    def call(a: Any, b: Any) -> Any:
        try:
            return impl(a, b)
        except (RuleError, TypeError, ValueError, ArithmeticError) as e:
            raise RuleError(f"operator {symbol}: {e}") from None

    call.__name__ = f"op_{impl.__name__}"
    return call


OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "+": _operator("+", op_add),
    "-": _operator("-", op_sub),
    "*": _operator("*", op_mul),
    "/": _operator("/", op_div),
    "div": _operator("div", op_intdiv),
    "mod": _operator("mod", op_mod),
}

# --- math --------------------------------------------------------------------------------


def _float_fn(fn: Callable[[float], float]) -> Callable[[Any], float]:
    def call(x: Any) -> float:
        try:
            return finite(fn(number(x)))
        except (ValueError, OverflowError):
            raise ArgError(f"{describe(x)} is outside the function's domain") from None

    return call


def _abs(x: Any) -> int | float:
    return abs(number(x))  # EMQX takes only integers; floats are accepted too


def _ceil(x: Any) -> int:
    return math.ceil(number(x))


def _floor(x: Any) -> int:
    return math.floor(number(x))


def _round(x: Any) -> int:
    """Erlang round/1: half away from zero, an integer."""
    x = number(x)
    if is_int(x):
        return x
    n = math.floor(abs(x))
    if abs(x) - n >= 0.5:  # exact for doubles, unlike floor(x + 0.5)
        n += 1
    return n if x >= 0 else -n


def _power(x: Any, y: Any) -> float:
    try:
        return finite(math.pow(number(x), number(y)))
    except (ValueError, OverflowError):
        raise ArgError(f"power({describe(x)}, {describe(y)}) is not a real number") from None


def _fmod(x: Any, y: Any) -> float:
    x, y = number(x), number(y)
    if y == 0:
        raise ArgError("division by zero")
    return math.fmod(x, y)


_MATH_1 = {
    "acos": math.acos, "acosh": math.acosh, "asin": math.asin, "asinh": math.asinh,
    "atan": math.atan, "atanh": math.atanh, "cos": math.cos, "cosh": math.cosh,
    "exp": math.exp, "log": math.log, "log10": math.log10, "log2": math.log2,
    "sin": math.sin, "sinh": math.sinh, "sqrt": math.sqrt, "tan": math.tan, "tanh": math.tanh,
}  # fmt: skip

# --- bitwise -------------------------------------------------------------------------------

_MAX_BITS = 4_194_240  # Erlang's largest integer; beyond it bsl fails with system_limit


def _bitnot(x: Any) -> int:
    return ~integer(x)


def _bitand(x: Any, y: Any) -> int:
    return integer(x) & integer(y)


def _bitor(x: Any, y: Any) -> int:
    return integer(x) | integer(y)


def _bitxor(x: Any, y: Any) -> int:
    return integer(x) ^ integer(y)


def _shift_left(x: int, n: int) -> int:
    if n < 0:
        return x >> -n  # Erlang: a negative left shift shifts right
    if x and x.bit_length() + n > _MAX_BITS:
        raise ArgError("the result is too large")
    return x << n


def _bitsl(x: Any, n: Any) -> int:
    return _shift_left(integer(x), integer(n))


def _bitsr(x: Any, n: Any) -> int:
    return _shift_left(integer(x), -integer(n))


# --- type tests ------------------------------------------------------------------------------


def _is_null(v: Any) -> bool:
    """EMQX: only undefined (a missing field) is null; JSON null is not (see is_null_var)."""
    return v is UNDEFINED


def _is_null_var(v: Any) -> bool:
    return v is UNDEFINED or v is None


def _is_empty(v: Any) -> bool:
    """An empty map or array (a string is decoded as JSON first)."""
    if type(v) is str:
        v = json_decode(v) if v.strip() else []
    if type(v) in (dict, list):
        return not v
    raise ArgError(f"expected a map or an array, got {describe(v)}")


_TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    "is_null": _is_null,
    "is_not_null": lambda v: not _is_null(v),
    "is_null_var": _is_null_var,
    "is_not_null_var": lambda v: not _is_null_var(v),
    "is_str": lambda v: type(v) is str,
    "is_bool": lambda v: type(v) is bool,
    "is_int": lambda v: type(v) is int,
    "is_float": lambda v: type(v) is float,
    "is_num": is_num,
    "is_map": lambda v: type(v) is dict,
    "is_array": lambda v: type(v) is list,
    "is_empty": _is_empty,
}

# --- conversions ---------------------------------------------------------------------------

# Erlang's binary_to_integer / binary_to_float syntax: a float needs digits on both sides of
# the dot ("1.0", "1.5e3"); "1e3", ".5" and "1." are not floats, " 1" is not an integer.
_ERL_INT = re.compile(r"[+-]?[0-9]+")
_ERL_FLOAT = re.compile(r"[+-]?[0-9]+\.[0-9]+(?:[eE][+-]?[0-9]+)?")


def _parse_number(s: str) -> int | float:
    if _ERL_INT.fullmatch(s):
        return int(s)
    if _ERL_FLOAT.fullmatch(s):
        return finite(float(s))
    raise ArgError(f"{describe(s)} is not a number")


def _int(v: Any) -> int:
    """int(): strings parsed (floats floored), floats floored, true/false as 1/0."""
    if type(v) is bool:
        return int(v)
    if type(v) is str:
        v = _parse_number(v)
    if is_num(v):
        return math.floor(v)
    raise ArgError(f"cannot convert {describe(v)} to an integer")


def _float(v: Any, decimals: Any = ABSENT) -> float:
    """float(v) and float(v, decimals): decimals > 0 rounds, as EMQX does through text."""
    if type(v) is str:
        v = _parse_number(v)
    if not is_num(v):
        raise ArgError(f"cannot convert {describe(v)} to a float")
    result = float(v)
    if decimals is ABSENT:
        return result
    if not is_int(decimals) or not 0 < decimals <= 253:
        raise ArgError(f"decimals must be an integer from 1 to 253, got {describe(decimals)}")
    return float(f"{result:.{decimals}f}")


def _float2str(v: Any, decimals: Any) -> str:
    """Erlang float_to_binary(F, [{decimals, D}, compact])."""
    v = number(v, "a float")
    if not is_int(decimals) or not 0 <= decimals <= 253:
        raise ArgError(f"decimals must be an integer from 0 to 253, got {describe(decimals)}")
    return float_text(float(v), decimals)


def _bool(v: Any) -> bool:
    """bool(): true/false, "true"/"false", 1/0 (also 1.0/0.0)."""
    if type(v) is bool:
        return v
    if type(v) is str and v in ("true", "false"):
        return v == "true"
    if is_num(v) and v in (0, 1):
        return v == 1
    raise ArgError(f"cannot convert {describe(v)} to a boolean")


def _str(v: Any) -> str:
    return to_text(v)


def _random() -> float:
    return random.random()  # EMQX's rand:uniform(): not for secrets


FUNCS: list[Function] = [
    func("abs", _abs, 1),
    func("ceil", _ceil, 1),
    func("floor", _floor, 1),
    func("round", _round, 1),
    func("power", _power, 2),
    func("fmod", _fmod, 2),
    *(func(name, _float_fn(fn), 1) for name, fn in _MATH_1.items()),
    func("bitnot", _bitnot, 1),
    func("bitand", _bitand, 2),
    func("bitor", _bitor, 2),
    func("bitxor", _bitxor, 2),
    func("bitsl", _bitsl, 2),
    func("bitsr", _bitsr, 2),
    *(func(name, test, 1) for name, test in _TYPE_TESTS.items()),
    func("str", _str, 1),
    func("str_utf8", _str, 1),  # strings are already Unicode text here
    func("int", _int, 1),
    func("float", _float, 1, 2),
    func("float2str", _float2str, 2),
    func("bool", _bool, 1),
    func("random", _random, 0),
]
