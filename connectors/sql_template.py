"""INSERT templates: `${var}` becomes a bound parameter, never text spliced into SQL.

`INSERT INTO t (a, b) VALUES (${clientid}, ${payload.x})` turns into
`... VALUES (?, ?)` (SQLite) or `... VALUES (%s, %s)` (PostgreSQL, through psycopg) with the
values taken from each rule output. A placeholder may stand quoted
(`'${clientid}'`, as EMQX users often write it): the quotes go with it. A
placeholder inside a longer string literal cannot be a parameter and is
refused. For a batch, the VALUES tuple is repeated (one multi-row INSERT),
keeping whatever follows it (`ON CONFLICT ...`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import orjson

from engine.template import lookup
from engine.undefined import UNDEFINED

Style = Literal["qmark", "format"]


class SqlTemplateError(ValueError):
    pass


class SqlTemplate:
    def __init__(self, sql: str, style: Style) -> None:
        self.sql = sql
        self.style = style
        self.pieces: list[str] = []  # text between parameters
        self.params: list[tuple[str, ...]] = []
        self._split(sql)
        if not self.params:
            raise SqlTemplateError("the SQL has no ${...} placeholders: every row would be the same")
        self._values_span = self._find_values()
        self._statements: dict[int, str] = {}

    def _split(self, sql: str) -> None:
        text: list[str] = []
        i, n = 0, len(sql)
        while i < n:
            ch = sql[i]
            if ch == "'":
                end = _string_end(sql, i)
                literal = sql[i : end + 1]
                inner = literal[1:-1]
                if inner.startswith("${") and inner.endswith("}") and inner.count("${") == 1:
                    self._param(text, inner[2:-1])
                elif "${" in inner:
                    raise SqlTemplateError(f"a placeholder must be a whole value, not part of the string {literal}")
                else:
                    text.append(literal)
                i = end + 1
            elif sql.startswith("${", i):
                end = sql.find("}", i)
                if end < 0:
                    raise SqlTemplateError(f"unclosed placeholder at position {i + 1}")
                self._param(text, sql[i + 2 : end])
                i = end + 1
            else:
                text.append(ch)
                i += 1
        self.pieces.append("".join(text))

    def _param(self, text: list[str], name: str) -> None:
        name = name.strip()
        if not name:
            raise SqlTemplateError("empty placeholder ${}")
        self.pieces.append("".join(text))
        text.clear()
        self.params.append(() if name == "." else tuple(name.split(".")))

    def _find_values(self) -> tuple[int, int] | None:
        """(start, end) in the joined statement of the parenthesised tuple after VALUES, if any."""
        joined = self._join(lambda k: "\0")
        upper = joined.upper()
        at = upper.find("VALUES")
        if at < 0 or not upper.lstrip().startswith("INSERT"):
            return None
        start = joined.find("(", at)
        if start < 0:
            return None
        depth = 0
        for pos in range(start, len(joined)):
            if joined[pos] == "(":
                depth += 1
            elif joined[pos] == ")":
                depth -= 1
                if depth == 0:
                    return start, pos + 1
        return None

    def _join(self, mark: Callable[[int], str]) -> str:
        out = [self.pieces[0]]
        for k in range(len(self.params)):
            out.append(mark(k))
            out.append(self.pieces[k + 1])
        return "".join(out)

    def statement(self, rows: int = 1) -> str:
        """The SQL for `rows` outputs: one multi-row INSERT when the shape allows it."""
        cached = self._statements.get(rows)
        if cached is not None:
            return cached
        joined = self._join(lambda k: "\0")
        if rows > 1 and self._values_span:
            start, end = self._values_span
            joined = joined[:start] + ", ".join([joined[start:end]] * rows) + joined[end:]
        parts = joined.split("\0")
        if self.style == "format":
            parts = [p.replace("%", "%%") for p in parts]  # a literal % is not a placeholder
        mark = "?" if self.style == "qmark" else "%s"
        sql = parts[0] + "".join(mark + p for p in parts[1:])
        self._statements[rows] = sql
        return sql

    @property
    def multi_row(self) -> bool:
        return self._values_span is not None

    def values(self, output: dict[str, Any]) -> list[Any]:
        return [self._convert(lookup(output, path)) for path in self.params]

    def _convert(self, value: Any) -> Any:
        if value is UNDEFINED or value is None:
            return None
        if self.style == "format":
            # PostgreSQL: send text with no type and let the server cast it to the column's type
            if type(value) is bool:
                return "true" if value else "false"
            if type(value) in (dict, list):
                return orjson.dumps(value).decode()
            return value if type(value) is str else str(value)
        if type(value) is bool:
            return int(value)
        if type(value) in (dict, list):
            return orjson.dumps(value).decode()
        return value


def _string_end(sql: str, start: int) -> int:
    """Index of the quote that closes the string literal opening at `start` ('' escapes a quote)."""
    i = start + 1
    while i < len(sql):
        if sql[i] == "'":
            if i + 1 < len(sql) and sql[i + 1] == "'":
                i += 2
                continue
            return i
        i += 1
    raise SqlTemplateError(f"unclosed string literal at position {start + 1}")
