"""HOCON that arrives over the admin API: no includes, no substitutions, nothing read from the host.

A config file is the operator's own: its `include`s and `${ENV}` substitutions
run. A request body is not: an include would read a file (and echo it in an
error) or fetch a URL from inside the gateway, and a substitution would copy
the process environment into the config anyone with API access can read back.
So a body with an unquoted `include` is refused before pyhocon sees it (pyhocon
runs includes while it parses), and it is parsed with substitutions left
unresolved and refused if there are any: the environment is never consulted.
"""

from __future__ import annotations

import re
from typing import Any

from pyhocon import ConfigFactory, ConfigTree
from pyhocon.config_tree import ConfigSubstitution, ConfigValues
from pyhocon.exceptions import ConfigException
from pyparsing import ParseBaseException

from engine.config.loader import ConfigError, _plain, syntax_error

# a string as pyhocon reads it (one line); anything this does not cover counts as unquoted text, so
# the scan below errs towards refusing
_QUOTED = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_ESCAPE = re.compile(r"\\.", re.DOTALL)  # pyhocon's unquoted text may escape a quote
_IDENT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$")  # pyparsing's keyword chars
_WORD = "INCLUDE"


def find_include(text: str) -> int | None:
    """Where an unquoted `include` keyword may start (pyparsing matches it caselessly, as a keyword:
    no identifier character either side), or None. Quoted strings are blanked first."""
    # same length throughout, so a position is also one in `text`; an escaped quote or backslash is
    # blanked (it opens no string), any other escaped character is kept (`\include` is still refused)
    blanked = _ESCAPE.sub(lambda m: "  " if m.group()[1] in '"\\' else " " + m.group()[1], text)
    unquoted = _QUOTED.sub(lambda m: '"' + " " * (len(m.group()) - 2) + '"', blanked)
    upper_first = {"I", "i", "ı", "İ"}
    n = len(_WORD)
    for i, ch in enumerate(unquoted):
        if ch not in upper_first and ch.upper() != "I":
            continue
        if unquoted[i : i + n].upper() != _WORD:
            continue
        before = unquoted[i - 1] if i else " "
        after = unquoted[i + n] if i + n < len(unquoted) else " "
        if before not in _IDENT and after not in _IDENT:
            return i
    return None


def parse_untrusted(text: str, label: str = "the request body") -> dict[str, Any]:
    """The body as a plain tree, or ConfigError naming what is refused (never the content of anything
    but the body itself)."""
    at = find_include(text)
    if at is not None:
        line = text.count("\n", 0, at) + 1
        raise ConfigError([f"{label}:{line}: include is not accepted over the API (send the settings themselves)"])
    try:
        parsed = ConfigFactory.parse_string(text, resolve=False)
    except ParseBaseException as exc:
        raise ConfigError([syntax_error(label, exc)]) from None
    except RecursionError:
        raise ConfigError([f"{label}: nested too deeply"]) from None
    except (ConfigException, ValueError) as exc:
        raise ConfigError([f"{label}: HOCON error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"[:300]]) from None
    if not isinstance(parsed, ConfigTree):
        raise ConfigError([f"{label}: expected an object {{ ... }} at the top, not a list"])
    found = _substitutions(parsed)
    if found:
        names = ", ".join(sorted({"${" + ("?" if s.optional else "") + s.variable + "}" for s in found}))
        raise ConfigError([f"{label}: substitutions are not accepted over the API ({names}): send the value itself"])
    return _plain(parsed)


def _substitutions(value: Any) -> list[ConfigSubstitution]:
    found: list[ConfigSubstitution] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, ConfigSubstitution):
            found.append(item)
        elif isinstance(item, ConfigValues):
            stack.extend(item.tokens)
        elif isinstance(item, ConfigTree):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found
