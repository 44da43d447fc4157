"""B1, B2, B3: round trips of CALLs, against the baseline endpoint (B1, B2) or against B2 (B3)."""

from __future__ import annotations

from typing import Any

from engine.bench import load as loadgen
from engine.bench.processes.endpoints import Backend, Baseline
from engine.bench.processes.gateway import Gateway
from engine.bench.processes.gateway_rules import ANSWER_RULE
from engine.bench.processes.mosquitto import Mosquitto
from engine.bench.processes.service import Workdir
from engine.bench.scenarios.common import (
    Drain,
    _gateway_extras,
    _pinning,
    _probe,
    _ready,
    _round,
)
from engine.bench.scenarios.options import Options


async def b1(opts: Options) -> dict[str, Any]:
    """200 charge points, one CALL in flight each; the gateway bridged to mosquitto, a backend answering
    over MQTT. Calls/s against the baseline's, then p99 at half the gateway's rate."""
    cores = opts.plan()
    n = opts.n_cps
    with Workdir() as wd:
        mosquitto = wd.add(Mosquitto(wd.path, cores.server))
        backend = wd.add(Backend(wd.path, cores.load, mosquitto.port))
        gw = wd.add(Gateway(wd.path, cores.server, mosquitto.port))
        base = wd.add(Baseline(wd.path, cores.server))
        loads = {"baseline": loadgen.Load(base.url), "gateway": loadgen.Load(gw.url)}
        await _ready(loads["baseline"], n, "baseline")
        await _ready(loads["gateway"], n, "gateway")
        probes = {"baseline": _probe({"server": base}, cores),
                  "gateway": _probe({"server": gw, "mosquitto": mosquitto, "backend": backend}, cores)}
        drain = Drain(gw)
        totals = await loadgen.alternate(loads, opts.measure_s, opts.warmup_s, probes=probes,
                                         settle={"gateway": drain})
        g, b = totals["gateway"].summary(), totals["baseline"].summary()
        g.update(drain.report())
        half_rate = g["calls_per_s"] / 2
        half = (await loads["gateway"].run(opts.measure_s, warmup=min(opts.warmup_s, 1.0), rate=half_rate,
                                           probe=probes["gateway"])).summary() if half_rate > 0 else None
        g["half_rate"] = half
        g.update(_gateway_extras(gw))
        for load in loads.values():
            await load.close()
    ratio = g["calls_per_s"] / b["calls_per_s"] if b["calls_per_s"] else None
    p99_half = half["p99_ms"] if half else None
    return {
        "scenario": "B1", "gateway": g, "baseline": b, "ratio": _round(ratio),
        "ratio_of": "gateway calls/s / baseline calls/s",
        "bar": {"ratio_min": 0.35, "p99_ms_at_half_rate_max": 25.0},
        "meets_bar": bool(ratio is not None and ratio >= 0.35 and p99_half is not None and p99_half <= 25.0),
        "cps": n, "seconds": opts.measure_s, **_pinning(cores),
    }


async def b2(opts: Options) -> dict[str, Any]:
    """As B1 (still bridged to mosquitto) but answered by a republish rule inside the gateway."""
    cores = opts.plan()
    n = opts.n_cps
    with Workdir() as wd:
        mosquitto = wd.add(Mosquitto(wd.path, cores.server))
        gw = wd.add(Gateway(wd.path, cores.server, mosquitto.port, extra=ANSWER_RULE))
        base = wd.add(Baseline(wd.path, cores.server))
        loads = {"baseline": loadgen.Load(base.url), "gateway": loadgen.Load(gw.url)}
        await _ready(loads["baseline"], n, "baseline")
        await _ready(loads["gateway"], n, "gateway")
        probes = {"baseline": _probe({"server": base}, cores),
                  "gateway": _probe({"server": gw, "mosquitto": mosquitto}, cores)}
        drain = Drain(gw)
        totals = await loadgen.alternate(loads, opts.measure_s, opts.warmup_s, probes=probes,
                                         settle={"gateway": drain})
        g, b = totals["gateway"].summary(), totals["baseline"].summary()
        g.update(drain.report())
        g.update(_gateway_extras(gw))
        for load in loads.values():
            await load.close()
    ratio = g["calls_per_s"] / b["calls_per_s"] if b["calls_per_s"] else None
    return {
        "scenario": "B2", "gateway": g, "baseline": b, "ratio": _round(ratio),
        "ratio_of": "gateway calls/s / baseline calls/s",
        "bar": {"ratio_min": 0.50}, "meets_bar": bool(ratio is not None and ratio >= 0.50),
        "cps": n, "seconds": opts.measure_s, **_pinning(cores),
    }


async def b3(opts: Options) -> dict[str, Any]:
    """B2 with message_format_checking = all, against B2 itself: two gateways side by side on the
    same core and broker (charge point ids apart), measured in turn."""
    cores = opts.plan()
    n = opts.n_cps
    with Workdir() as wd:
        mosquitto = wd.add(Mosquitto(wd.path, cores.server))
        plain = wd.add(Gateway(wd.path, cores.server, mosquitto.port, name="gateway-b2", extra=ANSWER_RULE))
        checked = wd.add(Gateway(wd.path, cores.server, mosquitto.port, name="gateway-b3", checking="all",
                                 extra=ANSWER_RULE))
        loads = {"B2": loadgen.Load(plain.url, "A"), "B3": loadgen.Load(checked.url, "B")}
        await _ready(loads["B2"], n, "B2 gateway")
        await _ready(loads["B3"], n, "B3 gateway")
        probes = {"B2": _probe({"server": plain, "mosquitto": mosquitto, "other_gateway": checked}, cores),
                  "B3": _probe({"server": checked, "mosquitto": mosquitto, "other_gateway": plain}, cores)}
        drains = {"B2": Drain(plain), "B3": Drain(checked)}
        totals = await loadgen.alternate(loads, opts.measure_s, opts.warmup_s, probes=probes, settle=drains)
        g, b = totals["B3"].summary(), totals["B2"].summary()
        g.update(drains["B3"].report())
        b.update(drains["B2"].report())
        g.update(_gateway_extras(checked))
        b.update(_gateway_extras(plain))
        for load in loads.values():
            await load.close()
    ratio = g["calls_per_s"] / b["calls_per_s"] if b["calls_per_s"] else None
    return {
        "scenario": "B3", "gateway": g, "baseline": b, "ratio": _round(ratio),
        "ratio_of": "calls/s with message_format_checking = all / calls/s without (B2)",
        "bar": {"ratio_min": 0.90}, "meets_bar": bool(ratio is not None and ratio >= 0.90 and g["errors"] == 0),
        "cps": n, "seconds": opts.measure_s, **_pinning(cores),
    }
