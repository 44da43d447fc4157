"""User-supplied regular expressions, on RE2: matching takes time linear in the text.

Python's `re` (like PCRE, which EMQX uses) backtracks: `^([a-zA-Z0-9]+)+$`
against 27 letters and a `!` takes seconds, doubling with each letter, and a
charge point chooses the text. RE2 (google-re2) never backtracks. It takes
PCRE's syntax except the features that need backtracking: backreferences
(`\\1`, `(?P=name)`), lookahead and lookbehind (`(?=`, `(?!`, `(?<=`, `(?<!`),
possessive and atomic groups, `\\Z`; a pattern using one is refused with an
error that names it (counted as `regex` in rules.limits), never run on
another engine. RE2 also refuses patterns whose compiled program would be
over `MAX_PROGRAM_MEMORY` (`a{1000}{1000}`) and repetition counts over 1000.
`\\d`, `\\w`, `\\s` are ASCII classes, as in EMQX's PCRE without the unicode
option.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import re2

from rules.functions_base import ArgError, LimitError, describe

MAX_PROGRAM_MEMORY = 8 * 1024 * 1024  # RE2's own default: bytes for one compiled pattern

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would write every bad pattern to stderr (a log flood)
_OPTIONS.max_mem = MAX_PROGRAM_MEMORY

# what RE2 says → what the rule author wrote
_UNSUPPORTED = (
    ("invalid perl operator: (?=", "lookahead (?=...)"),
    ("invalid perl operator: (?!", "negative lookahead (?!...)"),
    ("invalid perl operator: (?<=", "lookbehind (?<=...)"),
    ("invalid perl operator: (?<!", "negative lookbehind (?<!...)"),
    ("invalid perl operator: (?>", "atomic groups (?>...)"),
        ("invalid perl operator: (?P>", "recursion (?P>name)"),
    ("invalid perl operator: (?R", "recursion (?R)"),
    ("bad repetition operator: ++", "possessive quantifiers (++)"),
    ("bad repetition operator: *+", "possessive quantifiers (*+)"),
    ("bad repetition operator: ?+", "possessive quantifiers (?+)"),
)


class _Refused(Exception):
    pass


def _message(error: Exception) -> str:
    raw = error.args[0] if error.args else ""
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


@lru_cache(maxsize=512)
def _compile(pattern: str) -> Any:
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as e:
        raise _Refused(_message(e)) from None


def compile_pattern(pattern: str) -> Any:
    """The compiled pattern (cached). A pattern RE2 does not take for want of backtracking, or
    as too large, raises a `LimitError` saying so; a malformed one an `ArgError`."""
    try:
        return _compile(pattern)
    except _Refused as e:
        reason = str(e)
    feature = _unsupported(pattern, reason)
    if feature is None:
        raise ArgError(f"invalid regular expression {describe(pattern)}: {reason}")
    raise LimitError("regex", f"invalid regular expression {describe(pattern)}: {feature}")


def _unsupported(pattern: str, reason: str) -> str | None:
    for said, feature in _UNSUPPORTED:
        if reason.startswith(said):
            return f"{feature}: not supported (RE2 runs in linear time and has no backtracking)"
    if reason.startswith("invalid perl operator: (?P") and "(?P=" in pattern:
        return "named backreferences (?P=name) are not supported (RE2 has no backtracking)"
    if reason.startswith("invalid escape sequence: \\") and reason[-1:].isdigit():
        return f"backreferences ({reason.split(': ', 1)[1]}) are not supported (RE2 has no backtracking)"
    if reason == "invalid escape sequence: \\Z":
        return "\\Z is not supported (RE2 has \\z: the very end of the text)"
    if reason.startswith(("pattern too large", "bad repetition operator: {", "invalid repetition size")):
        return f"the pattern is too large for RE2 ({reason}; repetition counts go up to 1000)"
    return None
