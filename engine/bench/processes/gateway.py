"""The gateway under test: `ocpp-gateway run` with a config of its own, and its admin API
(metrics, connections, reload) as the scenarios read it."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from engine.bench.processes.errors import BenchError
from engine.bench.processes.machine import taskset
from engine.bench.processes.service import Service, free_port, wait_port

ADMIN = ("admin", "public")
_ADMIN_AUTH = "Basic " + base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()


class Gateway(Service):
    """`ocpp-gateway run` with a config of its own in a temp dir, bridged to `mqtt_port`."""

    def __init__(self, workdir: Path, core: int | None, mqtt_port: int, *, name: str = "gateway",
                 checking: str = "disable", max_conn_rate: int = 1_000_000, extra: str = "") -> None:
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ocpp_port = free_port()
        self.dashboard_port = free_port()
        self.mqtt_port = mqtt_port
        self.checking = checking
        self.max_conn_rate = max_conn_rate
        self.config_path = self.dir / "gateway.conf"
        self.write_config(extra)
        super().__init__(name, [*taskset(core), sys.executable, "-m", "engine.cli", "run", "-c",
                                str(self.config_path)], self.dir)
        self.wait_ready(60)

    def write_config(self, extra: str) -> None:
        self.config_path.write_text(f'''
node {{ name = "bench-{self.ocpp_port}", data_dir = "{self.dir}/data" }}
log.level = warning
mqtt.server = "mqtt://127.0.0.1:{self.mqtt_port}"
gateway.ocpp {{
  message_format_checking = {self.checking}
  listeners.ws.default {{ bind = "127.0.0.1:{self.ocpp_port}", max_conn_rate = {self.max_conn_rate} }}
}}
dashboard.listeners.http.bind = "127.0.0.1:{self.dashboard_port}"
{extra}
''')

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.ocpp_port}/ocpp"

    def api(self, method: str, path: str, body: bytes | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.dashboard_port}/api/v5{path}", data=body,
                                         method=method)
        request.add_header("Authorization", _ADMIN_AUTH)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    async def api_async(self, method: str, path: str, body: bytes = b"", timeout: float = 10.0) -> tuple[int, bytes]:
        """`api` on the caller's event loop: no thread in the load's process, whose latency figures a
        thread holding the GIL for milliseconds would spoil (B6 reloads every second)."""
        async def exchange() -> tuple[int, bytes]:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.dashboard_port)
            try:
                writer.write(f"{method} /api/v5{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {_ADMIN_AUTH}\r\n"
                             f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
                answer = await reader.read()  # Connection: close: the body ends with the stream
            finally:
                writer.close()
            head, _, content = answer.partition(b"\r\n\r\n")
            return int(head.split(b" ", 2)[1]), content

        return await asyncio.wait_for(exchange(), timeout)

    def metric(self, name: str) -> float | None:
        """The value of ocppgw_<name> in /api/v5/prometheus/stats (summed over its labels), or None."""
        status, text = self.api("GET", "/prometheus/stats")
        if status != 200:
            return None
        total = None
        for line in text.decode().splitlines():
            metric = line.split("{", 1)[0].split(" ", 1)[0]
            if metric in (f"ocppgw_{name}", f"ocppgw_{name}_total"):
                total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
        return total

    def connections_now(self, timeout: float = 5.0) -> int | None:
        """Charge points connected now, summed over the listeners (GET /gateways/ocpp/listeners)."""
        status, body = self.api("GET", "/gateways/ocpp/listeners", timeout=timeout)
        if status != 200:
            return None
        listeners = json.loads(body)
        items = listeners if isinstance(listeners, list) else listeners.get("data", [])
        return sum(int(x.get("current_connections", 0)) for x in items if isinstance(x, dict))

    def wait_ready(self, timeout: float) -> None:
        """Listening, admin API up, and the bridge connected to the broker."""
        deadline = time.monotonic() + timeout
        try:
            wait_port(self.ocpp_port, timeout, self.proc, "gateway")
            while time.monotonic() < deadline:
                if not self.alive():
                    raise BenchError(f"the gateway exited with {self.proc.returncode}")
                try:
                    if self.metric("mqtt_bridge_connected") == 1.0:
                        return
                except OSError:
                    pass
                time.sleep(0.1)
            raise BenchError(f"the gateway's MQTT bridge did not connect within {timeout}s")
        except BenchError as exc:
            self.stop()
            raise BenchError(f"{exc}; its log:\n{self.log_tail()}") from None
