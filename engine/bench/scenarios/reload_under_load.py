"""B6: B1 at half rate while the config is reloaded every second."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from engine.bench import load as loadgen
from engine.bench.processes.endpoints import Backend
from engine.bench.processes.gateway import Gateway
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


def _reload_extra(flip: bool) -> str:
    """Two configs that differ in a rule and a gateway setting, so every reload changes something."""
    topic = "bench/reload/b" if flip else "bench/reload/a"
    timeout = "31s" if flip else "30s"
    return f'''
gateway.ocpp.dnstream.awaiting_timeout = {timeout}
rule_engine.rules.bench_reload {{
  sql = """SELECT * FROM "{topic}" """
  actions = [{{function = console}}]
}}
'''


async def b6(opts: Options) -> dict[str, Any]:
    """B1 at half rate while the config is reloaded every second (POST /api/v5/configs/reload): errors,
    disconnects, and p99 against B1's at half rate without reloads (measured just before)."""
    cores = opts.plan()
    n = opts.n_cps
    reload_s = opts.seconds if opts.seconds is not None else (30.0 if opts.full else 2.0)
    with Workdir() as wd:
        mosquitto = wd.add(Mosquitto(wd.path, cores.server))
        backend = wd.add(Backend(wd.path, cores.load, mosquitto.port))
        gw = wd.add(Gateway(wd.path, cores.server, mosquitto.port, extra=_reload_extra(False)))
        load = loadgen.Load(gw.url)
        await _ready(load, n, "gateway")
        probe = _probe({"server": gw, "mosquitto": mosquitto, "backend": backend}, cores)
        full = (await load.run(opts.measure_s, warmup=opts.warmup_s, probe=probe)).summary()
        await Drain(gw)()
        rate = full["calls_per_s"] / 2
        if rate <= 0:
            raise RuntimeError(f"the gateway answered nothing at full rate: {full}")
        quiet = (await load.run(opts.measure_s, warmup=min(opts.warmup_s, 1.0), rate=rate, probe=probe)).summary()
        lost_before = load.lost
        reloads: list[tuple[int, bool, float]] = []  # (HTTP status, reloaded?, seconds)

        async def reloader() -> None:
            flip = True
            while True:
                started = time.perf_counter()
                gw.write_config(_reload_extra(flip))
                flip = not flip
                status, body = await gw.api_async("POST", "/configs/reload", timeout=20.0)
                took = time.perf_counter() - started
                reloads.append((status, b'"reloaded"' in body, took))
                await asyncio.sleep(max(0.0, 1.0 - took))

        task = asyncio.create_task(reloader())
        try:
            during = (await load.run(reload_s, warmup=0.5, rate=rate, probe=probe)).summary()
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        during.update(_gateway_extras(gw))
        disconnects = load.lost - lost_before  # the measured window's and the warm-up's
        during["closed_by_server"] = dict(load.close_reasons)
        await load.close()
    failed = [r for r in reloads if r[0] != 200 or not r[1]]
    during.update({
        "rate": round(rate, 1), "reloads": len(reloads), "reloads_failed": len(failed),
        "reload_ms_max": round(max((r[2] for r in reloads), default=0) * 1000, 1),
        "full_rate_calls_per_s": full["calls_per_s"],
    })
    errors = during["errors"] + during["timeouts"] + len(failed)
    ratio = during["p99_ms"] / quiet["p99_ms"] if during["p99_ms"] and quiet["p99_ms"] else None
    return {
        "scenario": "B6", "gateway": during, "baseline": quiet, "ratio": _round(ratio),
        "ratio_of": "p99 while reloading every second / p99 at the same rate without reloads (B1 at half rate)",
        "bar": {"errors": 0, "disconnects": 0, "p99_ratio_max": 2.0},
        "meets_bar": bool(errors == 0 and disconnects == 0 and ratio is not None and ratio <= 2.0 and len(reloads) > 0),
        "errors": errors, "disconnects": disconnects, "cps": n, "seconds": reload_s, **_pinning(cores),
    }
