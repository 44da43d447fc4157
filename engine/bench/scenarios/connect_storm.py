"""B7: a connect storm against the gateway's max_conn_rate."""

from __future__ import annotations

import asyncio
from typing import Any

from connectors.mqtt.client import MqttClient
from engine.bench import load as loadgen
from engine.bench.processes.gateway import Gateway
from engine.bench.processes.gateway_rules import (
    CONNECTED_RULE,
    CONNECTED_TOPIC,
    boot_rule,
)
from engine.bench.processes.machine import raise_nofile
from engine.bench.processes.mosquitto import Mosquitto
from engine.bench.processes.service import Workdir
from engine.bench.scenarios.common import _pinning, _round
from engine.bench.scenarios.options import Options


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
