"""Settings → HOCON text, as `check-config` prints the effective config."""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from typing import Any

from engine.config.schema import NoEffect
from engine.config.types import UNLIMITED_COUNT, Bind, Count, Duration, Size

SECRET_KEYS = frozenset({"password", "default_password", "secret"})
MASKED = "******"  # how a secret is printed; a body sending it back means "the current value"


def secrets_of(settings: Any) -> dict[str, Any]:
    """The secrets of `settings` as a nested tree of their key paths (nothing else), for putting a
    `"******"` sent back in an uploaded config back to the value it stands for."""
    out: dict[str, Any] = {}
    items = ((f.name, getattr(settings, f.name)) for f in dataclasses.fields(settings)) \
        if dataclasses.is_dataclass(settings) else settings.items() if isinstance(settings, dict) else ()
    for name, value in items:
        if name in SECRET_KEYS and isinstance(value, str) and value:
            out[name] = value
        elif dataclasses.is_dataclass(value) or isinstance(value, dict):
            inner = secrets_of(value)
            if inner:
                out[name] = inner
    return out


def dump_hocon(settings: Any, *, show_secrets: bool = False) -> str:
    lines: list[str] = []
    _object_body(_to_plain(settings), 0, lines, show_secrets)
    return "\n".join(lines) + "\n"


@functools.cache
def _effective_fields(cls: type) -> tuple[str, ...]:
    """The fields that do something: a key accepted with no effect (NoEffect) is left out of the
    effective config."""
    hints = typing.get_type_hints(cls, include_extras=True)

    def no_effect(name: str) -> bool:
        tp = hints[name]
        return typing.get_origin(tp) is typing.Annotated and any(
            isinstance(m, NoEffect) for m in typing.get_args(tp)[1:])

    return tuple(f.name for f in dataclasses.fields(cls) if not no_effect(f.name))


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {name: _to_plain(getattr(value, name)) for name in _effective_fields(type(value))}
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_plain(v) for v in value]
    return value


def _key(name: str) -> str:
    plain = name.replace("_", "").replace("-", "").isalnum()
    return name if plain and name else json.dumps(name)


def _scalar(value: Any) -> str:
    if isinstance(value, (Duration, Size, Bind)):
        return json.dumps(str(value))
    if isinstance(value, Count) and value >= UNLIMITED_COUNT:
        return json.dumps(str(value))  # "infinity", as it was written
    if value is None:
        return "null"
    return json.dumps(value, default=str)


def _object_body(obj: dict[str, Any], depth: int, lines: list[str], show_secrets: bool) -> None:
    pad = "  " * depth
    for name, value in obj.items():
        if isinstance(value, dict):
            if not value:
                lines.append(f"{pad}{_key(name)} {{}}")
                continue
            lines.append(f"{pad}{_key(name)} {{")
            _object_body(value, depth + 1, lines, show_secrets)
            lines.append(f"{pad}}}")
        elif name in SECRET_KEYS and value and not show_secrets:
            lines.append(f"{pad}{_key(name)} = {json.dumps(MASKED)}")
        elif isinstance(value, list):
            lines.append(f"{pad}{_key(name)} = [{', '.join(_scalar(v) if not isinstance(v, dict) else json.dumps(v) for v in value)}]")
        else:
            lines.append(f"{pad}{_key(name)} = {_scalar(value)}")
