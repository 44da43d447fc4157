"""B4 with workers (`bench --scenario B4 --workers N`): the gateway runs `node.workers = N` and the
charge points come from several load processes (`engine.bench.hold`), so that no process, the
gateway's workers nor the load's, needs more descriptors than the open-file limit allows. The
memory per connection is the growth of the summed RSS of every worker process."""

from __future__ import annotations

import asyncio
import math
import sys
import time
from typing import Any

import orjson

from engine.bench import load as loadgen
from engine.bench.processes.errors import BenchError
from engine.bench.processes.gateway import Gateway
from engine.bench.processes.gateway_rules import ANSWER_RULE, boot_rule
from engine.bench.processes.machine import raise_nofile, rss_kb
from engine.bench.processes.mosquitto import Mosquitto
from engine.bench.processes.service import Workdir
from engine.bench.scenarios.options import Options

B4_BAR_CONNECTIONS = 50_000
B4_BAR_KB = 30.0
PER_LOAD_PROCESS = 15_000  # charge points per load process, well under a hard open-file limit of 20,000


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except OSError:
        return out
    for child in children:
        out += [child, *descendants(child)]
    return out


def worker_pids(supervisor: int) -> list[int]:
    pids = []
    for pid in descendants(supervisor):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if b"--worker" in args:
            pids.append(pid)
    return pids


def workers_rss_kb(supervisor: int) -> tuple[int, int]:
    """(summed RSS of the workers, how many)."""
    pids = worker_pids(supervisor)
    total = 0
    for pid in pids:
        try:
            total += rss_kb(pid)
        except (OSError, BenchError):
            pass
    return total, len(pids)


class LoadProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, url: str, n: int, every: float, prefix: str, net: int) -> LoadProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "engine.bench.hold", url, str(n), str(every), prefix, str(net),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        return cls(proc)

    async def line(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not raw:
            raise BenchError(f"a load process ended early (exit {await self.proc.wait()})")
        return dict(orjson.loads(raw))

    async def report(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"report\n")
        await self.proc.stdin.drain()
        return await self.line(60)

    async def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 60)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()


def _sum(reports: list[dict[str, Any]], key: str) -> int:
    return sum(int(r.get(key, 0)) for r in reports)


async def b4_workers(opts: Options, workers: int) -> dict[str, Any]:
    wanted = opts.connections or (B4_BAR_CONNECTIONS if opts.full else 500)
    nofile = raise_nofile()
    every = float(min(60, max(2, round(wanted / 2000))))  # about 2,000 heartbeats/s in all at most
    hold = every * 1.2 if opts.full or opts.seconds is None else max(opts.seconds, every * 1.2)
    per_process = min(PER_LOAD_PROCESS, max(1, nofile - 1000))
    loads = max(1, math.ceil(wanted / per_process))
    with Workdir() as wd:
        mosquitto = wd.add(Mosquitto(wd.path, None))
        extra = f"node.workers = {workers}\n" + boot_rule(int(every)) + ANSWER_RULE
        gw = wd.add(Gateway(wd.path, None, mosquitto.port, extra=extra))
        await _all_workers(gw.pid, workers)
        url = gw.url
        warm = loadgen.Load(url, "W")
        warm_holder = loadgen.Holder(warm, every)
        await warm.connect(workers * 20, on_connected=warm_holder.on_connected)
        await warm_holder.wait_booted(workers * 20, 30)
        await asyncio.sleep(1.0)
        rss0, counted = workers_rss_kb(gw.pid)
        t0 = time.perf_counter()
        shares = [wanted // loads + (1 if i < wanted % loads else 0) for i in range(loads)]
        procs = [await LoadProcess.start(url, share, every, f"L{i}-", i + 1) for i, share in enumerate(shares)]
        try:
            booted = [await p.line(timeout=max(300.0, wanted / 50)) for p in procs]
            booted_s = time.perf_counter() - t0
            await asyncio.sleep(hold)
            rss1, counted_after = workers_rss_kb(gw.pid)
            reports = [await p.report() for p in procs]
        finally:
            for p in procs:
                await p.close()
            await warm.close()
    connected = _sum(booted, "connected")
    alive = _sum(reports, "alive")
    kb = round((rss1 - rss0) / connected, 2) if connected else None
    complete = connected == wanted and _sum(reports, "booted") == wanted and alive == wanted
    return {
        "scenario": "B4", "workers": workers, "worker_processes": [counted, counted_after],
        "load_processes": loads, "connections": connected, "wanted": wanted, "alive_at_end": alive,
        "booted": _sum(reports, "booted"), "heartbeats": _sum(reports, "heartbeats"),
        "errors": _sum(reports, "errors"), "lost": _sum(reports, "lost"),
        "rss_before_kb": rss0, "rss_after_kb": rss1, "kb_per_connection": kb,
        "kb_per_connection_of": "growth of the summed RSS of every worker process / connections",
        "booted_s": round(booted_s, 2), "heartbeat_interval_s": every, "held_s": hold,
        "refused": [b["refused"] for b in booted], "failures": [b["failures"] for b in booted],
        "bar": {"connections": B4_BAR_CONNECTIONS, "kb_per_connection_max": B4_BAR_KB},
        "meets_bar": bool(complete and wanted >= B4_BAR_CONNECTIONS and kb is not None and kb <= B4_BAR_KB),
        "kb_per_connection_within_bar": bool(complete and kb is not None and kb <= B4_BAR_KB),
        "open_file_limit": nofile, "pinned": False,
    }


async def _all_workers(supervisor: int, workers: int, timeout: float = 60.0) -> None:
    """Every worker process up (the gateway's readiness check reached one of them)."""
    deadline = time.monotonic() + timeout
    while len(worker_pids(supervisor)) < workers:
        if time.monotonic() > deadline:
            raise BenchError(f"{len(worker_pids(supervisor))} of {workers} worker processes came up")
        await asyncio.sleep(0.2)
    await asyncio.sleep(2.0)  # their listeners and bridges: a moment after the process


__all__ = ["b4_workers"]
