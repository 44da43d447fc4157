"""The shipped OCA schemas and the schema registry (engine/ocpp/schemas.py)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
from pathlib import Path

import pytest

from engine.ocpp.schemas import (
    DEFAULT_SCHEMA_DIR,
    VERSIONS,
    Kind,
    SchemaError,
    SchemaRegistry,
    UnknownAction,
    Violation,
    json_path,
)

# The shipped files were copied from this release of the `ocpp` package.
OCPP_PACKAGE_VERSION = "2.1.0"
PACKAGE_DIRS = {"ocpp1.6": "v16", "ocpp2.0.1": "v201", "ocpp2.1": "v21"}

_BOTH = {"type": "TypeConstraintViolation", "property": "PropertyConstraintViolation"}
_16 = {"occurrence": "OccurenceConstraintViolation", "formation": "FormationViolation"}
_2X = {"occurrence": "OccurrenceConstraintViolation", "formation": "FormatViolation"}
CODES = {"ocpp1.6": {**_BOTH, **_16}, "ocpp2.0.1": {**_BOTH, **_2X}, "ocpp2.1": {**_BOTH, **_2X}}

NOW = "2024-05-01T12:00:00Z"
BOOT_16 = {"chargePointVendor": "Vendor", "chargePointModel": "Model"}
STATION = {"model": "Model", "vendorName": "Vendor"}
BOOT_2X = {"reason": "PowerUp", "chargingStation": STATION}
BOOT_ANSWER = {"status": "Accepted", "currentTime": NOW, "interval": 300}
SV = [
    {"value": "1234.5", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
    {"value": "7200", "measurand": "Power.Active.Import", "unit": "W"},
    {"value": "16.1", "measurand": "Current.Import", "unit": "A", "phase": "L1"},
    {"value": "230.2", "measurand": "Voltage", "unit": "V", "phase": "L1-N"},
]
MV = {"timestamp": NOW, "sampledValue": SV}
METER_VALUES_16 = {"connectorId": 1, "transactionId": 42, "meterValue": [MV]}


def meter_values_16(*sampled: object) -> dict[str, object]:
    return {**METER_VALUES_16, "meterValue": [{**MV, "sampledValue": list(sampled)}]}


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry()


def boot(version: str, **changes: object) -> dict[str, object]:
    return {**(BOOT_16 if version == "ocpp1.6" else BOOT_2X), **changes}


def assert_violation(v: Violation | None, code: str, path: str, *words: str) -> None:
    assert v is not None
    assert (v.code, v.path) == (code, path)
    assert v.description.startswith(f"{path}: ")
    assert len(v.description) <= 200
    for word in words:
        assert word in v.description


# --- valid payloads ------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_valid(registry: SchemaRegistry, version: str) -> None:
    check = registry.check
    assert check(version, "BootNotification", "request", boot(version)) is None
    assert check(version, "BootNotification", "response", BOOT_ANSWER) is None
    assert check(version, "Heartbeat", "request", {}) is None
    assert check(version, "Heartbeat", "response", {"currentTime": NOW}) is None
    if version == "ocpp1.6":
        assert check(version, "MeterValues", "request", METER_VALUES_16) is None
    else:  # customData is open to any vendor property
        payload = boot(version, customData={"vendorId": "acme", "anything": [1, 2]})
        assert check(version, "BootNotification", "request", payload) is None


# --- each kind of violation, both spellings ----------------------------------------

# (version, action, kind, payload, kind of code, path, words the description must hold)
VIOLATIONS = [
    ("ocpp1.6", "BootNotification", "request", {**BOOT_16, "chargePointVendor": 17},
     "type", "payload.chargePointVendor", ["17", "string"]),
    ("ocpp2.0.1", "BootNotification", "request",
     {**BOOT_2X, "chargingStation": {**STATION, "vendorName": 17}},
     "type", "payload.chargingStation.vendorName", ["17", "string"]),
    ("ocpp1.6", "BootNotification", "request", {"chargePointVendor": "V"},
     "occurrence", "payload", ["required", "'chargePointModel'"]),
    ("ocpp2.0.1", "BootNotification", "request", {**BOOT_2X, "chargingStation": {"model": "M"}},
     "occurrence", "payload.chargingStation", ["required", "'vendorName'"]),
    ("ocpp1.6", "BootNotification", "request", {**BOOT_16, "chargePointVendor": "V" * 21},
     "property", "payload.chargePointVendor", ["longer than 20 characters"]),
    ("ocpp2.0.1", "BootNotification", "request",
     {**BOOT_2X, "chargingStation": {**STATION, "model": "M" * 21}},
     "property", "payload.chargingStation.model", ["longer than 20 characters"]),
    ("ocpp1.6", "BootNotification", "response", {**BOOT_ANSWER, "status": "Maybe"},
     "property", "payload.status", ['"Maybe"', '"Accepted"']),
    ("ocpp2.0.1", "BootNotification", "response", {**BOOT_ANSWER, "status": "Maybe"},
     "property", "payload.status", ['"Maybe"', '"Accepted"']),
    ("ocpp1.6", "BootNotification", "response", {**BOOT_ANSWER, "currentTime": "yesterday"},
     "property", "payload.currentTime", ["date-time"]),
    ("ocpp2.0.1", "BootNotification", "response", {**BOOT_ANSWER, "currentTime": "yesterday"},
     "property", "payload.currentTime", ["date-time"]),
    ("ocpp2.1", "Reset", "request", {"type": "Immediate", "evseId": -1},
     "property", "payload.evseId", ["-1 is less than the minimum of 0"]),
    ("ocpp1.6", "BootNotification", "request", {**BOOT_16, "colour": "red"},
     "formation", "payload", ["'colour'", "not allowed"]),
    ("ocpp2.0.1", "BootNotification", "request", {**BOOT_2X, "colour": "red"},
     "formation", "payload", ["'colour'", "not allowed"]),
    ("ocpp2.1", "BootNotification", "request", {**BOOT_2X, "colour": "red"},
     "formation", "payload", ["'colour'", "not allowed"]),
    # array items: the index is in the path
    ("ocpp1.6", "MeterValues", "request", meter_values_16(SV[0], SV[1], {"unit": "A"}),
     "occurrence", "payload.meterValue[0].sampledValue[2]", ["required", "'value'"]),
    ("ocpp1.6", "MeterValues", "request", meter_values_16(SV[0], {**SV[1], "unit": "furlongs"}),
     "property", "payload.meterValue[0].sampledValue[1].unit", ['"furlongs"']),
    ("ocpp1.6", "MeterValues", "request", meter_values_16(),
     "occurrence", "payload.meterValue[0].sampledValue", ["at least 1"]),
    ("ocpp2.0.1", "MeterValues", "request",
     {"evseId": 1, "meterValue": [{"timestamp": NOW, "sampledValue": [{"value": 1.0}]},
                                  {"timestamp": NOW, "sampledValue": [{"value": "x"}]}]},
     "type", "payload.meterValue[1].sampledValue[0].value", ['"x"']),
]


@pytest.mark.parametrize(
    ("version", "action", "kind", "payload", "code", "path", "words"), VIOLATIONS
)
def test_violation(
    registry: SchemaRegistry, version: str, action: str, kind: Kind,
    payload: object, code: str, path: str, words: list[str],
) -> None:
    v = registry.check(version, action, kind, payload)
    assert_violation(v, CODES[version][code], path, *words)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("payload", [[1, 2], "BootNotification", 3, None, True])
def test_payload_not_an_object(registry: SchemaRegistry, version: str, payload: object) -> None:
    v = registry.check(version, "BootNotification", "request", payload)
    assert_violation(v, CODES[version]["formation"], "payload", "object")


def test_first_error_wins_and_long_values_are_clipped(registry: SchemaRegistry) -> None:
    payload: dict[str, object] = {"chargePointVendor": 1, "chargePointModel": "M" * 30, "x": 1}
    v = registry.check("ocpp1.6", "BootNotification", "request", payload)
    assert v is not None and v.path == "payload.chargePointVendor"
    assert registry.check("ocpp1.6", "BootNotification", "request", payload) == v
    payload = boot("ocpp1.6", chargePointVendor="V" * 5000)
    v = registry.check("ocpp1.6", "BootNotification", "request", payload)
    assert v is not None and len(v.description) <= 200 and "..." in v.description
    v = registry.check("ocpp1.6", "BootNotification", "request", {f"k{i}": i for i in range(500)})
    assert v is not None and len(v.description) <= 200


def test_deeply_nested_payload_is_a_violation_not_a_crash(registry: SchemaRegistry) -> None:
    nested: list[object] = []
    for _ in range(1000):
        nested = [nested]
    payload = boot("ocpp1.6", chargePointVendor=nested)
    v = registry.check("ocpp1.6", "BootNotification", "request", payload)
    assert v is not None and v.code in {"TypeConstraintViolation", "FormationViolation"}


def test_json_path_format() -> None:
    assert json_path([]) == "payload"
    assert json_path(["meterValue", 0, "sampledValue", 12]) == (
        "payload.meterValue[0].sampledValue[12]"
    )
    assert json_path(["odd key", "a.b", "_ok1"]) == 'payload["odd key"]["a.b"]._ok1'


# --- actions --------------------------------------------------------------------------


def test_unknown_action(registry: SchemaRegistry) -> None:
    with pytest.raises(UnknownAction) as info:
        registry.check("ocpp1.6", "MakeCoffee", "request", {})
    assert isinstance(info.value, KeyError)
    assert "MakeCoffee" in str(info.value) and "ocpp1.6" in str(info.value)
    # StartTransaction: 1.6 only; NotifyPeriodicEventStream: a SEND, which has no answer
    for version, action, kind in [("ocpp2.0.1", "StartTransaction", "request"),
                                  ("ocpp3.0", "BootNotification", "request"),
                                  ("ocpp2.1", "NotifyPeriodicEventStream", "response")]:
        with pytest.raises(UnknownAction):
            registry.check(version, action, kind, {})  # type: ignore[arg-type]


def test_has_action(registry: SchemaRegistry) -> None:
    # SignCertificate: 1.6 security white paper; NotifyPeriodicEventStream: a 2.1 SEND
    for version, actions in {
        "ocpp1.6": ["BootNotification", "StartTransaction", "SignCertificate"],
        "ocpp2.0.1": ["BootNotification", "TransactionEvent"],
        "ocpp2.1": ["BootNotification", "AFRRSignal", "NotifyPeriodicEventStream"],
    }.items():
        assert all(registry.has_action(version, action) for action in actions)
    for version, action in [
        ("ocpp1.6", "BootNotificationResponse"), ("ocpp1.6", "TransactionEvent"),
        ("ocpp2.0.1", "StartTransaction"), ("ocpp2.0.1", "BootNotificationRequest"),
        ("ocpp2.0.1", "AFRRSignal"), ("ocpp9", "BootNotification"),
    ]:
        assert not registry.has_action(version, action)


def test_every_shipped_schema_compiles(registry: SchemaRegistry) -> None:
    files = {v: sorted((DEFAULT_SCHEMA_DIR / v).glob("*.json")) for v in VERSIONS}
    assert [len(f) for f in files.values()] == [78, 128, 181]
    assert len(registry) == sum(len(f) for f in files.values())
    for version, paths in files.items():
        for path in paths:
            kind: Kind = "response" if path.stem.endswith("Response") else "request"
            action = path.stem.removesuffix("Response")
            if version != "ocpp1.6":
                action = action.removesuffix("Request")
            assert registry.has_action(version, action), path
            # Any verdict will do: the point is that a compiled validator answers.
            registry.check(version, action, kind, {})


# --- the shipped files -------------------------------------------------------------------


def _sha256s(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.glob("*.json")}


@pytest.mark.parametrize("version", VERSIONS)
def test_shipped_schemas_are_the_ocpp_packages(version: str) -> None:
    try:
        dist = importlib.metadata.distribution("ocpp")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the ocpp package (test extra) is not installed")
    if dist.version != OCPP_PACKAGE_VERSION:
        pytest.skip(f"schemas/ is from ocpp {OCPP_PACKAGE_VERSION}, {dist.version} is installed")
    package_dir = Path(str(dist.locate_file(f"ocpp/{PACKAGE_DIRS[version]}/schemas")))
    shipped = _sha256s(DEFAULT_SCHEMA_DIR / version)
    assert shipped and shipped == _sha256s(package_dir)


def test_notice_is_shipped() -> None:
    notice = (DEFAULT_SCHEMA_DIR / "NOTICE.md").read_text(encoding="utf-8")
    assert "Open Charge Alliance" in notice and f"version {OCPP_PACKAGE_VERSION}" in notice
    assert "CC BY-ND 4.0" in notice


# --- other schema directories ------------------------------------------------------------


def test_custom_dir_with_one_version(tmp_path: Path) -> None:
    (tmp_path / "ocpp1.6").mkdir()
    for name in ("BootNotification.json", "BootNotificationResponse.json"):
        shutil.copy(DEFAULT_SCHEMA_DIR / "ocpp1.6" / name, tmp_path / "ocpp1.6" / name)
    (tmp_path / "ocpp1.6" / "README.txt").write_text("not a schema")
    registry = SchemaRegistry(str(tmp_path))
    assert len(registry) == 2 and registry.versions() == {"ocpp1.6"}
    assert registry.check("ocpp1.6", "BootNotification", "request", BOOT_16) is None
    assert not registry.has_action("ocpp1.6", "Heartbeat")
    assert not registry.has_action("ocpp2.0.1", "BootNotification")
    with pytest.raises(UnknownAction):
        registry.check("ocpp2.0.1", "BootNotification", "request", BOOT_2X)


def test_custom_schema_without_declared_draft(tmp_path: Path) -> None:
    (tmp_path / "ocpp2.0.1").mkdir()
    schema = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 3}}}
    (tmp_path / "ocpp2.0.1" / "PokeRequest.json").write_text(json.dumps(schema))
    registry = SchemaRegistry(tmp_path)
    assert registry.check("ocpp2.0.1", "Poke", "request", {"n": 3}) is None
    v = registry.check("ocpp2.0.1", "Poke", "request", {"n": 4})
    assert_violation(v, "PropertyConstraintViolation", "payload.n", "maximum of 3")
    (tmp_path / "ocpp2.0.1" / "Poke.json").write_text("{}")  # a second request schema for Poke
    with pytest.raises(SchemaError, match="Poke.json"):
        SchemaRegistry(tmp_path)


def test_missing_schema_dir(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="nowhere"):
        SchemaRegistry(tmp_path / "nowhere")
    (tmp_path / "schemas.json").write_text("{}")
    with pytest.raises(SchemaError, match="schemas.json"):
        SchemaRegistry(tmp_path / "schemas.json")


D4 = '"$schema": "http://json-schema.org/draft-04/schema#"'
BROKEN = ["{ not json", "[1, 2]", f'{{{D4}, "type": 5}}', f'{{{D4}, "maxLength": -1}}',
          '{"$schema": "http://example.com/unknown-draft#"}']


@pytest.mark.parametrize("content", BROKEN)
def test_broken_schema_file_is_named(tmp_path: Path, content: str) -> None:
    (tmp_path / "ocpp2.1").mkdir()
    (tmp_path / "ocpp2.1" / "HeartbeatRequest.json").write_text('{"type": "object"}')
    broken = tmp_path / "ocpp2.1" / "BootNotificationRequest.json"
    broken.write_text(content)
    with pytest.raises(SchemaError) as info:
        SchemaRegistry(tmp_path)
    assert str(broken) in str(info.value)
