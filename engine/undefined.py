"""`UNDEFINED`: a value that is not there (a missing field), distinct from JSON null.

Rules produce it and actions and templates read it, so it lives below both.
"""

from __future__ import annotations

from typing import Any


class Undefined:
    __slots__ = ()

    def __repr__(self) -> str:
        return "undefined"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Any = Undefined()
