"""(being written)"""

from __future__ import annotations

from typing import Any


def routes(node: Any) -> list[Any]:
    return []
