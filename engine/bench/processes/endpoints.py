"""The two helper processes besides the gateway and the broker: the baseline endpoint (what the
gateway is compared with) and the MQTT backend (which answers the gateway's CALLs)."""

from __future__ import annotations

import sys
from pathlib import Path

from engine.bench.processes.machine import taskset
from engine.bench.processes.service import Service, free_port, wait_port


class Baseline(Service):
    def __init__(self, workdir: Path, core: int | None) -> None:
        self.port = free_port()
        super().__init__("baseline", [*taskset(core), sys.executable, "-m", "engine.bench.baseline",
                                      "--port", str(self.port)], workdir)
        wait_port(self.port, 20, self.proc, "baseline endpoint")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp"


class Backend(Service):
    def __init__(self, workdir: Path, core: int | None, mqtt_port: int, qos: int = 0) -> None:
        super().__init__("backend", [*taskset(core), sys.executable, "-m", "engine.bench.backend",
                                     "--port", str(mqtt_port), "--qos", str(qos)], workdir, stdout_pipe=True)
        self.wait_line("ready", 20)
