"""The scenarios of shared/spec/performance.md, end to end on this machine; each returns one dict.

Every dict has `scenario`, `gateway` (its figures), `baseline` (what it is compared with, measured in
the same run; None where nothing is), `ratio` and `ratio_of` (what was divided by what), `bar` and
`meets_bar` (None when the run was smaller than the bar's scale), plus how it was run.

Processes: the gateway, mosquitto and the baseline endpoint on one core, the load (this process)
and the MQTT backend on the other (see processes.py). Loopback only; every phase is bounded.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connectors.mqtt.client import MqttClient
from engine import eventloop
from engine.bench import load as loadgen
from engine.bench.processes import (
    ANSWER_RULE,
    CONNECTED_RULE,
    CONNECTED_TOPIC,
    Backend,
    Baseline,
    Cores,
    Gateway,
    Mosquitto,
    Service,
    Workdir,
    boot_rule,
    core_busy_seconds,
    plan_cores,
    raise_nofile,
    self_cpu_seconds,
)

SCENARIOS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7")


@dataclass
class Options:
    scale: str = "full"  # full: the spec's sizes; small: a quick run that only shows it works
    seconds: float | None = None  # each measured phase (default 10 s full, 2 s small; B6's reload phase 30 s full)
    warmup: float | None = None
    cps: int | None = None  # B1, B2, B3, B6: charge points
    connections: int | None = None  # B4, B7: charge points
    messages: int | None = None  # B5
    conn_rate: int | None = None  # B7: the gateway's max_conn_rate
    pin: bool = True
    cores: Cores | None = None  # planned once, before this process pins itself (see prepare)

    def plan(self) -> Cores:
        if self.cores is None:
            self.cores = plan_cores(self.pin)
        return self.cores

    @property
    def full(self) -> bool:
        return self.scale == "full"

    @property
    def measure_s(self) -> float:
        return self.seconds if self.seconds is not None else (10.0 if self.full else 2.0)

    @property
    def warmup_s(self) -> float:
        return self.warmup if self.warmup is not None else (2.0 if self.full else 0.5)

    @property
    def n_cps(self) -> int:
        return self.cps or (200 if self.full else 20)


def _probe(services: dict[str, Service], cores: Cores | None = None) -> Callable[[], dict[str, float]]:
    """CPU seconds of the given processes and of this one (the load) and, when pinned, how busy each of
    the two cores was in all (the rest of that is other tenants of the machine)."""
    def probe() -> dict[str, float]:
        out = {name: service.cpu_seconds() for name, service in services.items()}
        out["load"] = self_cpu_seconds()
        if cores is not None and cores.pinned:
            busy = core_busy_seconds()
            for label, core in (("server_core_busy", cores.server), ("load_core_busy", cores.load)):
                if core in busy:
                    out[label] = busy[core]
        return out

    return probe


def _pinning(cores: Cores) -> dict[str, Any]:
    return {"server_core": cores.server, "load_core": cores.load} if cores.pinned else {"pinned": False}


async def _ready(load: loadgen.Load, n: int, what: str) -> None:
    connected = await load.connect(n, deadline_s=60)
    if connected["connected"] != n:
        raise RuntimeError(f"only {connected['connected']} of {n} charge points connected to the {what}: {connected}")
    primed = await load.prime(timeout=30)
    if primed != n:
        raise RuntimeError(f"only {primed} of {n} charge points got an answer from the {what}")


def _gateway_extras(gw: Gateway) -> dict[str, Any]:
    """What the gateway counted itself: MQTT bridge overflow and backlog, drops, event loop lag."""
    try:
        lag = gw.metric("event_loop_lag_max_seconds")
        return {"bridge_dropped": int(gw.metric("mqtt_bridge_dropped") or 0),
                "bridge_buffered": int(gw.metric("mqtt_bridge_buffered_messages") or 0),
                "messages_dropped": int(gw.metric("messages_dropped") or 0),
                "loop_lag_max_ms": None if lag is None else round(lag * 1000, 1)}
    except OSError:
        return {}


class Drain:
    """After a measured turn: wait (bounded) until the gateway's MQTT bridge has sent its backlog, so
    the next turn (the baseline's, or the other gateway's, on the same core) does not pay for it.
    Records the largest backlog found and the time spent waiting."""

    def __init__(self, gw: Gateway, timeout: float = 30.0) -> None:
        self.gw = gw
        self.timeout = timeout
        self.backlog_max = 0
        self.seconds = 0.0

    async def __call__(self) -> None:
        start = time.perf_counter()
        first = True
        while time.perf_counter() - start < self.timeout:
            try:
                buffered = int(await asyncio.to_thread(self.gw.metric, "mqtt_bridge_buffered_messages") or 0)
            except OSError:
                buffered = 0
            if first:
                self.backlog_max = max(self.backlog_max, buffered)
                first = False
            if not buffered:
                break
            await asyncio.sleep(0.2)
        self.seconds += time.perf_counter() - start

    def report(self) -> dict[str, Any]:
        return {"bridge_backlog_after_turn_max": self.backlog_max, "bridge_drain_s": round(self.seconds, 2)}


def _round(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


# --- B1, B2: round trips against the baseline ------------------------------------------------------


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


# --- B4: memory per connection ---------------------------------------------------------------------


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


# --- B5: rules ---------------------------------------------------------------------------------------


def b5(opts: Options) -> dict[str, Any]:
    from engine.bench import rules_b5

    messages = opts.messages or (100_000 if opts.full else 10_000)
    r = rules_b5.run(messages)
    return {
        "scenario": "B5",
        "gateway": {"compiled_s": r["compiled_s"], "msgs_per_s": r["compiled_msgs_per_s"]},
        "baseline": {"handwritten_s": r["handwritten_s"],
                     "msgs_per_s": round(messages / r["handwritten_s"]) if r["handwritten_s"] else None},
        "ratio": r["ratio"], "ratio_of": "compiled rule time / hand-written Python time",
        "bar": {"ratio_max": r["bar"]}, "meets_bar": r["meets_bar"], "messages": messages, "rounds": 5,
    }


# --- B6: reload under load ----------------------------------------------------------------------------


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


# --- B7: connect storm ------------------------------------------------------------------------------


async def b7(opts: Options) -> dict[str, Any]:
    """N charge points connect at once against max_conn_rate: all connect in the end, every refusal is
    an HTTP 503, and the connections the gateway accepted follow its token bucket (bursts up to the
    rate, refilled at the rate). When each connection was accepted is the gateway's own stamp: a rule
    republishes every $events/client_connected's `connected_at` (ms) to the broker, where this process
    collects them. Neither side's event loop lag can move those stamps; under the storm both loops
    lag by a second or more, which clumps when the load sees its connections, or a poll's answer."""
    cores = opts.plan()
    wanted = opts.connections or (10_000 if opts.full else 500)
    rate = opts.conn_rate or (1000 if opts.full else 250)
    nofile = raise_nofile()
    n = max(1, min(wanted, nofile - 500))
    stamps: dict[str, int] = {}

    def on_stamp(topic: str, payload: bytes, qos: int, retain: bool) -> None:
        try:
            stamps[topic.rpartition("/")[2]] = int(payload)
        except ValueError:
            pass

    with Workdir() as wd:
        mosquitto = wd.add(Mosquitto(wd.path, cores.server))
        gw = wd.add(Gateway(wd.path, cores.server, mosquitto.port, max_conn_rate=rate,
                            extra=boot_rule(300) + CONNECTED_RULE))
        watcher = await MqttClient.connect("127.0.0.1", mosquitto.port, client_id="bench-b7", on_message=on_stamp)
        try:
            await watcher.subscribe([(CONNECTED_TOPIC + "/#", 0)])
            load = loadgen.Load(gw.url, "ST")
            holder = loadgen.Holder(load, 300.0)  # each boots as it connects (idle_timeout would close it otherwise)
            _, record = await loadgen.storm(gw.url, n, deadline_s=max(60.0, 4 * n / rate + 30),
                                            on_connected=holder.on_connected, load=load)
            await holder.wait_booted(record["connected"], timeout=30)
            for _ in range(100):  # the last stamps are a broker hop behind the last connection
                if len(stamps) >= record["connected"]:
                    break
                await asyncio.sleep(0.1)
        finally:
            watcher.abort()
        gateway_count = gw.connections_now()
        refused_by_gateway = int(gw.metric("handshakes_refused") or 0)
        lag = gw.metric("event_loop_lag_max_seconds")
        await load.close(timeout=30)
    times = sorted(stamp / 1000 for stamp in stamps.values())
    slack = 2 + 0.002 * rate  # the stamps are whole milliseconds
    check = loadgen.rate_check(times, rate, burst=rate, slack=slack)
    refused = record["refused"]
    only_503 = all(key.startswith("503 ") for key in refused)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    g = {
        "connected": record["connected"], "wanted": n, "booted": holder.booted, "seconds": record["seconds"],
        "gateway_connections": gateway_count, "max_conn_rate": rate, "refused": refused,
        "refused_by_gateway": refused_by_gateway, "failures": record["failures"],
        "max_in_1s": check["max_in_1s"], "bucket_excess": check["bucket_excess"],
        "mean_per_s": round(len(times) / span, 1) if span else None, "stamps": len(times),
        "loop_lag_max_ms": None if lag is None else round(lag * 1000, 1),
    }
    ok = (record["connected"] == n and gateway_count == n and len(times) == n and only_503
          and check["bucket_excess"] is not None and check["bucket_excess"] <= 0)
    return {
        "scenario": "B7", "gateway": g, "baseline": None,
        "ratio": _round(check["max_in_1s"] / rate),
        "ratio_of": "most connections the gateway accepted within any 1 s / max_conn_rate "
                    "(a token bucket: up to 2.0 right after a full bucket)",
        "bar": {"all_connected": True, "max_conn_rate": rate, "refusals": "HTTP 503 only",
                "token_bucket": "any interval of t seconds: at most rate x (1 + t) new connections"},
        "meets_bar": bool(ok) if n >= 10_000 else None, "honoured_at_this_scale": bool(ok),
        "connections": n, "wanted": wanted, **_pinning(cores),
    }


RUNNERS: dict[str, Callable[[Options], Any]] = {"B1": b1, "B2": b2, "B3": b3, "B4": b4, "B5": b5, "B6": b6, "B7": b7}


def run(name: str, opts: Options) -> dict[str, Any]:
    """One scenario, in an event loop of its own (uvloop when installed)."""
    runner = RUNNERS[name]
    if not asyncio.iscoroutinefunction(runner):
        return runner(opts)
    with eventloop.runner() as r:
        return r.run(runner(opts))


def prepare(opts: Options) -> Cores:
    """Before any scenario: the open-files limit up, the cores planned, and this process (the load)
    on its core."""
    raise_nofile()
    cores = opts.plan()
    if cores.load is not None:
        os.sched_setaffinity(0, {cores.load})
    return cores
