"""Run `ocpp-gateway` as a real process for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.servers import free_port

BIN = str(Path(sys.executable).with_name("ocpp-gateway"))


class GatewayProcess:
    """`ocpp-gateway run` in a temp dir, with free ports; its log lines collected as they come."""

    def __init__(self, workdir: Path, config: str | None = None, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.mqtt_port = free_port()
        self.ocpp_port = free_port()
        self.env = dict(os.environ)
        self.env.update({
            "OCPPGW_MQTT__EMBEDDED__BIND": f"127.0.0.1:{self.mqtt_port}",
            "OCPPGW_GATEWAY__OCPP__LISTENERS__WS__DEFAULT__BIND": f"127.0.0.1:{self.ocpp_port}",
            "OCPPGW_DASHBOARD__LISTENERS__HTTP__BIND": f"127.0.0.1:{free_port()}",
        })
        self.env.update(env or {})
        self.args = [BIN, "run"]
        if config is not None:
            path = workdir / "gateway.conf"
            path.write_text(config)
            self.args += ["-c", str(path)]
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self._changed = threading.Condition()
        self._reader: threading.Thread | None = None

    def start(self, wait_for: str | None = r"node \S+ started", timeout: float = 20) -> GatewayProcess:
        self.proc = subprocess.Popen(
            self.args, cwd=self.workdir, env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if wait_for:
            self.wait_log(wait_for, timeout)
        return self

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_log(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            exited = self.proc is not None and self.proc.poll() is not None
            if exited and self._reader:
                self._reader.join(5)  # everything it printed is in self.lines now
            with self._changed:
                for line in self.lines:
                    found = regex.search(line)
                    if found:
                        return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or exited:
                    raise AssertionError(f"no log line matching {pattern!r}; log:\n" + "\n".join(self.lines))
                self._changed.wait(min(remaining, 0.1))

    def wait_count(self, text: str, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self.log.count(text) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} seen {self.log.count(text)} times, wanted {count}; log:\n{self.log}")
            time.sleep(0.05)

    def broker_pid(self) -> int:
        return int(self.wait_log(r"embedded MQTT broker listening on \S+ \(pid (\d+)\)").group(1))

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20) -> int:
        assert self.proc
        return self.proc.wait(timeout)

    def stop(self) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        return self.proc.returncode if self.proc else None

    @property
    def log(self) -> str:
        return "\n".join(self.lines)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def wait_dead(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def skew_clock(gw: GatewayProcess, offset: float) -> None:
    """Run `gw` with its wall clock `offset` seconds off (the monotonic clock is untouched)."""
    gw.args = [sys.executable, "-c",
               "import sys, time; real = time.time; "
               f"time.time = lambda: real() + {offset}; "
               "from engine.cli import main; sys.argv = ['ocpp-gateway'] + sys.argv[1:]; sys.exit(main())",
               *gw.args[1:]]


def start_with_dashboard(workdir: Path, config: str) -> tuple[GatewayProcess, int]:
    """Start `ocpp-gateway run` on `config` with its dashboard on a free port of its own: (process, port)."""
    dashboard = free_port()
    gw = GatewayProcess(workdir, config, env={"OCPPGW_DASHBOARD__LISTENERS__HTTP__BIND": f"127.0.0.1:{dashboard}"})
    return gw.start(), dashboard


def scrape(dashboard: int, name: str, labels: str = "") -> float:
    """One `ocppgw_<name>{labels}` sample from the node's /prometheus/stats (basic auth off)."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{dashboard}/api/v5/prometheus/stats", timeout=5).text
    found = re.search(rf"^ocppgw_{name}{re.escape(labels)} (\S+)$", text, re.M)
    assert found, f"no {name}{labels} in the metrics"
    return float(found.group(1))
