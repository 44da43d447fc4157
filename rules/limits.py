"""The limits rule functions run under, and a count of what each refused.

Rule functions are plain functions called from compiled rule code, with no
node at hand, so the limits in force are process-wide: the node sets them
from `rule_engine` at start and at every reload (`configure`), and until
then the defaults below apply (also for `ocpp-gateway rule-test`).

`REFUSED` counts refusals by limit name since the process started
(`ocppgw_rule_function_limits_total{limit=...}`):

- `jq_timeout`: a jq program stopped after its timeout,
- `jq_memory`: a jq program ran out of the child's address space,
- `string_size`: a function would have built a string over `max_string_size`,
- `regex`: a pattern the linear-time engine (RE2) does not take, or a
  regex_replace with more matches than `regex_max_matches`,
- `sql_depth`: rule SQL nested deeper than `MAX_SQL_DEPTH` (refused at compile).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LIMIT_NAMES = ("jq_timeout", "jq_memory", "string_size", "regex", "sql_depth")

# Nesting levels of one rule expression (parentheses, calls, CASE branches, operators each
# count one). A structural bound, not a policy: past it sqlglot's parser and the compiler
# recurse too deep for Python's stack, so it is fixed here rather than configured.
MAX_SQL_DEPTH = 200


@dataclass(frozen=True)
class FunctionLimits:
    jq_timeout: float = 0.2  # seconds: jq() without its 3rd argument
    jq_max_memory: int = 256 * 1024 * 1024  # bytes of address space for the jq child; 0: none
    max_string_size: int = 8 * 1024 * 1024  # characters; 0: no cap
    regex_max_matches: int = 10_000  # matches one regex_replace may replace; 0: no cap


_current = FunctionLimits()
REFUSED: dict[str, int] = dict.fromkeys(LIMIT_NAMES, 0)


def current() -> FunctionLimits:
    return _current


def configure(settings: Any) -> None:
    """Take the limits from a `RuleEngineSettings` (engine.config.schema)."""
    global _current
    _current = FunctionLimits(
        jq_timeout=max(0.001, float(settings.jq_function_default_timeout)),
        jq_max_memory=int(settings.jq_function_max_memory),
        max_string_size=int(settings.max_string_size),
        regex_max_matches=int(settings.regex_max_matches),
    )


def count(limit: str) -> None:
    REFUSED[limit] = REFUSED.get(limit, 0) + 1
