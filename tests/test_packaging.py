"""What the package declares against what its code does, read from the source tree (quick; the wheel
itself is built and installed in tests/test_wheel_install.py).

- every package of the source tree is in pyproject's explicit package list, and the OCA schemas are
  package data of engine.ocpp.oca_schemas;
- no module of the package imports a distribution of the test extra (the installed package has none);
- every third-party distribution the package imports is declared, and every declared one is used;
- the licence: LICENSE is Apache-2.0, and pyproject says so;
- the docs and the code stand alone: they name no file outside the repository.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = ("engine", "rules", "connectors")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

# used by name, not imported: uvicorn's http="httptools" and ws="websockets-sansio" (engine/serve.py)
USED_WITHOUT_IMPORT = {"httptools", "websockets"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return _canonical(match.group(1))


def _modules() -> list[Path]:
    return sorted(path for top in CODE for path in (ROOT / top).rglob("*.py"))


def imported_top_names(path: Path) -> dict[str, int]:
    """Top-level module names `path` imports anywhere (in functions too), with the first line of each."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.setdefault(alias.name.split(".")[0], node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.setdefault(node.module.split(".")[0], node.lineno)
    return found


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _distributions_of(top_name: str) -> set[str]:
    return {_canonical(d) for d in _packages_distributions().get(top_name, [])}


def test_every_source_package_is_listed_and_the_schemas_are_package_data() -> None:
    setuptools = PYPROJECT["tool"]["setuptools"]
    on_disk = {str(init.parent.relative_to(ROOT)).replace("/", ".")
               for top in CODE for init in (ROOT / top).rglob("__init__.py")}
    assert set(setuptools["packages"]) == on_disk | {"engine.ocpp.oca_schemas", "engine.admin.dashboard"}
    dashboard = {p.name for p in (ROOT / "engine" / "admin" / "dashboard").iterdir() if p.is_file()}
    assert {n for n in dashboard if any(Path(n).match(g) for g in setuptools["package-data"]["engine.admin.dashboard"])} == dashboard
    assert setuptools["package-dir"] == {"engine.ocpp.oca_schemas": "schemas"}
    patterns = setuptools["package-data"]["engine.ocpp.oca_schemas"]
    shipped = {path.relative_to(ROOT / "schemas") for path in (ROOT / "schemas").rglob("*") if path.is_file()}
    covered = {path for path in shipped if any(path.match(pattern) for pattern in patterns)}
    assert covered == shipped and Path("NOTICE.md") in covered and len(covered) > 380


def test_no_module_imports_a_test_only_distribution() -> None:
    test_extra = {_requirement_name(r) for r in PYPROJECT["project"]["optional-dependencies"]["test"]}
    runtime = {_requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    test_only = test_extra - runtime
    assert {"paho-mqtt", "aiomqtt", "pytest", "hypothesis", "ocpp"} <= test_only
    offending = []
    for path in _modules():
        for name, line in imported_top_names(path).items():
            if _distributions_of(name) & test_only:
                offending.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not offending, "\n".join(offending)


def test_imported_distributions_are_declared_and_declared_ones_used() -> None:
    declared = {_requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    imported: dict[str, str] = {}
    for path in _modules():
        for name, line in imported_top_names(path).items():
            for dist in _distributions_of(name) - {"ocpp-gateway"}:
                imported.setdefault(dist, f"{path.relative_to(ROOT)}:{line}")
    undeclared = {dist: where for dist, where in imported.items() if dist not in declared}
    assert not undeclared, f"imported but not declared: {undeclared}"
    unused = declared - set(imported) - USED_WITHOUT_IMPORT
    assert not unused, f"declared but never imported: {sorted(unused)}"
    assert "jsonschema" not in declared


def test_licence_is_apache_2_and_declared() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text) > 10_000  # the full text, not a pointer
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE", "schemas/NOTICE.md"]


# Files of the environment the project was developed in, which the repository does not have.
OUTSIDE = re.compile(r"shared/(spec|tools|seeds|hooks)\b|\.\./shared\b|\bdesign\.md\b|/work/")


def test_docs_and_code_name_no_file_outside_the_repository() -> None:
    texts = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "pyproject.toml",
             *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "conf").rglob("*")), *_modules(),
             *sorted((ROOT / "scripts").rglob("*"))]
    found = []
    for path in texts:
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not found, "\n".join(found)
