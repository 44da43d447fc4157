"""The processes of a benchmark: the gateway, mosquitto, the baseline endpoint and the MQTT backend.

Each runs in a temp dir on free loopback ports and is pinned with `taskset -c N` when the machine
has two cores and taskset: the servers (gateway, mosquitto, baseline) on one core, the load and the
backend on the other (docs/benchmarks.md). Every wait is bounded; `stop()` ends a
process (SIGTERM, then SIGKILL) by its own pid.

machine: cores, pinning, the open-files limit, CPU and memory figures from /proc
errors: BenchError
service: a child process, its ports, the temp dir of a scenario (Workdir)
mosquitto, endpoints (baseline, backend), gateway: the processes by kind
gateway_rules: the rules the scenarios add to the gateway's config
"""

from engine.bench.processes.endpoints import Backend, Baseline
from engine.bench.processes.errors import BenchError
from engine.bench.processes.gateway import ADMIN, Gateway
from engine.bench.processes.gateway_rules import (
    ANSWER_RULE,
    CONNECTED_RULE,
    CONNECTED_TOPIC,
    boot_rule,
)
from engine.bench.processes.machine import (
    CLK_TCK,
    Cores,
    core_busy_seconds,
    pin_self,
    plan_cores,
    raise_nofile,
    rss_kb,
    self_cpu_seconds,
    taskset,
)
from engine.bench.processes.mosquitto import Mosquitto, find_mosquitto
from engine.bench.processes.service import Service, Workdir, free_port, wait_port

__all__ = [
    "ADMIN", "ANSWER_RULE", "CLK_TCK", "CONNECTED_RULE", "CONNECTED_TOPIC", "Backend", "Baseline", "BenchError",
    "Cores", "Gateway", "Mosquitto", "Service", "Workdir", "boot_rule", "core_busy_seconds", "find_mosquitto",
    "free_port", "pin_self", "plan_cores", "raise_nofile", "rss_kb", "self_cpu_seconds", "taskset", "wait_port",
]
