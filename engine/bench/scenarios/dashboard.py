"""B8: what an open dashboard costs the gateway.

N charge points connected, booted (the auto-accept rule) and heartbeating; the gateway's CPU is
measured in turns, alternately without and with a dashboard's load: the charge point list polled
every 2 s (a page of 50, and a search by `like_clientid`), the monitor and the alarms every 10 s,
and one live trace (SSE, `/gateways/ocpp/clients/{cid}/frames`) open on one charge point. The turns
alternate (quiet, dashboard, quiet, dashboard...) so a drift of the machine's other load falls on
both alike. The bar: the gateway's CPU rises by less than 5 percentage points of one core.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from typing import Any

from engine.bench import load as loadgen
from engine.bench.processes.gateway import ADMIN, Gateway
from engine.bench.processes.gateway_rules import ANSWER_RULE, boot_rule
from engine.bench.processes.machine import raise_nofile
from engine.bench.processes.mosquitto import Mosquitto
from engine.bench.processes.service import Workdir
from engine.bench.scenarios.common import _gateway_extras, _pinning, _round
from engine.bench.scenarios.options import Options

B8_BAR_CONNECTIONS = 10_000
B8_BAR_RISE = 5.0  # percentage points of one core
LIST_EVERY = 2.0
MONITOR_EVERY = 10.0


class Dashboard:
    """The requests of one open dashboard page, counted."""

    def __init__(self, gw: Gateway, n: int, traced: str) -> None:
        self.gw = gw
        self.n = n
        self.traced = traced
        self.requests = 0
        self.errors = 0
        self.slowest_ms = 0.0
        self.trace_status: int | None = None
        self.trace_bytes = 0

    async def _get(self, path: str) -> None:
        start = time.perf_counter()
        try:
            status, _ = await self.gw.api_async("GET", path, timeout=10)
        except (OSError, TimeoutError):
            status = 0
        self.slowest_ms = max(self.slowest_ms, (time.perf_counter() - start) * 1000)
        self.requests += 1
        if status != 200:
            self.errors += 1

    async def _lists(self) -> None:
        page = 1
        pages = max(1, -(-self.n // 50))
        while True:
            await self._get(f"/gateways/ocpp/clients?page={page}&limit=50")
            await self._get(f"/gateways/ocpp/clients?like_clientid=CP{page % 100}&limit=50")
            page = page % pages + 1
            await asyncio.sleep(LIST_EVERY)

    async def _monitor(self) -> None:
        while True:
            await self._get("/monitor?latest=3600")
            await self._get("/monitor_current")
            await self._get("/alarms?activated=true")
            await asyncio.sleep(MONITOR_EVERY)

    async def _trace(self) -> None:
        """One SSE stream held open and read as it comes (the trace helper's endpoint)."""
        auth = base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()
        reader, writer = await asyncio.open_connection("127.0.0.1", self.gw.dashboard_port)
        try:
            writer.write(f"GET /api/v5/gateways/ocpp/clients/{self.traced}/frames HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         f"Authorization: Basic {auth}\r\nAccept: text/event-stream\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            self.trace_status = int(head.split(b" ", 2)[1])
            if self.trace_status != 200:
                return
            while chunk := await reader.read(65536):
                self.trace_bytes += len(chunk)
        finally:
            writer.close()

    @contextlib.asynccontextmanager
    async def open(self) -> Any:
        tasks = [asyncio.create_task(work()) for work in (self._lists, self._monitor, self._trace)]
        try:
            yield self
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def report(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "slowest_ms": round(self.slowest_ms, 1),
                "trace_status": self.trace_status, "trace_bytes": self.trace_bytes}


async def _turn(gw: Gateway, seconds: float) -> float:
    """The gateway's CPU over `seconds`, in percent of one core."""
    before, start = gw.cpu_seconds(), time.perf_counter()
    await asyncio.sleep(seconds)
    return (gw.cpu_seconds() - before) / (time.perf_counter() - start) * 100


async def b8(opts: Options) -> dict[str, Any]:
    cores = opts.plan()
    wanted = opts.connections or (B8_BAR_CONNECTIONS if opts.full else 200)
    nofile = raise_nofile()
    n = max(1, min(wanted, nofile - 500))
    every = float(min(60, max(2, round(n / 2000))))  # about 2,000 heartbeats/s in all at most
    turn_s = opts.measure_s
    rounds = 3 if opts.full else 1
    with Workdir() as wd:
        mosquitto = wd.add(Mosquitto(wd.path, cores.server))
        gw = wd.add(Gateway(wd.path, cores.server, mosquitto.port, extra=boot_rule(int(every)) + ANSWER_RULE))
        load = loadgen.Load(gw.url, "CP")
        holder = loadgen.Holder(load, every)
        connected = await load.connect(n, concurrency=256, deadline_s=max(60.0, n / 200),
                                       on_connected=holder.on_connected)
        await holder.wait_booted(connected["connected"], timeout=max(30.0, n / 500))
        await asyncio.sleep(max(opts.warmup_s, every))  # heartbeats spread over their interval
        quiet: list[float] = []
        busy: list[float] = []
        dashboard = Dashboard(gw, connected["connected"], "CP0")
        for _ in range(rounds):
            quiet.append(await _turn(gw, turn_s))
            async with dashboard.open():
                busy.append(await _turn(gw, turn_s))
        extras = _gateway_extras(gw)
        alive = len(load.alive())
        await load.close(timeout=30)
    cpu_quiet, cpu_busy = sum(quiet) / len(quiet), sum(busy) / len(busy)
    rise = cpu_busy - cpu_quiet
    complete = connected["connected"] == n and alive == n
    g = {
        "connections": connected["connected"], "booted": holder.booted, "alive_at_end": alive,
        "heartbeat_interval_s": every, "turn_s": turn_s, "rounds": rounds,
        "cpu_quiet_pct": _round(cpu_quiet, 2), "cpu_dashboard_pct": _round(cpu_busy, 2),
        "cpu_rise_points": _round(rise, 2),
        "cpu_rise_relative_pct": _round(rise / cpu_quiet * 100, 1) if cpu_quiet else None,
        "turns_quiet_pct": [round(x, 2) for x in quiet], "turns_dashboard_pct": [round(x, 2) for x in busy],
        "dashboard": dashboard.report(), "cpu": {"gateway_quiet_pct": _round(cpu_quiet, 2)}, **extras,
    }
    meets = bool(complete and rise < B8_BAR_RISE) if n >= B8_BAR_CONNECTIONS else None
    return {
        "scenario": "B8", "gateway": g, "baseline": None, "ratio": _round(cpu_busy / cpu_quiet) if cpu_quiet else None,
        "ratio_of": "gateway CPU with the dashboard open / without", "bar": {
            "connections": B8_BAR_CONNECTIONS, "cpu_rise_points_max": B8_BAR_RISE},
        "meets_bar": meets, "rise_within_bar": bool(complete and rise < B8_BAR_RISE), "connections": n,
        "wanted": wanted, **_pinning(cores),
    }
