"""The OCA JSON schemas, compiled once, and the OCPP error a payload earns.

`SchemaRegistry` loads every message schema of a schema directory at
construction (compiling all three shipped versions takes a few tens of
milliseconds, so there is nothing to gain from compiling lazily, and a broken
file is reported at start rather than on the first message that needs it).
`check` answers `None` for a valid payload, or a `Violation` carrying the
OCPP error code and a description naming the JSON path of the offending value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from importlib import resources
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import jsonschema_rs

Version = Literal["ocpp1.6", "ocpp2.0.1", "ocpp2.1"]
Kind = Literal["request", "response"]

VERSIONS: Final[tuple[Version, ...]] = ("ocpp1.6", "ocpp2.0.1", "ocpp2.1")


def shipped_schema_dir() -> Path:
    """Where the OCA schemas that come with the gateway are. An installed wheel carries them as
    package data, `engine/ocpp/oca_schemas/` (pyproject.toml maps the repository's top-level
    `schemas/` folder there); a source checkout, or an editable install, has them in `schemas/`
    beside `engine/`."""
    packaged = resources.files("engine.ocpp").joinpath("oca_schemas")
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "schemas"


DEFAULT_SCHEMA_DIR: Final = shipped_schema_dir()

# A file without "$schema" gets the draft its version's OCA files use, not
# jsonschema-rs's default (2020-12), which would read the OCA keywords differently.
_DEFAULT_DRAFT: Final = {
    "ocpp1.6": jsonschema_rs.Draft4Validator,
    "ocpp2.0.1": jsonschema_rs.Draft6Validator,
    "ocpp2.1": jsonschema_rs.Draft6Validator,
}

_MAX_DESCRIPTION: Final = 200
_MAX_VALUE: Final = 40
_MAX_OPTIONS: Final = 90
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class SchemaError(Exception):
    """A schema directory or file that cannot be used."""


class UnknownAction(KeyError):
    """No schema for this (version, action, kind)."""

    def __init__(self, version: str, action: str, kind: str) -> None:
        super().__init__(version, action, kind)
        self.version, self.action, self.kind = version, action, kind

    def __str__(self) -> str:  # KeyError's own str() is the repr of its args
        return f"no {self.kind} schema for {self.action!r} in {self.version}"


@dataclass(frozen=True, slots=True)
class Violation:
    code: str
    description: str
    path: str


@dataclass(frozen=True, slots=True)
class _Codes:
    type: str
    occurrence: str
    property: str
    formation: str


# OCPP 1.6 misspells two codes; 2.0.1 fixed the spelling, so a 1.6 charge
# point must get the old one back.
_CODES: Final = {
    "ocpp1.6": _Codes(
        "TypeConstraintViolation",
        "OccurenceConstraintViolation",
        "PropertyConstraintViolation",
        "FormationViolation",
    ),
    "ocpp2.0.1": _Codes(
        "TypeConstraintViolation",
        "OccurrenceConstraintViolation",
        "PropertyConstraintViolation",
        "FormatViolation",
    ),
}
_CODES["ocpp2.1"] = _CODES["ocpp2.0.1"]

_OCCURRENCE: Final = frozenset(
    {"required", "minItems", "maxItems", "minProperties", "maxProperties"}
)
_PROPERTY: Final = frozenset(
    {
        "enum",
        "const",
        "maxLength",
        "minLength",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "format",
        "uniqueItems",
    }
)


def fingerprint(root: Path) -> tuple[tuple[str, int, int], ...]:
    """Name, size and modification time of every schema file under `root`: equal means unchanged."""
    found = []
    for version in VERSIONS:
        for path in sorted((root / version).glob("*.json")) if (root / version).is_dir() else ():
            stat = path.stat()
            found.append((f"{version}/{path.name}", stat.st_size, stat.st_mtime_ns))
    return tuple(found)


class SchemaRegistry:
    def __init__(self, schema_dir: str | Path | None = None) -> None:
        root = DEFAULT_SCHEMA_DIR if schema_dir is None else Path(schema_dir)
        if not root.is_dir():
            raise SchemaError(f"schema directory {str(root)!r} is not an existing directory")
        self.schema_dir = root
        self.fingerprint = fingerprint(root)
        self._validators: dict[tuple[str, str, str], jsonschema_rs.Validator] = {}
        self._actions: set[tuple[str, str]] = set()
        for version in VERSIONS:
            directory = root / version
            if directory.is_dir():
                self._load(version, directory)
        if not self._validators:  # checking on with nothing to check against would pass everything
            raise SchemaError(f"no OCPP schemas in {str(root)!r}: expected {', '.join(v + '/' for v in VERSIONS)} "
                              "(one or more) holding *.json files")

    def _load(self, version: Version, directory: Path) -> None:
        seen: dict[tuple[str, str, str], Path] = {}
        for path in sorted(directory.glob("*.json")):
            action, kind = _action_and_kind(version, path.stem)
            key = (version, action, kind)
            if key in seen:
                raise SchemaError(f"{path}: same {kind} schema as {seen[key]}")
            seen[key] = path
            self._validators[key] = _compile(version, path)
            self._actions.add((version, action))

    def __len__(self) -> int:
        return len(self._validators)

    def unchanged(self, schema_dir: str | Path | None) -> bool:
        """Would a registry built from `schema_dir` now be this one? (Files compared by name, size, mtime.)"""
        root = DEFAULT_SCHEMA_DIR if schema_dir is None else Path(schema_dir)
        return root == self.schema_dir and root.is_dir() and fingerprint(root) == self.fingerprint

    def versions(self) -> set[str]:
        return {version for version, _ in self._actions}

    def has_action(self, version: str, action: str) -> bool:
        return (version, action) in self._actions

    def check(self, version: str, action: str, kind: Kind, payload: Any) -> Violation | None:
        validator = self._validators.get((version, action, kind))
        if validator is None:
            raise UnknownAction(version, action, kind)
        codes = _CODES[version]
        try:
            if validator.is_valid(payload):
                return None
            error = next(validator.iter_errors(payload), None)
        except ValueError as exc:
            # jsonschema-rs gives up converting very deeply nested values.
            description = _clip(f"payload: cannot be checked ({exc})")
            return Violation(codes.formation, description, "payload")
        if error is None:
            return Violation(codes.formation, "payload: does not match the schema", "payload")
        return _violation(codes, error)


def _action_and_kind(version: str, stem: str) -> tuple[str, Kind]:
    if stem.endswith("Response") and stem != "Response":
        return stem[: -len("Response")], "response"
    if version != "ocpp1.6" and stem.endswith("Request") and stem != "Request":
        return stem[: -len("Request")], "request"
    # 1.6 names the request after the bare action; in 2.1 a bare name is the
    # payload of a SEND (e.g. NotifyPeriodicEventStream), which has no answer
    # and, like a CALL's payload, comes from the sender.
    return stem, "request"


def _compile(version: Version, path: Path) -> jsonschema_rs.Validator:
    try:
        schema = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise SchemaError(f"{path}: not a readable JSON file: {exc}") from exc
    if not isinstance(schema, dict):
        raise SchemaError(f"{path}: a schema must be a JSON object")
    try:
        if "$schema" in schema:
            return jsonschema_rs.validator_for(schema, validate_formats=True, offline=True)
        return _DEFAULT_DRAFT[version](schema, validate_formats=True, offline=True)
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SchemaError(f"{path}: not a valid JSON schema: {first_line}") from exc


def json_path(segments: Iterable[str | int]) -> str:
    parts = ["payload"]
    for segment in segments:
        if isinstance(segment, int):
            parts.append(f"[{segment}]")
        elif _IDENTIFIER.match(segment):
            parts.append(f".{segment}")
        else:
            parts.append(f"[{json.dumps(segment)}]")
    return "".join(parts)


def _violation(codes: _Codes, error: jsonschema_rs.ValidationError) -> Violation:
    path = json_path(error.instance_path)
    keyword = error.kind.name
    if keyword == "type" and not error.instance_path:
        code = codes.formation
    elif keyword == "type":
        code = codes.type
    elif keyword in _OCCURRENCE:
        code = codes.occurrence
    elif keyword in _PROPERTY:
        code = codes.property
    else:
        code = codes.formation
    return Violation(code, _clip(f"{path}: {_problem(error)}"), path)


def _problem(error: jsonschema_rs.ValidationError) -> str:
    kind = error.kind
    value = error.instance
    match kind:
        case jsonschema_rs.ValidationErrorKind.Type(types=types):
            return f"{_show(value)} is not of type {' or '.join(types)}"
        case jsonschema_rs.ValidationErrorKind.Required(property=name):
            return f"required property '{name}' missing"
        case jsonschema_rs.ValidationErrorKind.AdditionalProperties(unexpected=names):
            listed = ", ".join(f"'{name}'" for name in names)
            noun = "property" if len(names) == 1 else "properties"
            return f"additional {noun} {listed} not allowed"
        case jsonschema_rs.ValidationErrorKind.MaxLength(limit=limit):
            return f"{_show(value)} is longer than {limit} characters"
        case jsonschema_rs.ValidationErrorKind.MinLength(limit=limit):
            return f"{_show(value)} is shorter than {limit} characters"
        case jsonschema_rs.ValidationErrorKind.MinItems(limit=limit):
            return f"has {_count(value)} items, at least {limit} required"
        case jsonschema_rs.ValidationErrorKind.MaxItems(limit=limit):
            return f"has {_count(value)} items, at most {limit} allowed"
        case jsonschema_rs.ValidationErrorKind.Enum(options=options):
            return f"{_show(value)} is not one of {_options(options)}"
        case jsonschema_rs.ValidationErrorKind.Minimum(limit=limit):
            return f"{_show(value)} is less than the minimum of {_number(limit)}"
        case jsonschema_rs.ValidationErrorKind.Maximum(limit=limit):
            return f"{_show(value)} is greater than the maximum of {_number(limit)}"
        case jsonschema_rs.ValidationErrorKind.Format(format=fmt):
            return f"{_show(value)} is not a valid {fmt}"
        case jsonschema_rs.ValidationErrorKind.Pattern(pattern=pattern):
            return f"{_show(value)} does not match the pattern {_show(pattern)}"
    return error.message.splitlines()[0] if error.message else kind.name


def _show(value: Any) -> str:
    if isinstance(value, str) and len(value) > _MAX_VALUE:
        value = value[:_MAX_VALUE]  # a charge point may send megabytes
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 3] + "..."


def _number(limit: Any) -> str:
    # The OCA files write integer bounds as 0.0.
    return str(int(limit)) if isinstance(limit, float) and limit.is_integer() else str(limit)


def _count(value: Any) -> int:
    return len(value) if isinstance(value, list) else 0


def _options(options: list[Any]) -> str:
    shown: list[str] = []
    for option in options:
        text = _show(option)
        if shown and sum(len(s) + 2 for s in shown) + len(text) > _MAX_OPTIONS:
            return f"{', '.join(shown)} (or {len(options) - len(shown)} more)"
        shown.append(text)
    return ", ".join(shown)


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_DESCRIPTION else text[: _MAX_DESCRIPTION - 3] + "..."
