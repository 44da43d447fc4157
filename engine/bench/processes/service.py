"""A child process of the bench (its log in a file, stopped by its own pid), the loopback ports it
listens on, and the temp dir that holds one scenario's processes."""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TypeVar

from engine.bench.processes.errors import BenchError
from engine.bench.processes.machine import CLK_TCK, rss_kb
from engine.children import die_with_parent


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


_S = TypeVar("_S", bound=Service)


class Workdir:
    """A temp dir for one scenario's processes; removed with them."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="ocppgw-bench-"))
        self.services: list[Service] = []

    def __enter__(self) -> Workdir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, service: _S) -> _S:
        self.services.append(service)
        return service

    def close(self) -> None:
        for service in reversed(self.services):
            try:
                service.stop()
            except Exception:  # noqa: BLE001 - the others still stop
                pass
        shutil.rmtree(self.path, ignore_errors=True)
