"""The overlay the admin API writes (`<data_dir>/cluster.hocon`, as EMQX's), read back after the conf file."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import orjson
from pyhocon import ConfigFactory

from engine.config.loader import OVERLAY_NAME, ConfigError, _plain


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
    try:
        tree = _plain(ConfigFactory.parse_string(text))
    except Exception as exc:
        raise ConfigError([f"{label}: HOCON syntax error: {str(exc).splitlines()[0]}"]) from None
    return tree


def write_overlay(data_dir: str | Path, tree: dict[str, Any]) -> None:
    """Atomically: JSON is valid HOCON, and keeps every value exactly."""
    path = overlay_file(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = b"# Written by the ocpp-gateway admin API; loaded after the conf file.\n" + orjson.dumps(
        tree, option=orjson.OPT_INDENT_2, default=_plain_value)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".cluster.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text)
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


def _plain_value(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return str(value)
