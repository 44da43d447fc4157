"""String functions (emqx_rule_funcs / emqx_variform_bif).

EMQX works on UTF-8 binaries and counts graphemes; here strings are Python
text and lengths and offsets count code points (the same for every string
without combining marks). Positions are EMQX's: substr's start is 0-based.
Regular expressions run on RE2 (rules.regex): linear time whatever the
pattern and the text, PCRE's syntax less backreferences and lookaround,
which are refused with an error naming them; replacement strings use
Erlang's `&`, `\\N`, `\\g{N}` syntax. Every function whose result can be longer
than its inputs checks `rule_engine.max_string_size` before building it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from itertools import islice
from typing import Any

from rules import limits
from rules.regex import compile_pattern

from rules.functions_base import (
    ABSENT,
    ArgError,
    Function,
    LimitError,
    array,
    check_size,
    func,
    integer,
    length_arg,
    option,
    text,
    text_or_atom,
    to_text,
)

# Erlang string:trim's default whitespace (unicode_util:whitespace/0).
_WHITESPACE = "\t\n\v\f\r \x85\u200e\u200f\u2028\u2029"


def _case_mapped(s: str, result: str) -> str:
    # one character can map to up to three ("ß" → "SS"): checked once built, as it is at most 3× s
    if len(result) != len(s):
        check_size(len(result))
    return result


def _lower(s: Any) -> str:
    s = text_or_atom(s)
    return _case_mapped(s, s.lower())


def _upper(s: Any) -> str:
    s = text_or_atom(s)
    return _case_mapped(s, s.upper())


def _trim(s: Any) -> str:
    return text_or_atom(s).strip(_WHITESPACE)


def _ltrim(s: Any) -> str:
    return text_or_atom(s).lstrip(_WHITESPACE)


def _rtrim(s: Any) -> str:
    return text_or_atom(s).rstrip(_WHITESPACE)


def _reverse(s: Any) -> str:
    return text_or_atom(s)[::-1]


def _strlen(s: Any) -> int:
    return len(text_or_atom(s))


def _bytesize(s: Any) -> int:
    return len(text(s).encode())


def _substr(s: Any, start: Any, length: Any = ABSENT) -> str:
    """substr(s, start[, length]): start counts from 0 (string:slice)."""
    s, start = text_or_atom(s), integer(start, "a start position")
    if start < 0:
        raise ArgError(f"the start position cannot be negative, got {start}")
    if length is ABSENT:
        return s[start:]
    length = integer(length, "a length")
    if length < 0:
        raise ArgError(f"the length cannot be negative, got {length}")
    return s[start : start + length]


def _split_once(s: str, sep: str, where: str) -> list[str]:
    if not sep:
        return [s]  # string:split with an empty pattern does not split
    if where == "all":
        return s.split(sep)
    return s.split(sep, 1) if where == "leading" else s.rsplit(sep, 1)


_SPLIT_MODES = {
    "notrim": ("all", False),
    "leading": ("leading", True),
    "leading_notrim": ("leading", False),
    "trailing": ("trailing", True),
    "trailing_notrim": ("trailing", False),
}


def _split(s: Any, sep: Any, mode: Any = ABSENT) -> list[str]:
    """split(s, sep[, mode]): by default at every sep, empty parts dropped."""
    s, sep = text_or_atom(s), text(sep, "a separator string")
    where, trim = ("all", True) if mode is ABSENT else _SPLIT_MODES[option(mode, tuple(_SPLIT_MODES))]
    parts = _split_once(s, sep, where)
    return [p for p in parts if p] if trim else parts


def _tokens(s: Any, separators: Any, nocrlf: Any = ABSENT) -> list[str]:
    """tokens(s, chars[, 'nocrlf']): split at any of the characters, empty tokens dropped."""
    s, chars = text_or_atom(s), text(separators, "a string of separator characters")
    if nocrlf is not ABSENT:
        option(nocrlf, ("nocrlf",))
        chars += "\r\n"
    if not chars:
        return [s] if s else []
    return [t for t in re.split("[" + re.escape(chars) + "]", s) if t]


def _concat(*args: Any) -> str:
    """concat(a, b, ...) or concat(array): every part converted as str() does."""
    if len(args) == 1:
        args = tuple(array(args[0], "an array (or two or more values)"))
    parts = [to_text(a) for a in args]
    check_size(sum(map(len, parts)))
    return "".join(parts)


def _pad(s: Any, length: Any, where: Any = "trailing", char: Any = " ") -> str:
    """pad(s, len[, trailing|leading|both[, char]]): pad up to len characters."""
    s, length = text_or_atom(s), length_arg(length)
    where = option(where, ("trailing", "leading", "both"))
    char = text(char, "a padding string")
    n = max(0, length - len(s))
    # the filler is repeated n times whole (EMQX): "ex" pads by 2 characters per missing one
    check_size(len(s) + n * len(char))
    if where == "trailing":
        return s + char * n
    if where == "leading":
        return char * n + s
    return char * (n // 2) + s + char * (n - n // 2)  # the odd one goes to the right


def _replace(s: Any, old: Any, new: Any, where: Any = "all") -> str:
    """replace(s, old, new[, all|leading|trailing]): leading/trailing replace one occurrence."""
    s, old, new = text_or_atom(s), text(old), text(new)
    where = option(where, ("all", "leading", "trailing"))
    if not old:
        return s
    if where == "all":
        if len(new) > len(old):
            check_size(len(s) + s.count(old) * (len(new) - len(old)))
        return s.replace(old, new)
    check_size(len(s) + len(new))
    if where == "leading":
        return s.replace(old, new, 1)
    head, found, tail = s.rpartition(old)
    return head + new + tail if found else s


def _regex(pattern: str) -> Any:
    return compile_pattern(pattern)


# RE2 matches UTF-8 bytes: searching the encoded text skips the wrapper's mapping of byte
# offsets back to characters (11 µs → 2 µs a search); groups are whole characters, so decode.


def _regex_match(s: Any, pattern: Any) -> bool:
    """Whether the pattern matches anywhere in s."""
    return _regex(text(pattern, "a regular expression")).search(text_or_atom(s).encode()) is not None


_REPLACEMENT_PART = re.compile(r"\\g\{(\d+)\}|\\g(\d+)|\\(\d+)|\\([\\&])|(&)")


@lru_cache(maxsize=256)
def _replacement(template: str) -> tuple[str | int, ...]:
    """Erlang re:replace syntax: & is the match, \\N, \\gN, \\g{N} a group, \\& and \\\\ literal."""
    parts: list[str | int] = []
    pos = 0
    for m in _REPLACEMENT_PART.finditer(template):
        parts.append(template[pos : m.start()])
        group = m.group(1) or m.group(2) or m.group(3)
        parts.append(int(group) if group is not None else (0 if m.group(5) else m.group(4)))
        pos = m.end()
    parts.append(template[pos:])
    return tuple(p for p in parts if p != "")


def _regex_replace(s: Any, pattern: Any, replacement: Any) -> str:
    """Replace every match; groups that do not exist or did not match insert nothing."""
    regex = _regex(text(pattern, "a regular expression"))
    parts = _encoded(_replacement(text(replacement, "a replacement string")))
    data = text_or_atom(s).encode()
    # Each match costs a few µs in RE2's Python wrapper, and a pattern that matches the empty
    # string matches at every position: 2 MB of text would hold the loop for seconds.
    most = limits.current().regex_max_matches or len(data) + 1
    pieces: list[bytes] = []
    end = added = 0  # added: bytes the replacements add (an upper bound of characters)
    for count, m in enumerate(islice(regex.finditer(data), most + 1), 1):
        if count > most:
            raise LimitError("regex", f"the pattern matches more than {most} times in the text "
                                      "(rule_engine.regex_max_matches)")
        start, stop = m.span()
        pieces.append(data[end:start])
        for p in parts:
            piece = ((m.group(p) or b"") if p <= regex.groups else b"") if isinstance(p, int) else p
            added += len(piece)
            pieces.append(piece)
        check_size(len(data) + added)  # before the pieces are joined
        end = stop
    pieces.append(data[end:])
    return b"".join(pieces).decode()


@lru_cache(maxsize=256)
def _encoded(parts: tuple[str | int, ...]) -> tuple[bytes | int, ...]:
    return tuple(p.encode() if isinstance(p, str) else p for p in parts)


def _regex_extract(s: Any, pattern: Any) -> list[str]:
    """The groups of the first match (without the whole match); [] when nothing matches."""
    m = _regex(text(pattern, "a regular expression")).search(text_or_atom(s).encode())
    return [g.decode() if g else "" for g in m.groups()] if m else []


def _ascii(s: Any) -> int:
    """The first byte of the string's UTF-8 form (EMQX reads one byte)."""
    data = text_or_atom(s).encode()
    if not data:
        raise ArgError("expected a non-empty string")
    return data[0]


def _find(s: Any, sub: Any, where: Any = "leading") -> str:
    """The rest of s from the first (or last) occurrence of sub; "" when absent."""
    s, sub = text_or_atom(s), text(sub)
    at = s.find(sub) if option(where, ("leading", "trailing")) == "leading" else s.rfind(sub)
    return "" if at < 0 else s[at:]


def _join_to_string(sep_or_list: Any, items: Any = ABSENT) -> str:
    """join_to_string([sep,] array): elements converted as str() does; sep defaults to ", "."""
    if items is ABSENT:
        sep, items = ", ", sep_or_list
    else:
        sep = text(sep_or_list, "a separator string")
    parts = [to_text(v) for v in array(items)]
    check_size(sum(map(len, parts)) + len(sep) * max(0, len(parts) - 1))
    return sep.join(parts)


_ESCAPES = {"\\": "\\", "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "'": "'", '"': '"', "?": "?", "a": "\a"}  # fmt: skip
_HEX = set("0123456789abcdefABCDEF")


def _unescape(s: Any) -> str:
    r"""C-style escapes: \n \t \r \b \f \v \' \" \? \a \\ and \xHEX (all hex digits that follow)."""
    s = text_or_atom(s)
    out: list[str] = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c != "\\" or i + 1 == n:  # a lone trailing backslash stays
            out.append(c)
            i += 1
            continue
        nxt = s[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt == "x" and i + 2 < n and s[i + 2] in _HEX:
            j = i + 2
            while j < n and s[j] in _HEX:
                j += 1
            code = int(s[i + 2 : j], 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise ArgError(f"\\x{s[i + 2 : j]} is not a Unicode character")
            out.append(chr(code))
            i = j
        else:
            raise ArgError(f"unrecognized escape sequence \\{nxt}")
    return "".join(out)


FUNCS: list[Function] = [
    func("lower", _lower, 1),
    func("upper", _upper, 1),
    func("trim", _trim, 1),
    func("ltrim", _ltrim, 1),
    func("rtrim", _rtrim, 1),
    func("reverse", _reverse, 1),
    func("strlen", _strlen, 1),
    func("bytesize", _bytesize, 1),
    func("substr", _substr, 2, 3),
    func("split", _split, 2, 3),
    func("tokens", _tokens, 2, 3),
    func("concat", _concat, 1, None),
    func("pad", _pad, 2, 4),
    func("replace", _replace, 3, 4),
    func("regex_match", _regex_match, 2),
    func("regex_replace", _regex_replace, 3),
    func("regex_extract", _regex_extract, 2),
    func("ascii", _ascii, 1),
    func("find", _find, 2, 3),
    func("join_to_string", _join_to_string, 1, 2),
    func("unescape", _unescape, 1),
]
