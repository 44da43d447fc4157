"""The package as a user gets it: the wheel is built from a copy of the source, installed into a fresh
venv without the test extras (dependencies from the package index, through pip's cache), and run
from a directory that is not the source tree, with every message checked against the OCA schemas the
wheel carries.

One module-scoped install (the slow part, about a minute with a warm pip cache) serves every test here.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import websockets

from engine import __version__
from tests.gateway import GatewayProcess
from tests.ocpp_support import Backend, recv_json

pytestmark = pytest.mark.timeout(900)  # the first test also builds and installs (minutes with a cold pip cache)

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ("pyproject.toml", "README.md", "LICENSE", "schemas", "engine", "rules", "connectors")


def _run(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("OCPPGW_")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


class Installed:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "venv" / "bin"
        self.run_dir = root / "run"  # neither the source tree nor its copy

    def python(self, code: str) -> subprocess.CompletedProcess[str]:
        return _run([str(self.bin / "python"), "-c", code], self.run_dir, 120)

    def gateway(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run([str(self.bin / "ocpp-gateway"), *args], self.run_dir, 60)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in SOURCE:  # a copy: building in the tree would leave build/ and *.egg-info in it
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"), str(src)], root, 300)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (root / "dist").glob("ocpp_gateway-*.whl")
    venv.create(root / "venv", with_pip=True)
    done = _run([str(root / "venv" / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], root, 600)
    assert done.returncode == 0, done.stdout + done.stderr
    installed = Installed(root)
    installed.run_dir.mkdir()
    yield installed


def test_the_wheel_carries_the_schemas_and_none_of_the_test_extras(installed: Installed) -> None:
    found = installed.python(
        "import importlib.metadata as md, engine, engine.ocpp.schemas as s\n"
        "print(engine.__file__); print(s.DEFAULT_SCHEMA_DIR); print(len(s.SchemaRegistry()))\n"
        "for name in ('pytest', 'paho-mqtt', 'aiomqtt', 'hypothesis', 'ocpp', 'jsonschema', 'selenium'):\n"
        "    try: md.version(name); print('installed', name)\n"
        "    except md.PackageNotFoundError: pass\n")
    assert found.returncode == 0, found.stderr
    module, schema_dir, count, *extras = found.stdout.splitlines()
    site = str(installed.root / "venv" / "lib")
    assert module.startswith(site) and schema_dir.startswith(site), found.stdout  # not the source tree
    assert schema_dir.endswith("engine/ocpp/oca_schemas") and (Path(schema_dir) / "NOTICE.md").is_file()
    assert int(count) > 380  # every request and response schema of 1.6, 2.0.1 and 2.1 compiled
    assert extras == []


def test_the_wheel_carries_the_dashboard(installed: Installed) -> None:
    found = installed.python("import engine.admin.dashboard_files as d\nprint(d.FOLDER); print(' '.join(sorted(d._files())))\n")
    assert found.returncode == 0, found.stderr
    folder, names = found.stdout.splitlines()
    assert folder.startswith(str(installed.root / "venv" / "lib")), folder  # not the source tree
    shipped = {p.name for p in (ROOT / "engine" / "admin" / "dashboard").iterdir() if p.is_file()}
    assert set(names.split()) == shipped and "index.html" in shipped


def test_every_module_of_the_installed_package_imports(installed: Installed) -> None:
    """A module importing a test-only distribution (paho, once, in the bench backend) fails here."""
    walked = installed.python(
        "import importlib, pkgutil\n"
        "names = []\n"
        "for top in ('engine', 'rules', 'connectors'):\n"
        "    package = importlib.import_module(top)\n"
        "    names += [top] + [m.name for m in pkgutil.walk_packages(package.__path__, top + '.')]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(len(names))\n")
    assert walked.returncode == 0, walked.stderr
    assert int(walked.stdout) > 100


def test_version_and_check_config(installed: Installed) -> None:
    version = installed.gateway("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"ocpp-gateway {__version__}"
    conf = installed.run_dir / "check.conf"
    conf.write_text('gateway.ocpp.message_format_checking = all\n')
    checked = installed.gateway("check-config", "-c", str(conf))
    assert checked.returncode == 0, checked.stderr
    assert "message_format_checking = \"all\"" in checked.stdout
    bench = installed.gateway("bench", "--help")
    assert bench.returncode == 0 and "B1 round trip" in bench.stdout and "shared/" not in bench.stdout


def test_a_charge_point_boots_and_an_invalid_call_gets_its_callerror(installed: Installed) -> None:
    gw = GatewayProcess(installed.run_dir, config=(
        f'node.data_dir = "{installed.run_dir / "data"}"\n'
        "gateway.ocpp.message_format_checking = all\n"))
    gw.args[0] = str(installed.bin / "ocpp-gateway")
    gw.env.pop("PYTHONPATH", None)
    gw.env.pop("VIRTUAL_ENV", None)
    gw.start(timeout=60)
    backend = None
    try:
        backend = Backend(gw.mqtt_port)

        async def charge_point() -> None:
            url = f"ws://127.0.0.1:{gw.ocpp_port}/ocpp/CP-WHEEL"
            async with websockets.connect(url, subprotocols=["ocpp1.6"]) as ws:
                boot = {"chargePointVendor": "wheel", "chargePointModel": "installed"}
                await ws.send(orjson.dumps([2, "boot-1", "BootNotification", boot]).decode())
                call = await backend.answer("ocpp/cp/CP-WHEEL", {
                    "status": "Accepted", "currentTime": "2026-12-06T09:00:00Z", "interval": 300}, timeout=10)
                assert call["Action"] == "BootNotification" and call["Payload"] == boot
                assert await recv_json(ws) == [3, "boot-1", {
                    "status": "Accepted", "currentTime": "2026-12-06T09:00:00Z", "interval": 300}]
                # chargePointModel missing: refused by the shipped 1.6 schema, never forwarded
                await ws.send(orjson.dumps([2, "boot-2", "BootNotification", {"chargePointVendor": "wheel"}]).decode())
                error = await recv_json(ws)
                assert error[:3] == [4, "boot-2", "OccurenceConstraintViolation"], error
                assert "chargePointModel" in error[3]
                await backend.nothing(0.5)

        asyncio.run(charge_point())
    finally:
        if backend is not None:
            backend.close()
        assert gw.stop() == 0, gw.log
    assert "Traceback" not in gw.log

