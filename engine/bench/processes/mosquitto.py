"""mosquitto, the broker the gateway is bridged to: found (or installed) and started on a free port."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from engine.bench.processes.errors import BenchError
from engine.bench.processes.machine import taskset
from engine.bench.processes.service import Service, free_port, wait_port


def find_mosquitto() -> str:
    """mosquitto's path; installed with apt-get first if missing (as the tests do)."""
    search = ("/usr/sbin", "/usr/bin", "/usr/local/sbin")

    def found() -> str | None:
        candidates = [f"{d}/mosquitto" for d in search]
        return shutil.which("mosquitto") or next((c for c in candidates if os.path.exists(c)), None)

    path = found()
    if path:
        return path
    if not shutil.which("apt-get"):
        raise BenchError("mosquitto is not installed and there is no apt-get to install it")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    try:
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env, capture_output=True, timeout=300)
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "mosquitto"], check=True, env=env,
                       capture_output=True, timeout=300)
    except (subprocess.SubprocessError, OSError) as exc:
        raise BenchError(f"mosquitto is not installed and apt-get could not install it: {exc}") from None
    path = found()
    if not path:
        raise BenchError("installed the mosquitto package but found no mosquitto")
    return path


class Mosquitto(Service):
    def __init__(self, workdir: Path, core: int | None) -> None:
        self.port = free_port()
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            "persistence false\nmax_queued_messages 1000000\nmax_inflight_messages 0\nmax_connections -1\n"
            "set_tcp_nodelay true\n"  # as a deployment would: no Nagle delay on small publishes
            f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"  # as root it would switch to a user that cannot write here
        )
        super().__init__("mosquitto", [*taskset(core), find_mosquitto(), "-c", str(conf)], workdir)
        wait_port(self.port, 10, self.proc, "mosquitto")
