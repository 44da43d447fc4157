"""Where a config comes from: the HOCON file (with its includes), the admin API's overlay and the
`OCPPGW_...` environment, laid over each other as one plain tree, with where each value came from."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyhocon import ConfigFactory, ConfigTree
from pyhocon.config_tree import NoneValue
from pyhocon.exceptions import ConfigException
from pyparsing import ParseBaseException

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
        if value is None:  # null in the overlay removes the key (a listener the API deleted)
            base.pop(key, None)
            origins[here] = label
            continue
        if isinstance(value, dict) and not isinstance(base.get(key), dict) and here not in _REPLACED_BY_OVERLAY:
            base[key] = {}  # merged into an empty object, so the nulls inside remove nothing and are gone
            origins[here] = label
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
