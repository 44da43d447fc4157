"""B9: B2 with the MQTT bridge's buffer on disk (`mqtt.buffer.mode = disk`) against B2 with it in
memory: two gateways side by side on the same core and broker (charge point ids apart), measured in
turn. What it costs to write every bridged message to disk (group commit, fsync per commit) before
it is sent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.bench import load as loadgen
from engine.bench.processes.gateway import Gateway
from engine.bench.processes.gateway_rules import ANSWER_RULE
from engine.bench.processes.mosquitto import Mosquitto
from engine.bench.processes.service import Workdir
from engine.bench.scenarios.common import Drain, _gateway_extras, _pinning, _probe, _ready, _round
from engine.bench.scenarios.options import Options

COST_MAX = 0.30  # the bar: disk may cost at most 30% of the calls/s


def _with_commits(probe: Callable[[], dict[str, float]], gw: Gateway) -> Callable[[], dict[str, float]]:
    """The CPU probe plus the bridge's disk commits: the summary's `cpu.disk_commits` is then commits/s."""
    def both() -> dict[str, float]:
        out = probe()
        out["disk_commits"] = gw.metric("mqtt_bridge_disk_commits") or 0.0
        return out
    return both


async def b9(opts: Options) -> dict[str, Any]:
    cores = opts.plan()
    n = opts.n_cps
    with Workdir() as wd:
        mosquitto = wd.add(Mosquitto(wd.path, cores.server))
        memory = wd.add(Gateway(wd.path, cores.server, mosquitto.port, name="gateway-memory", extra=ANSWER_RULE))
        disk = wd.add(Gateway(wd.path, cores.server, mosquitto.port, name="gateway-disk",
                              extra=ANSWER_RULE + "\nmqtt.buffer.mode = disk\n"))
        loads = {"memory": loadgen.Load(memory.url, "A"), "disk": loadgen.Load(disk.url, "B")}
        await _ready(loads["memory"], n, "memory gateway")
        await _ready(loads["disk"], n, "disk gateway")
        probes = {"memory": _probe({"server": memory, "mosquitto": mosquitto, "other_gateway": disk}, cores),
                  "disk": _with_commits(_probe({"server": disk, "mosquitto": mosquitto, "other_gateway": memory},
                                               cores), disk)}
        drains = {"memory": Drain(memory), "disk": Drain(disk)}
        totals = await loadgen.alternate(loads, opts.measure_s, opts.warmup_s, probes=probes, settle=drains)
        g, b = totals["disk"].summary(), totals["memory"].summary()
        g.update(drains["disk"].report())
        b.update(drains["memory"].report())
        g.update(_gateway_extras(disk))
        b.update(_gateway_extras(memory))
        commits_per_s = g["cpu"].pop("disk_commits", None)
        g["disk_commits_per_s"] = commits_per_s
        g["calls_per_commit"] = _round(g["calls_per_s"] / commits_per_s, 1) if commits_per_s else None
        g["disk_messages_left"] = int(disk.metric("mqtt_bridge_disk_messages") or 0)
        for load in loads.values():
            await load.close()
    ratio = g["calls_per_s"] / b["calls_per_s"] if b["calls_per_s"] else None
    return {
        "scenario": "B9", "gateway": g, "baseline": b, "ratio": _round(ratio),
        "ratio_of": "calls/s with mqtt.buffer.mode = disk / calls/s with memory (B2)",
        "bar": {"ratio_min": 1 - COST_MAX},
        "meets_bar": bool(ratio is not None and ratio >= 1 - COST_MAX and g["errors"] == 0),
        "cps": n, "seconds": opts.measure_s, **_pinning(cores),
    }
