"""B4: memory per connection, of the gateway and of the baseline endpoint holding the same."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from engine.bench import load as loadgen
from engine.bench.processes.endpoints import Baseline
from engine.bench.processes.gateway import Gateway
from engine.bench.processes.gateway_rules import ANSWER_RULE, boot_rule
from engine.bench.processes.machine import raise_nofile
from engine.bench.processes.mosquitto import Mosquitto
from engine.bench.processes.service import Service, Workdir
from engine.bench.scenarios.common import _gateway_extras, _pinning, _round
from engine.bench.scenarios.options import Options

B4_BAR_CONNECTIONS = 50_000
B4_BAR_KB = 30.0


async def _hold(url: str, server: Service, n: int, every: float, hold: float, warm: int,
                extras: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Connect `warm` charge points (boot, heartbeat), read the server's RSS, then `n` more; after all
    booted and `hold` seconds of heartbeats, read it again: the growth per connection. `extras` (the
    gateway's own figures) are read then too, before the charge points go."""
    warm_load = loadgen.Load(url, "W")
    warm_holder = loadgen.Holder(warm_load, every)
    await warm_load.connect(warm, on_connected=warm_holder.on_connected)
    await warm_holder.wait_booted(warm, 30)
    await asyncio.sleep(0.5)
    rss0 = server.rss_kb()
    load = loadgen.Load(url, "CP")
    holder = loadgen.Holder(load, every)
    t0 = time.perf_counter()
    connected = await load.connect(n, concurrency=256, deadline_s=max(60.0, n / 200),
                                   on_connected=holder.on_connected)
    connect_s = time.perf_counter() - t0
    await holder.wait_booted(connected["connected"], timeout=max(30.0, n / 500))
    booted_s = time.perf_counter() - t0
    await asyncio.sleep(hold)
    rss1 = server.rss_kb()
    alive = len(load.alive())
    out = {
        "connections": connected["connected"], "wanted": n, "alive_at_end": alive, "booted": holder.booted,
        "heartbeats": holder.heartbeats, "errors": holder.errors + warm_holder.errors,
        "lost": load.lost + warm_load.lost,
        "rss_before_kb": rss0, "rss_after_kb": rss1,
        "kb_per_connection": round((rss1 - rss0) / connected["connected"], 2) if connected["connected"] else None,
        "connect_s": round(connect_s, 2),
        "connects_per_s": round(connected["connected"] / connect_s, 1) if connect_s else None,
        "booted_s": round(booted_s, 2), "heartbeat_interval_s": every, "held_s": hold,
        "refused": connected["refused"], "failures": connected["failures"],
        "closed_by_server": dict(load.close_reasons + warm_load.close_reasons),
    }
    if extras is not None:
        out.update(extras())
    await load.close(timeout=30)
    await warm_load.close()
    return out


async def b4(opts: Options) -> dict[str, Any]:
    """N charge points connected, booted (the auto-accept rule) and heartbeating; RSS growth per
    connection of the gateway process, and of the baseline endpoint holding the same."""
    if opts.workers is not None and opts.workers > 1:
        from engine.bench.scenarios.memory_workers import b4_workers

        return await b4_workers(opts, opts.workers)
    cores = opts.plan()
    wanted = opts.connections or (B4_BAR_CONNECTIONS if opts.full else 500)
    nofile = raise_nofile()
    warm = max(10, min(200, wanted // 20))
    # this process and the gateway each hold one descriptor per connection (plus their own few)
    n = max(1, min(wanted, nofile - warm - 500))
    limited_by = f"RLIMIT_NOFILE (hard limit {nofile}: cannot be raised here)" if n < wanted else None
    every = float(min(60, max(2, round(n / 2000))))  # about 2,000 heartbeats/s in all at most
    hold = every * 1.2 if opts.full or opts.seconds is None else max(opts.seconds, every * 1.2)
    with Workdir() as wd:
        mosquitto = wd.add(Mosquitto(wd.path, cores.server))
        gw = wd.add(Gateway(wd.path, cores.server, mosquitto.port, extra=boot_rule(int(every)) + ANSWER_RULE))
        base = wd.add(Baseline(wd.path, cores.server))
        b = await _hold(base.url, base, n, every, hold, warm)
        g = await _hold(gw.url, gw, n, every, hold, warm, extras=lambda: _gateway_extras(gw))
    kb, base_kb = g["kb_per_connection"], b["kb_per_connection"]
    ratio = kb / base_kb if kb is not None and base_kb else None
    complete = g["connections"] == n and g["booted"] == n and g["alive_at_end"] == n
    meets = None
    if n >= B4_BAR_CONNECTIONS:
        meets = bool(complete and kb is not None and kb <= B4_BAR_KB)
    return {
        "scenario": "B4", "gateway": g, "baseline": b, "ratio": _round(ratio),
        "ratio_of": "gateway KB per connection / baseline KB per connection",
        "bar": {"connections": B4_BAR_CONNECTIONS, "kb_per_connection_max": B4_BAR_KB},
        "meets_bar": meets, "kb_per_connection_within_bar": bool(complete and kb is not None and kb <= B4_BAR_KB),
        "connections": n, "wanted": wanted, "limited_by": limited_by, **_pinning(cores),
    }
