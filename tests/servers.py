"""Real servers for the tests: installed from Debian if missing, run on free loopback ports."""

from __future__ import annotations

import asyncio
import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _below_ephemeral() -> tuple[int, int]:
    """Ports below the kernel's ephemeral range (Linux: 32768-60999), or (0, 0) when there is no room."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0, 0
    return (10000, low - 1) if low > 11000 else (0, 0)


_GIVEN: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, for a server a test starts a moment later. Taken below the
    ephemeral range: a port the kernel hands out for binding to 0 can meanwhile become the source
    port of any outgoing connection (the gateway's MQTT or HTTP clients), and the server's bind then
    fails with "Address already in use". Never the same port twice in one test run."""
    low, high = _below_ephemeral()
    for _ in range(2000 if high else 0):
        port = random.randint(low, high)
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def ensure_debian_package(binary: str, package: str, search: tuple[str, ...] = ("/usr/sbin", "/usr/bin")) -> str:
    """Path of `binary`; installs `package` with apt-get first if it is missing."""
    found = shutil.which(binary) or next((f"{d}/{binary}" for d in search if os.path.exists(f"{d}/{binary}")), None)
    if found:
        return found
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, env=env, capture_output=True)
    found = shutil.which(binary) or next((f"{d}/{binary}" for d in search if os.path.exists(f"{d}/{binary}")), None)
    if not found:
        raise RuntimeError(f"installed {package} but found no {binary}")
    return found


class Mosquitto:
    """A mosquitto broker on a free loopback port; can be killed and started again on the same port.

    `users` turns on password authentication; `tls` = (cafile, certfile, keyfile) makes the
    listener TLS-only; `acl` is the text of an acl_file (mosquitto's `topic read|write|readwrite
    <filter>` lines).
    """

    def __init__(self, users: dict[str, str] | None = None, tls: tuple[Path, Path, Path] | None = None,
                 acl: str | None = None) -> None:
        self.binary = ensure_debian_package("mosquitto", "mosquitto")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mosq-"))
        self.conf = self.dir / "mosquitto.conf"
        listener = f"listener {self.port} 127.0.0.1\n"
        if tls:
            listener += f"cafile {tls[0]}\ncertfile {tls[1]}\nkeyfile {tls[2]}\n"
        if users:
            passwd = self.dir / "passwd"
            passwd.write_text("".join(f"{user}:{password}\n" for user, password in users.items()))
            tool = ensure_debian_package("mosquitto_passwd", "mosquitto")
            subprocess.run([tool, "-U", str(passwd)], check=True, capture_output=True)  # hash in place
            listener += f"allow_anonymous false\npassword_file {passwd}\n"
        else:
            listener += "allow_anonymous true\n"
        if acl is not None:
            (self.dir / "acl").write_text(acl)
            listener += f"acl_file {self.dir / 'acl'}\n"
        self.conf.write_text(
            listener
            +
            # persistence: a subscriber's session (and what is queued for it) survives a restart
            f"persistence true\npersistence_location {self.dir}/\nautosave_interval 0\n"
            "max_queued_messages 200000\nmax_inflight_messages 0\n"
            # as root mosquitto would switch to its own user, which cannot write our temp dir
            f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_port(self.port)
        except TimeoutError:
            self.kill()
            raise

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def terminate(self) -> None:
        """Stop gracefully (mosquitto saves its sessions); start() brings them back."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def stop(self) -> None:
        self.terminate()
        shutil.rmtree(self.dir, ignore_errors=True)


class Postgres:
    """A PostgreSQL server in a temp dir on a free loopback port (run as the postgres user when we are root)."""

    def __init__(self) -> None:
        import glob

        initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not initdb:
            ensure_debian_package("psql", "postgresql")
            initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        self.bin = Path(initdb[-1]).parent
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pg-"))
        self.data = self.dir / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin / tool), *args], check=True, capture_output=True, timeout=120)

    def dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w", "start")
        wait_port(self.port)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def cleanup(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


async def read_mqtt_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One MQTT packet from a fake broker's client: (its first byte, the rest after the length)."""
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first, await reader.readexactly(length)
