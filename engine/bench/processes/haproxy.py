"""HAProxy (`mode tcp`, `send-proxy`, health checks) in front of gateway nodes, for B10."""

from __future__ import annotations

import shutil
from pathlib import Path

from engine.bench.processes.errors import BenchError
from engine.bench.processes.machine import taskset
from engine.bench.processes.service import Service, free_port, wait_port


def find_haproxy() -> str:
    for path in (shutil.which("haproxy"), "/usr/sbin/haproxy"):
        if path and Path(path).exists():
            return path
    raise BenchError("haproxy not found (Debian: apt-get install haproxy)")


class HAProxy(Service):
    """One TCP frontend, round robin over `backends` (ports on 127.0.0.1), each with the PROXY header.
    maxconn 5000: HAProxy needs two descriptors a connection, under the hard limit of 20,000 here."""

    def __init__(self, workdir: Path, core: int | None, backends: list[int]) -> None:
        self.port = free_port()
        servers = "".join(f"    server gw{i} 127.0.0.1:{port} send-proxy check inter 500ms\n"
                          for i, port in enumerate(backends))
        conf = workdir / "haproxy.cfg"
        conf.write_text("global\n    maxconn 5000\ndefaults\n    mode tcp\n    timeout connect 5s\n"
                        "    timeout client 1h\n    timeout server 1h\n"
                        f"frontend ocpp\n    bind 127.0.0.1:{self.port}\n    default_backend gateways\n"
                        f"backend gateways\n    balance roundrobin\n{servers}")
        super().__init__("haproxy", [*taskset(core), find_haproxy(), "-db", "-f", str(conf)], workdir)
        wait_port(self.port, 10, self.proc, "haproxy")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp"
