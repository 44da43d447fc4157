"""What the scenarios share: CPU probes, readiness, the gateway's own figures, draining the
bridge between measured turns, and the small pieces of every result dict."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from engine.bench import load as loadgen
from engine.bench.processes.gateway import Gateway
from engine.bench.processes.machine import Cores, core_busy_seconds, self_cpu_seconds
from engine.bench.processes.service import Service


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
