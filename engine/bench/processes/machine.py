"""This machine as the bench sees it: which cores the processes are pinned to, the open-files
limit, and the CPU and memory figures /proc gives of a process and of each core."""

from __future__ import annotations

import os
import resource
import shutil
from dataclasses import dataclass

from engine.bench.processes.errors import BenchError

CLK_TCK = os.sysconf("SC_CLK_TCK")


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
