"""The processes of a benchmark: the gateway, mosquitto, the baseline endpoint and the MQTT backend.

Each runs in a temp dir on free loopback ports and is pinned with `taskset -c N` when the machine
has two cores and taskset: the servers (gateway, mosquitto, baseline) on one core, the load and the
backend on the other, as shared/spec/performance.md says. Every wait is bounded; `stop()` ends a
process (SIGTERM, then SIGKILL) by its own pid.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pwd
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from engine.children import die_with_parent

CLK_TCK = os.sysconf("SC_CLK_TCK")
ADMIN = ("admin", "public")
_ADMIN_AUTH = "Basic " + base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()


class BenchError(Exception):
    """A process of the bench would not start or answer; the message says which and why."""


@dataclass(frozen=True)
class Cores:
    load: int | None  # the bench process (the load) and the MQTT backend
    server: int | None  # the gateway, mosquitto, the baseline endpoint

    @property
    def pinned(self) -> bool:
        return self.server is not None


def plan_cores(pin: bool = True) -> Cores:
    """Two distinct cores of those we may use, or none (no pinning) on one core or without taskset."""
    cpus = sorted(os.sched_getaffinity(0))
    if pin and len(cpus) >= 2 and shutil.which("taskset"):
        return Cores(load=cpus[0], server=cpus[1])
    return Cores(None, None)


def pin_self(core: int | None) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})


def taskset(core: int | None) -> list[str]:
    return ["taskset", "-c", str(core)] if core is not None else []


def raise_nofile() -> int:
    """Raise the soft open-files limit to the hard one (children inherit it); the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1_048_576
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None, what: str = "server") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode} before listening on port {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise BenchError(f"{what}: nothing listens on 127.0.0.1:{port} after {timeout}s")


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


def _clean_env() -> dict[str, str]:
    """Our environment without OCPPGW_* overrides: the bench's config is the one that counts."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OCPPGW_")}


class Service:
    """A child process with its log in a file."""

    def __init__(self, name: str, args: list[str], workdir: Path, env: dict[str, str] | None = None,
                 stdout_pipe: bool = False) -> None:
        self.name = name
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args, cwd=workdir, env=env or _clean_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else self._log, stderr=self._log, start_new_session=True,
            preexec_fn=die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_line(self, text: str, timeout: float) -> None:
        """Wait for a line containing `text` on the process's standard output (stdout_pipe=True)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        buffer = b""
        fd = self.proc.stdout.fileno()
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0.0, min(0.2, deadline - time.monotonic())))
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                buffer += chunk
                if text.encode() in buffer:
                    return
            elif not self.alive():
                break
        raise BenchError(f"{self.name} did not say {text!r} within {timeout}s; its log:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(") ", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (OSError, IndexError, ValueError):
            return 0.0

    def rss_kb(self) -> int:
        return rss_kb(self.pid)

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


def rss_kb(pid: int) -> int:
    """VmRSS of a process, in KiB (from /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def core_busy_seconds() -> dict[int, float]:
    """Busy time (everything but idle and iowait) of each core of the machine, from /proc/stat: with
    the CPU time of our own processes it shows what other tenants of a shared machine took."""
    out = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if name.startswith("cpu") and name != "cpu":
                    v = [int(x) for x in fields[:8]]
                    out[int(name[3:])] = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / CLK_TCK
    except (OSError, ValueError, IndexError):
        pass
    return out


def self_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


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


# one rule that answers every CALL inside the gateway (B2, B3): Heartbeat with its currentTime (which
# the 1.6 schema requires, so B3's downstream check passes), every other action with an empty payload
ANSWER_RULE = '''
rule_engine.rules.bench_answer {
  sql = """SELECT clientid, payload.UniqueId AS id,
                  CASE payload.Action WHEN 'Heartbeat' THEN '{"currentTime":"' + now_rfc3339() + '"}'
                                      ELSE '{}' END AS body
           FROM "ocpp/cp/+" WHERE payload.MessageTypeId = 2 AND payload.Action != 'BootNotification'"""
  actions = [{function = republish, args {
    topic = "ocpp/cs/${clientid}"
    payload = """{"MessageTypeId": 3, "UniqueId": "${id}", "Payload": ${body}}"""
  }}]
}
'''


def boot_rule(interval: int) -> str:
    """docs/rules.md's auto-accept rule, with the heartbeat interval the charge points get."""
    return f'''
rule_engine.rules.bench_boot {{
  sql = """SELECT clientid, payload.UniqueId AS id, now_rfc3339() AS Payload.currentTime,
                  {int(interval)} AS Payload.interval, 'Accepted' AS Payload.status
           FROM "ocpp/cp/+" WHERE payload.Action = 'BootNotification'"""
  actions = [{{function = republish, args {{
    topic = "ocpp/cs/${{clientid}}"
    payload = """{{"MessageTypeId": 3, "UniqueId": "${{id}}", "Payload": ${{Payload}}}}"""
  }}}}]
}}
'''


CONNECTED_TOPIC = "bench/connected"
# B7: when the gateway accepted each charge point, by its own clock (ms), to `bench/connected/<cid>`
CONNECTED_RULE = f'''
rule_engine.rules.bench_connected {{
  sql = """SELECT clientid, connected_at FROM "$events/client_connected" """
  actions = [{{function = republish, args {{topic = "{CONNECTED_TOPIC}/${{clientid}}", payload = "${{connected_at}}"}}}}]
}}
'''


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


class Workdir:
    """A temp dir for one scenario's processes; removed with them."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="ocppgw-bench-"))
        self.services: list[Service] = []

    def __enter__(self) -> Workdir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, service: Service) -> Service:
        self.services.append(service)
        return service

    def close(self) -> None:
        for service in reversed(self.services):
            try:
                service.stop()
            except Exception:  # noqa: BLE001 - the others still stop
                pass
        shutil.rmtree(self.path, ignore_errors=True)
