"""The overlay the admin API writes (`<data_dir>/cluster.hocon`, as EMQX's), read back after the conf file.

The overlay is written as HOCON that reads back to the very values the API
accepted: every key quoted (a rule id `a.b` is one key, not two), durations
pyhocon turned into a timedelta written back with their unit, strings quoted
and escaped the way pyhocon unescapes them. What the API applies is built from
that text itself (parsed again in the worker), so what runs now is what the
next start reads.
"""

from __future__ import annotations

import datetime
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from pyhocon import ConfigFactory

from engine.config.loader import OVERLAY_NAME, ConfigError, _parse_text, _plain, load_settings_with_warnings
from engine.config.dump import MASKED, SECRET_KEYS
from engine.config.schema import Settings
from engine.config.untrusted import parse_untrusted

HEADER = "# Written by the ocpp-gateway admin API; loaded after the conf file.\n"


def overlay_file(data_dir: str | Path) -> Path:
    return Path(data_dir) / OVERLAY_NAME


def read_overlay(data_dir: str | Path) -> dict[str, Any]:
    path = overlay_file(data_dir)
    if not path.is_file():
        return {}
    try:
        return _plain(ConfigFactory.parse_file(str(path)))
    except Exception as exc:
        raise ConfigError([f"{path}: {exc}"]) from None


def parse_hocon(text: str, label: str = "the request body") -> dict[str, Any]:
    """HOCON from a request: no includes, no substitutions (see `engine.config.untrusted`)."""
    return parse_untrusted(text, label)


# --- writing -----------------------------------------------------------------------------------


class OverlayValueError(ValueError):
    """A value the overlay cannot hold so that it reads back the same."""


def render_overlay(tree: dict[str, Any]) -> str:
    lines = [HEADER.rstrip("\n")]
    _object(tree, 0, lines)
    return "\n".join(lines) + "\n"


def storable_key(key: str) -> bool:
    """pyhocon reads a quoted key raw (no escapes) and trims it: a key that needs neither is stored."""
    return bool(key) and key == key.strip() and '"' not in key and "\\" not in key and key.isprintable()


def _key(key: Any) -> str:
    key = str(key)
    if not storable_key(key):
        raise OverlayValueError(f"the key {key!r} cannot be stored: a key is not empty and has no quotes, "
                                "backslashes, control characters or spaces at either end")
    return f'"{key}"'


def _object(obj: dict[str, Any], depth: int, lines: list[str]) -> None:
    pad = "  " * depth
    for key, value in obj.items():
        if isinstance(value, dict):
            lines.append(f"{pad}{_key(key)} {{")
            _object(value, depth + 1, lines)
            lines.append(f"{pad}}}")
        else:
            lines.append(f"{pad}{_key(key)} = {_value(value, depth + 1)}")


def _value(value: Any, depth: int) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise OverlayValueError(f"{value} is not a number HOCON can hold")
        return repr(value)
    if isinstance(value, datetime.timedelta):
        return _string(duration_text(value))
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, str) and not v for v in value):
            raise OverlayValueError('an empty string inside a list cannot be stored (pyhocon reads [""] as [])')
        return "[" + ", ".join(_value(v, depth) for v in value) + "]"
    if isinstance(value, dict):
        inner: list[str] = []
        _object(value, depth, inner)
        return "{\n" + "\n".join(inner) + "\n" + "  " * (depth - 1) + "}"
    raise OverlayValueError(f"a {type(value).__name__} cannot be stored")


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _string(text: str) -> str:
    """A quoted HOCON string pyhocon reads back as `text` (it knows \\\\ \\" \\n \\r \\t, not \\u)."""
    return '"' + "".join(_ESCAPES.get(ch, ch) for ch in text) + '"'


def duration_text(value: datetime.timedelta) -> str:
    """`31s`, `0.5s`, `0.000010s`: exact to the microsecond (pyhocon's timedelta), and the same float
    once `Duration` parses it as this timedelta's `total_seconds()`."""
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), 1_000_000)
    return f"{sign}{whole}" + (f".{frac:06d}".rstrip("0") if frac else "") + "s"


def write_overlay(data_dir: str | Path, tree: dict[str, Any]) -> None:
    write_overlay_text(data_dir, render_overlay(tree))


def write_overlay_text(data_dir: str | Path, text: str) -> None:
    """Atomically: the old overlay or the new one, never half of one."""
    path = overlay_file(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".cluster.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# --- what the worker process does for the API (module-level: pickled by name) -------------------


def settings_for_overlay(config_path: str | None, env: dict[str, str],
                         tree: dict[str, Any]) -> tuple[Settings, str, list[str]]:
    """The settings the conf file + the overlay's text (as the next start reads it) give, that text,
    and the load's warnings (for the node to log: this runs in the worker)."""
    label = "the admin API's config"
    try:
        text = render_overlay(tree)
        if _parse_text(text, label) != _as_written(tree):
            raise ConfigError([f"{label}: cannot be stored so that it reads back the same "
                               "(a key or value HOCON cannot spell?)"])
        loaded = load_settings_with_warnings(config_path, env, overlay=text)
        return loaded.settings, text, loaded.warnings
    except OverlayValueError as exc:
        raise ConfigError([f"{label}: {exc}"]) from None
    except RecursionError:
        raise ConfigError([f"{label}: nested too deeply"]) from None


def _as_written(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _as_written(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_written(v) for v in value]
    if isinstance(value, datetime.timedelta):
        return duration_text(value)
    return value


def settings_for_upload(config_path: str | None, env: dict[str, str], data_dir: str, body: str,
                        mode: str, secrets: dict[str, Any] | None = None) -> tuple[Settings, str, list[str]]:
    """A `PUT /configs` body (untrusted HOCON) merged into or replacing the stored overlay. A secret
    sent back as printed (`"******"`, as `GET /configs` shows it) keeps its current value (`secrets`,
    from `dump.secrets_of`), so the effective config round-trips without changing a password."""
    tree = parse_untrusted(body)
    restore_masked(tree, secrets or {}, ())
    current = read_overlay(data_dir) if mode == "merge" else {}
    return settings_for_overlay(config_path, env, merge(current, tree))


def restore_masked(tree: dict[str, Any], secrets: dict[str, Any], path: tuple[str, ...]) -> None:
    for key, value in tree.items():
        if isinstance(value, dict):
            inner = secrets.get(key)
            restore_masked(value, inner if isinstance(inner, dict) else {}, path + (key,))
        elif key in SECRET_KEYS and value == MASKED:
            known = secrets.get(key)
            if not isinstance(known, str):
                raise ConfigError([f"the admin API's config: {'.'.join(path + (key,))} = \"{MASKED}\": a masked "
                                   "secret stands for the current value, and there is none: send the value itself"])
            tree[key] = known
