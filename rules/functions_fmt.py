"""sprintf(format, args...): Erlang io_lib:format, as EMQX's sprintf uses it.

Control sequences are `~F.P.PadModC`: F the field width (`-` left-adjusts,
`*` takes it from the arguments), P the precision, Pad the padding
character, Mod `t` or `l`, and C one of

    ~ n c s w p W P d b B x X # + f e g i

`~s` takes a string (or true/false/null/undefined, printed as their names);
`~w`/`~p` print any value as an Erlang term: strings as `<<"text">>`, maps as
`#{<<"k">> => 1}`, floats in Erlang's shortest form (`1.0e5`). `~d` and the
base directives take integers; `~f ~e ~g` take floats (integers accepted).
A format that does not match its arguments is an error, as in Erlang.

Not reproduced: `~p`'s line breaking past 80 columns, `~p` printing lists of
character codes as strings, and Latin-1 byte output for non-ASCII text
under `~p`/`~w` (it is printed as `<<"..."/utf8>>`, as `~tp` does).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, cast

from rules.functions_base import (
    ArgError,
    Function,
    check_size,
    describe,
    func,
    integer,
    is_int,
    is_num,
    length_arg,
    text,
)
from rules.values import UNDEFINED

# --- Erlang terms as text ------------------------------------------------------------------


def erl_float(value: float) -> str:
    """io_lib_format:fwrite_g/1: the shortest round-tripping digits, in fixed or
    scientific notation, whichever is shorter (always scientific from 2^53 up)."""
    if value == 0:
        return "-0.0" if str(value).startswith("-") else "0.0"
    _sign, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    place = cast(int, exponent)  # an int for a finite value ('n', 'N', 'F' mark NaN and infinity)
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    place += len(digit_tuple) - len(digits)  # value = digits * 10**place
    n = len(digits)
    exp = place + n - 1
    exp_cost = len(str(exp)) + 2
    if place < 0:
        if exp >= 0:
            body = digits[: n + place] + "." + digits[n + place :]
        elif 2 - place - n <= exp_cost:
            body = "0." + "0" * (-place - n) + digits
        else:
            body = _sci(digits, exp)
    else:
        dot = 1 if n == 1 else 0
        if exp_cost + dot >= place + 2 and abs(value) < 2.0**53:
            body = digits + "0" * place + ".0"
        else:
            body = _sci(digits, exp)
    return ("-" if value < 0 else "") + body


def _sci(digits: str, exp: int) -> str:
    return f"{digits[0]}.{digits[1:] or '0'}e{exp}"


_BIN_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v", "\b": "\\b", "\f": "\\f", "\x1b": "\\e"}  # fmt: skip


def _erl_binary(s: str) -> str:
    if any(not (" " <= c <= "~" or c in _BIN_ESCAPES or c >= "\xa0") for c in s):
        return "<<" + ",".join(str(b) for b in s.encode()) + ">>"  # not printable: bytes
    body = "".join(_BIN_ESCAPES.get(c, c) for c in s)
    return f'<<"{body}"/utf8>>' if any(c > "~" for c in s) else f'<<"{body}">>'


def erl_term(value: Any) -> str:
    """A value as Erlang's ~w/~p prints it (JSON strings are binaries in EMQX)."""
    kind = type(value)
    if kind is str:
        return _erl_binary(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        return erl_float(value)
    if value is None:
        return "null"
    if value is UNDEFINED:
        return "undefined"
    if kind is list:
        return "[" + ",".join(erl_term(v) for v in value) + "]"
    if kind is dict:
        # Small Erlang maps print in key order; binary keys order bytewise.
        items = sorted(value.items(), key=lambda kv: str(kv[0]).encode())
        return "#{" + ",".join(f"{erl_term(k)} => {erl_term(v)}" for k, v in items) + "}"
    raise ArgError(f"cannot print {describe(value)}")


# --- the format string ---------------------------------------------------------------------


class _Args:
    def __init__(self, args: tuple[Any, ...]) -> None:
        self.args, self.pos = args, 0

    def take(self, directive: str) -> Any:
        if self.pos >= len(self.args):
            raise ArgError(f"the format needs more arguments than the {len(self.args)} given (at ~{directive})")
        self.pos += 1
        return self.args[self.pos - 1]


def _adjust(body: str, width: int | None, left: bool, pad: str) -> str:
    if width is None or len(body) >= width:
        return body
    fill = pad * (width - len(body))
    return body + fill if left else fill + body


def _field(body: str, width: int | None, left: bool, pad: str) -> str:
    """Erlang's term/5: a number wider than its field prints as a row of *."""
    if width is not None and len(body) > width:
        return "*" * width
    return _adjust(body, width, left, pad)


def _float_arg(value: Any, directive: str) -> float:
    if not is_num(value):
        raise ArgError(f"~{directive} expects a number, got {describe(value)}")
    return float(value)


def _fmt_e(value: float, precision: int) -> str:
    if precision < 2:
        raise ArgError("~e needs a precision of at least 2")
    mantissa, exp = f"{value:.{precision - 1}e}".split("e")
    return f"{mantissa}e{int(exp):+d}"


def _fmt_g(value: float, precision: int) -> str:
    a = abs(value)
    bounds = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
    e = next((i - 2 for i, b in enumerate(bounds) if a < b), None)
    if e is not None and ((precision <= 1 and e == -1) or (precision - 1 > e >= -1)):
        return f"{value:.{precision - 1 - e}f}"
    return _fmt_e(value, 2 if precision <= 1 else precision)


def _int_text(value: int, base: int, lower: bool) -> str:
    if not 2 <= base <= 36:
        raise ArgError(f"base {base} is not between 2 and 36")
    digits, n = [], abs(value)
    while True:
        n, d = divmod(n, base)
        digits.append("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[d])
        if not n:
            break
    out = "".join(reversed(digits))
    return out.lower() if lower else out


def _string_arg(value: Any) -> str:
    if type(value) is str:
        return value
    if type(value) is bool or value is None or value is UNDEFINED:
        return erl_term(value)  # atoms print as their names
    raise ArgError(f"~s expects a string, got {describe(value)}")


def _directive(c: str, width: int | None, left: bool, prec: int | None, pad: str, args: _Args) -> str:
    if c == "~":
        return "~" * (width or 1)
    if c == "n":
        return "\n"
    if c == "i":
        args.take(c)
        return ""
    if c == "c":
        code = integer(args.take(c), "a character code for ~c")
        if not 0 <= code <= 0x10FFFF:
            raise ArgError(f"{code} is not a character code")
        return chr(code) * (width or prec or 1)
    if c == "s":
        body = _string_arg(args.take(c))
        if prec is not None:
            body = _adjust(body[:prec], prec, True, pad)  # padded on the right up to P
        return _adjust(body[:width] if prec is None and width is not None else body, width, left, pad)
    if c in "wpWP":
        value = args.take(c)
        if c in "WP":
            integer(args.take(c), "a depth for ~" + c)  # the depth limit is not applied
        return _field(erl_term(value), width, left, pad) if c in "wW" else _adjust(erl_term(value), width, left, pad)
    if c in "dbBxX#+":
        value = args.take(c)
        if not is_int(value):
            raise ArgError(f"~{c} expects an integer, got {describe(value)}")
        base = 10 if c == "d" or prec is None else prec
        body = _int_text(value, base, c in "bx+")
        if c in "xX":
            body = text(_string_arg(args.take(c)), "a prefix for ~" + c) + body
        elif c in "#+":
            body = f"{base}#{body}"
        return _field(("-" if value < 0 else "") + body, width, left, pad)
    if c in "feg":
        value = _float_arg(args.take(c), c)
        p = 6 if prec is None else prec
        body = f"{value:.{p}f}" if c == "f" else _fmt_e(value, p) if c == "e" else _fmt_g(value, p)
        return _field(body, width, left, pad)
    raise ArgError(f"unknown control sequence ~{c}")


def _number_spec(fmt: str, i: int, args: _Args) -> tuple[int | None, int]:
    """An optional count at fmt[i]: digits, or * for one taken from the arguments."""
    if i < len(fmt) and fmt[i] == "*":
        n = integer(args.take("*"), "a field width for *")
        return (-length_arg(-n, "a field width") if n < 0 else length_arg(n, "a field width")), i + 1
    j = i
    while j < len(fmt) and "0" <= fmt[j] <= "9":
        j += 1
    return (length_arg(int(fmt[i:j]), "a field width") if j > i else None), j


def sprintf(fmt: Any, *values: Any) -> str:
    fmt = text(fmt, "a format string")
    args = _Args(values)
    out: list[str] = []
    size = 0  # of out so far: each directive's text is at most a field width or its argument long
    i, n = 0, len(fmt)
    while i < n:
        at = fmt.find("~", i)
        if at < 0:
            out.append(fmt[i:])
            break
        out.append(fmt[i:at])
        size += at - i
        i = at + 1
        left = i < n and fmt[i] == "-"
        if left:
            i += 1
        width, i = _number_spec(fmt, i, args)
        if width is not None and width < 0:
            left, width = True, -width
        prec, pad = None, " "
        if i < n and fmt[i] == ".":
            prec, i = _number_spec(fmt, i + 1, args)
            if prec is not None and prec < 0:
                raise ArgError(f"a precision cannot be negative, got {prec}")
            if i < n and fmt[i] == ".":
                if i + 1 >= n:
                    raise ArgError("the format ends inside a control sequence")
                pad, i = fmt[i + 1], i + 2
        while i < n and fmt[i] in "tl":  # Unicode / no-list-detection modifiers change nothing here
            i += 1
        if i >= n:
            raise ArgError("the format ends inside a control sequence")
        piece = _directive(fmt[i], width, left, prec, pad, args)
        size += len(piece)
        check_size(size + n - i)  # checked as it grows: the whole is never built over the limit
        out.append(piece)
        i += 1
    if args.pos < len(values):
        raise ArgError(f"the format uses {args.pos} of the {len(values)} arguments given")
    return "".join(out)


FUNCS: list[Function] = [func("sprintf", sprintf, 1, None)]
