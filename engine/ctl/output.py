"""How ctl prints: readable tables and `key: value` lines."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson


def _out(text: str = "") -> None:
    print(text)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return str(value)


def _table(rows: Iterable[dict[str, Any]], columns: list[tuple[str, Callable[[dict[str, Any]], Any]]]) -> None:
    cells = [[header for header, _ in columns]]
    cells += [[_cell(get(row)) for _, get in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for line in cells:
        _out("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def _key_values(pairs: Iterable[tuple[str, Any]], indent: str = "") -> None:
    pairs = list(pairs)
    width = max((len(k) for k, _ in pairs), default=0) + 1
    for key, value in pairs:
        _out(f"{indent}{(key + ':').ljust(width)} {_cell(value)}".rstrip())


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
