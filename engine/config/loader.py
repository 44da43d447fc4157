"""HOCON files and environment overrides → validated `Settings`.

Loading is two steps: `read_sources` (engine/config/sources.py) parses the file (with its includes)
and lays the overlay and the `OCPPGW_...` environment overrides over it as a plain tree; `build`
walks that tree against the dataclasses of `schema` and collects every
problem, each naming the key path, the value and where it came from. Nothing
starts until the whole config is clean.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import json
import logging
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyhocon import ConfigFactory
from pyhocon.exceptions import ConfigException
from pyparsing import ParseBaseException

from engine.config.background import in_background, stop_background_loader  # noqa: F401 (the node's)
from engine.config.checks import check_settings
from engine.config.schema import REQUIRED, NoEffect, Range, Settings
from engine.config.sources import (  # noqa: F401 (re-exported: the loader's public names)
    DEFAULT_CONFIG_FILE,
    ENV_PREFIX,
    OVERLAY_NAME,
    ConfigError,
    EnvText,
    Sources,
    _parse_text,
    _plain,
    overlay_path,
    read_sources,
    syntax_error,
)
from engine.config.types import PARSED_TYPES, Bind, CommaSeparated, ConfigValueError, Duration, Size


@dataclasses.dataclass(frozen=True)
class Loaded:
    """Settings and the warnings their load made (keys with no effect here, deprecated shapes), one
    line each, for the caller to show once: check-config prints them, `run` and a reload log them."""

    settings: Settings
    warnings: list[str]


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None,
                  overlay: bool | dict[str, Any] | str = True) -> Settings:
    """Read the file, the overlay the admin API wrote (`<data_dir>/cluster.hocon`, unless
    overlay=False) and the environment, in that order; validate; raise `ConfigError` listing
    every problem. `overlay` may also be the overlay's tree or its text (to check one before writing it).
    The warnings are dropped: use `load_settings_with_warnings` where an operator should see them."""
    return load_settings_with_warnings(path, env, overlay).settings


def load_settings_with_warnings(path: str | Path | None = None, env: Mapping[str, str] | None = None,
                                overlay: bool | dict[str, Any] | str = True) -> Loaded:
    """`load_settings`, with the load's warnings."""
    sources = read_sources(path, os.environ if env is None else env, overlay)
    settings, warnings = build_with_warnings(sources)
    return Loaded(settings, warnings)


def log_warnings(warnings: list[str]) -> None:
    """Where a node shows a load's warnings: one log line each on "ocppgw.config"."""
    for line in warnings:
        logging.getLogger("ocppgw.config").warning("%s", line)


async def load_settings_in_background(path: str | Path | None, overlay: bool | dict[str, Any] | str = True) -> Settings:
    """`load_settings` for a running node (see `in_background`); the load's warnings come back
    from the worker and are logged here, on the node."""
    loaded = await in_background(load_settings_with_warnings, path, dict(os.environ), overlay)
    log_warnings(loaded.warnings)
    return loaded.settings


# --- building typed settings ------------------------------------------------------


def build(sources: Sources, cls: type = Settings) -> Any:
    """The typed settings (warnings dropped: see `build_with_warnings`)."""
    return build_with_warnings(sources, cls)[0]


def build_with_warnings(sources: Sources, cls: type = Settings) -> tuple[Any, list[str]]:
    builder = _Builder(sources)
    settings = builder.convert(cls, sources.tree, ())
    if not builder.errors and cls is Settings:
        check_settings(settings, builder.fail)
    if builder.errors:
        raise ConfigError(builder.errors)
    return settings, list(dict.fromkeys(builder.warnings))  # each line once, in order


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls, include_extras=True)
    return _HINTS[cls]


def show_value(value: Any) -> str:
    if isinstance(value, datetime.timedelta):
        return str(Duration(value.total_seconds()))
    if isinstance(value, (dict, list)):
        text = json.dumps(value, default=str)
        return text if len(text) <= 60 else text[:57] + "..."
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value) if value is None or isinstance(value, bool) else str(value)


def _key(path: tuple[str, ...]) -> str:
    return ".".join(path) if path else "(root)"


def _has_required(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp) and any(f.default is REQUIRED for f in dataclasses.fields(tp))


class _Builder:
    def __init__(self, sources: Sources):
        self.sources = sources
        self.errors: list[str] = []
        # keys accepted with no effect (schema.NoEffect) and deprecated shapes, one line each
        self.warnings: list[str] = []

    def fail(self, path: tuple[str, ...], value: Any, problem: str) -> None:
        self.errors.append(
            f"{self.sources.origin(path)}: {_key(path)} = {show_value(value)}: {problem}"
        )

    def convert(self, tp: Any, value: Any, path: tuple[str, ...]) -> Any:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            base, *meta = typing.get_args(tp)
            for item in meta:
                if isinstance(item, NoEffect):
                    why = f": {item.why}" if item.why else ""
                    self.warnings.append(f"{self.sources.origin(path)}: {_key(path)}: accepted for EMQX "
                                         f"compatibility, has no effect here{why}")
            for item in meta:
                if isinstance(item, CommaSeparated):
                    value = item.split(value)  # EMQX's "a, b" form of a list
            before = len(self.errors)
            result = self.convert(base, value, path)
            if len(self.errors) > before:
                return result  # the type was already wrong: no range error on top
            for item in meta:
                if isinstance(item, Range) and isinstance(result, (int, float)):
                    if (item.low is not None and result < item.low) or (
                        item.high is not None and result > item.high
                    ):
                        low = "" if item.low is None else f"{item.low:g}"
                        high = "" if item.high is None else f"{item.high:g}"
                        self.fail(path, value, f"out of range {low}..{high}")
            return result
        if dataclasses.is_dataclass(tp):
            return self.convert_object(tp, value, path)
        if origin is typing.Literal:
            choices = typing.get_args(tp)
            if value in choices and isinstance(value, str):
                return value
            self.fail(path, value, "expected one of " + ", ".join(choices))
            return choices[0]
        if origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            if value is None or (isinstance(value, EnvText) and value == "null"):
                return None
            return self.convert(members[0], value, path)
        if origin is list:
            return self.convert_list(typing.get_args(tp)[0], value, path)
        if origin is dict:
            key_tp, value_tp = typing.get_args(tp)
            return self.convert_map(key_tp, value_tp, value, path)
        return self.convert_scalar(tp, value, path)

    def convert_object(self, cls: Any, value: Any, path: tuple[str, ...]) -> Any:
        value = self.structured(value, path, dict)
        if not isinstance(value, dict):
            self.fail(path, value, "expected an object { ... }")
            value = {}
        hints = _hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        moved = getattr(cls, "MOVED", None)
        if moved:
            value = self.move_deprecated(moved, value, path)
        for key in value:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.fail(path + (key,), value[key], f"unknown key{hint}")
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in value:
                kwargs[f.name] = self.convert(hints[f.name], value[f.name], path + (f.name,))
            elif f.default is REQUIRED:
                self.errors.append(f"{self.sources.origin(path)}: {_key(path + (f.name,))}: missing, required")
                kwargs[f.name] = ""
            elif _has_required(hints[f.name]):  # an absent block with a required key (parameters.sql)
                kwargs[f.name] = self.convert(hints[f.name], {}, path + (f.name,))
        return cls(**kwargs)

    def move_deprecated(self, moved: dict[str, tuple[str, ...]], value: dict[str, Any],
                        path: tuple[str, ...]) -> dict[str, Any]:
        """An old spelling (`actions.pgsql.a.sql`) moved to where EMQX 5 has it
        (`actions.pgsql.a.parameters.sql`), with one warning naming both."""
        for old, new in moved.items():
            if old not in value:
                continue
            value = dict(value)
            item = value.pop(old)
            where = self.sources.origin(path + (old,))
            node = value
            for key in new[:-1]:
                child = node.get(key)
                if child is None:
                    child = {}
                elif not isinstance(child, dict):
                    break  # the new place is not an object: converting it reports that
                node[key] = child = dict(child)
                node = child
            else:
                if new[-1] in node:
                    self.errors.append(f"{where}: {_key(path + (old,))}: set twice, here and as "
                                       f"{_key(path + new)}: keep {_key(path + new)} only")
                    continue
                node[new[-1]] = item
                self.warnings.append(f"{where}: {_key(path + (old,))} is deprecated: write it as "
                                     f"{_key(path + new)} (EMQX 5's shape)")
        return value

    def convert_list(self, item_tp: Any, value: Any, path: tuple[str, ...]) -> list[Any]:
        value = self.structured(value, path, list)
        if not isinstance(value, list):
            self.fail(path, value, "expected a list [ ... ]")
            return []
        return [self.convert(item_tp, item, path[:-1] + (f"{path[-1]}[{i}]",)) for i, item in enumerate(value)]

    def convert_map(self, key_tp: Any, value_tp: Any, value: Any, path: tuple[str, ...]) -> dict[str, Any]:
        value = self.structured(value, path, dict)
        if not isinstance(value, dict):
            self.fail(path, value, "expected an object { name = ... }")
            return {}
        allowed = typing.get_args(key_tp) if typing.get_origin(key_tp) is typing.Literal else None
        result = {}
        for key, item in value.items():
            if allowed and key not in allowed:
                self.fail(path + (key,), item, "unknown key, expected one of " + ", ".join(allowed))
                continue
            result[key] = self.convert(value_tp, item, path + (key,))
        return result

    def structured(self, value: Any, path: tuple[str, ...], kind: type) -> Any:
        """An environment value meant for a list or object is HOCON text: parse it."""
        if not isinstance(value, EnvText):
            return value
        try:
            parsed = _plain(ConfigFactory.parse_string(f"v = {value}")).get("v")
        except (ParseBaseException, ConfigException):
            return value
        return parsed if isinstance(parsed, kind) else value

    def convert_scalar(self, tp: Any, value: Any, path: tuple[str, ...]) -> Any:
        env = isinstance(value, EnvText)
        if tp is Any:
            return value
        if tp in (Duration, Size, Bind) or tp in PARSED_TYPES:
            try:
                return tp.parse(value)
            except ConfigValueError as exc:
                self.fail(path, value, str(exc))
                return tp.parse({Duration: "0s", Size: 0, Bind: 1}.get(tp, 0))
        if tp is bool:
            if isinstance(value, bool):
                return value
            if env and value.lower() in ("true", "false"):
                return value.lower() == "true"
            self.fail(path, value, "expected true or false")
            return False
        if tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if env and value.strip().lstrip("-").isdigit():
                return int(value)
            self.fail(path, value, "expected an integer")
            return 0
        if tp is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if env:
                try:
                    return float(value)
                except ValueError:
                    pass
            self.fail(path, value, "expected a number")
            return 0.0
        if tp is str:
            if isinstance(value, str):
                return str(value)
            # `password = 1234` parses as a number in HOCON; it is still text.
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
            self.fail(path, value, "expected a string")
            return ""
        raise TypeError(f"config schema uses an unsupported type {tp!r} at {_key(path)}")
