"""HOCON files and environment overrides → validated `Settings`.

Loading is two steps: `read_sources` parses the file (with its includes) and
lays the `OCPPGW_...` environment overrides over it as a plain tree; `build`
walks that tree against the dataclasses of `schema` and collects every
problem, each naming the key path, the value and where it came from. Nothing
starts until the whole config is clean.
"""

from __future__ import annotations

import copy
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

from pyhocon import ConfigFactory, ConfigTree
from pyhocon.config_tree import NoneValue
from pyhocon.exceptions import ConfigException
from pyparsing import ParseBaseException

from engine.config.background import in_background, stop_background_loader  # noqa: F401 (the node's)
from engine.config.checks import check_settings
from engine.config.schema import REQUIRED, NoEffect, Range, Settings
from engine.config.types import PARSED_TYPES, Bind, CommaSeparated, ConfigValueError, Duration, Size
from engine.errors import ErrorList

ENV_PREFIX = "OCPPGW_"
DEFAULT_CONFIG_FILE = Path("conf/gateway.conf")


class ConfigError(ErrorList):
    """The config cannot be used; `errors` holds one line per problem."""


class EnvText(str):
    """A value from an environment variable: text, parsed by the type it is meant for."""


OVERLAY_NAME = "cluster.hocon"
# maps an overlay replaces whole (so what the API deleted stays deleted), instead of merging into
_REPLACED_BY_OVERLAY = {("rule_engine", "rules")}


@dataclasses.dataclass
class Sources:
    tree: dict[str, Any]
    file: str  # shown in errors for keys that came from the file
    origins: dict[tuple[str, ...], str]  # key path → where it came from, when not the file

    def origin(self, path: tuple[str, ...]) -> str:
        for length in range(len(path), 0, -1):
            label = self.origins.get(path[:length])
            if label:
                return label
        return self.file


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None,
                  overlay: bool | dict[str, Any] | str = True) -> Settings:
    """Read the file, the overlay the admin API wrote (`<data_dir>/cluster.hocon`, unless
    overlay=False) and the environment, in that order; validate; raise `ConfigError` listing
    every problem. `overlay` may also be the overlay's tree or its text (to check one before writing it)."""
    sources = read_sources(path, os.environ if env is None else env, overlay)
    return build(sources)


async def load_settings_in_background(path: str | Path | None, overlay: bool | dict[str, Any] | str = True) -> Settings:
    """`load_settings` for a running node (see `in_background`)."""
    return await in_background(load_settings, path, dict(os.environ), overlay)


def overlay_path(tree: dict[str, Any], env: Mapping[str, str]) -> Path:
    """Where the overlay lives: node.data_dir as the file and environment say."""
    data_dir = env.get(f"{ENV_PREFIX}NODE__DATA_DIR")
    if data_dir is None:
        node = tree.get("node")
        data_dir = node.get("data_dir") if isinstance(node, dict) and isinstance(node.get("data_dir"), str) else "data"
    return Path(data_dir) / OVERLAY_NAME


def _merge(base: dict[str, Any], over: dict[str, Any], path: tuple[str, ...], origins: dict[tuple[str, ...], str], label: str) -> None:
    for key, value in over.items():
        here = path + (key,)
        if isinstance(value, dict) and isinstance(base.get(key), dict) and here not in _REPLACED_BY_OVERLAY:
            _merge(base[key], value, here, origins, label)
        else:
            base[key] = value
            origins[here] = label


def read_sources(path: str | Path | None, env: Mapping[str, str], overlay: bool | dict[str, Any] | str = False) -> Sources:
    tree, file_label = _read_file(path)
    origins: dict[tuple[str, ...], str] = {}
    if isinstance(overlay, str):  # the overlay's text, exactly as it is about to be written
        _merge(tree, _parse_text(overlay, "the admin API's config"), (), origins, "the admin API's config")
    elif isinstance(overlay, dict):
        _merge(tree, copy.deepcopy(overlay), (), origins, "the admin API's config")
    elif overlay:
        over_path = overlay_path(tree, env)
        if over_path.is_file():
            over_tree, over_label = _read_file(over_path)
            _merge(tree, over_tree, (), origins, over_label)
    errors: list[str] = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        if not all(keys):
            errors.append(f"environment {name}: cannot be read as a key path (use __ between keys)")
            continue
        problem = _set_path(tree, keys, EnvText(env[name]))
        if problem:
            errors.append(f"environment {name}: {problem}")
        origins[keys] = f"environment {name}"
    if errors:
        raise ConfigError(errors)
    return Sources(tree, file_label, origins)


def _read_file(path: str | Path | None) -> tuple[dict[str, Any], str]:
    if path is None:
        if not DEFAULT_CONFIG_FILE.is_file():
            return {}, "(defaults)"
        path = DEFAULT_CONFIG_FILE
    path = Path(path)
    label = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{label}: cannot read the config file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{label}: the config file is not UTF-8 text"]) from None
    return _parse_text(text, label, basedir=str(path.parent.resolve())), label


def _parse_text(text: str, label: str, basedir: str | None = None) -> dict[str, Any]:
    """A trusted file's text (its includes and `${ENV}` substitutions run) → a plain tree."""
    try:
        parsed = ConfigFactory.parse_string(text, basedir=basedir)
    except ParseBaseException as exc:
        raise ConfigError([syntax_error(label, exc)]) from None
    except ConfigException as exc:
        raise ConfigError([f"{label}: {exc}"]) from None
    except OSError as exc:
        raise ConfigError([f"{label}: include failed: {exc}"]) from None
    plain = _plain(parsed)
    if not isinstance(plain, dict):
        raise ConfigError([f"{label}: expected an object {{ ... }} at the top, not a list"])
    return plain


def syntax_error(label: str, exc: ParseBaseException) -> str:
    # pyparsing's message spells out the whole grammar it expected: keep the start
    message = exc.msg if len(exc.msg) <= 120 else exc.msg[:117] + "..."
    return f"{label}:{exc.lineno}:{exc.col}: HOCON syntax error: {message}"


def _plain(value: Any) -> Any:
    if isinstance(value, ConfigTree):
        return {_plain_key(str(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, NoneValue):  # pyhocon's null inside a list
        return None
    return value


_KEEPS_QUOTES = frozenset('$}[]:=+#`^?!@*&.')  # pyhocon's ConfigTree.parse_key special characters


def _plain_key(key: str) -> str:
    """pyhocon keeps the quotes of a quoted key holding one of its special characters (`"a.b"`
    stays `'"a.b"'`, so its own dotted lookups work); the key itself is what is between them."""
    if len(key) >= 2 and key[0] == '"' and key[-1] == '"' and any(c in _KEEPS_QUOTES for c in key):
        return key[1:-1]
    return key


def _set_path(tree: dict[str, Any], keys: tuple[str, ...], value: Any) -> str | None:
    node = tree
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None or isinstance(child, EnvText):
            child = node[key] = {}
        elif not isinstance(child, dict):
            return f"{'.'.join(keys[: depth + 1])} is a value, not an object"
        node = child
    node[keys[-1]] = value
    return None


# --- building typed settings ------------------------------------------------------


def build(sources: Sources, cls: type = Settings) -> Any:
    builder = _Builder(sources)
    settings = builder.convert(cls, sources.tree, ())
    if not builder.errors and cls is Settings:
        check_settings(settings, builder.fail)
    if builder.errors:
        raise ConfigError(builder.errors)
    for line in builder.warnings:
        logging.getLogger("ocppgw.config").warning("%s", line)
    return settings


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


class _Builder:
    def __init__(self, sources: Sources):
        self.sources = sources
        self.errors: list[str] = []
        self.warnings: list[str] = []  # keys accepted with no effect (schema.NoEffect), one line each

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
        for key in value:
            if key not in hints:
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
        return cls(**kwargs)

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
