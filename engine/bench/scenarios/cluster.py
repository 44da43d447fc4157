"""B10 cluster: B1's round trip through HAProxy to 2 cluster nodes against B1 to 1 node, in the same
run; then the admin API listing every charge point of both nodes (one GET with limit=100, and paging
through all of them)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from engine.bench import load as loadgen
from engine.bench.processes.endpoints import Backend
from engine.bench.processes.gateway import Gateway
from engine.bench.processes.haproxy import HAProxy
from engine.bench.processes.mosquitto import Mosquitto
from engine.bench.processes.service import Workdir, free_port
from engine.bench.scenarios.common import Drain, _gateway_extras, _pinning, _probe, _ready, _round
from engine.bench.scenarios.memory_workers import LoadProcess
from engine.bench.scenarios.options import Options

CLUSTER = 'cluster { enable = true, request_timeout = 10s }\ngateway.ocpp.listeners.ws.default.proxy_protocol = true\n'
LISTED_FULL = 20_000
PAGE = 1000  # the page size when paging through every client


async def _listing(gw: Gateway, expected: int) -> dict[str, Any]:
    """One GET of the first 100 clients, then every page of PAGE, timed from this process."""
    start = time.perf_counter()
    status, body = await gw.api_async("GET", "/gateways/ocpp/clients?limit=100", timeout=60)
    first_s = time.perf_counter() - start
    if status != 200:
        raise RuntimeError(f"GET /gateways/ocpp/clients answered {status}: {body[:200]!r}")
    count = json.loads(body)["meta"]["count"]
    seen: set[str] = set()
    nodes: set[str] = set()
    page = 1
    start = time.perf_counter()
    while True:
        status, body = await gw.api_async("GET", f"/gateways/ocpp/clients?limit={PAGE}&page={page}", timeout=60)
        if status != 200:
            raise RuntimeError(f"page {page} answered {status}: {body[:200]!r}")
        answer = json.loads(body)
        seen.update(row["clientid"] for row in answer["data"])
        nodes.update(row["node"] for row in answer["data"])
        if not answer["meta"].get("hasnext") or not answer["data"]:
            break
        page += 1
    all_s = time.perf_counter() - start
    return {"clients": count, "expected": expected, "distinct_seen": len(seen), "nodes": len(nodes),
            "first_page_ms": round(first_s * 1000, 1), "all_pages_s": round(all_s, 3), "pages": page,
            "page_size": PAGE}


async def b10(opts: Options) -> dict[str, Any]:
    cores = opts.plan()
    n = opts.n_cps
    listed = opts.connections or (LISTED_FULL if opts.full else 200)
    with Workdir() as wd:
        mosquitto = wd.add(Mosquitto(wd.path, cores.server))
        backend = wd.add(Backend(wd.path, cores.load, mosquitto.port))
        single = wd.add(Gateway(wd.path, cores.server, mosquitto.port, name="gateway-single"))
        # each node: the default listener behind HAProxy (PROXY header), and a direct one for the listing's
        # idle charge points (HAProxy's descriptors would not hold 20,000 of them here)
        direct = [free_port(), free_port()]
        nodes = [wd.add(Gateway(wd.path, cores.server, mosquitto.port, name=f"gateway-node{i}",
                                extra=CLUSTER + f'gateway.ocpp.listeners.ws.direct {{ bind = "127.0.0.1:{port}", '
                                                'max_conn_rate = 1000000 }\n'))
                 for i, port in enumerate(direct)]
        proxy = wd.add(HAProxy(wd.path, cores.server, [gw.ocpp_port for gw in nodes]))
        loads = {"one_node": loadgen.Load(single.url, "S"), "two_nodes": loadgen.Load(proxy.url, "C")}
        await _ready(loads["one_node"], n, "single node")
        await _ready(loads["two_nodes"], n, "two nodes behind HAProxy")
        probes = {"one_node": _probe({"server": single, "mosquitto": mosquitto, "backend": backend}, cores),
                  "two_nodes": _probe({"node0": nodes[0], "node1": nodes[1], "haproxy": proxy,
                                       "mosquitto": mosquitto, "backend": backend}, cores)}
        drain_one, drain_two = Drain(single), Drain(nodes[0])
        settle: dict[str, Callable[[], Awaitable[Any]]] = {"one_node": drain_one, "two_nodes": drain_two}
        totals = await loadgen.alternate(loads, opts.measure_s, opts.warmup_s, probes=probes, settle=settle)
        g, b = totals["two_nodes"].summary(), totals["one_node"].summary()
        g.update(drain_two.report())
        b.update(drain_one.report())
        b.update(_gateway_extras(single))
        g["per_node"] = [gw.connections_now() for gw in nodes]
        await loads["one_node"].close()
        # the listing: top up to `listed` charge points over both nodes, straight to each node,
        extra = max(listed - n, 0)
        # from one load process per node (engine.bench.hold, as B4 with workers), each under the
        # open-file limit, booted (answered by the backend) and then quiet (heartbeat every 300 s)
        shares = [extra // 2 + extra % 2, extra // 2]
        idle = [await LoadProcess.start(f"ws://127.0.0.1:{port}/ocpp", share, 300.0, f"L{i}-", 20 + i)
                for i, (port, share) in enumerate(zip(direct, shares, strict=True))]
        try:
            for process, share in zip(idle, shares, strict=True):
                booted = await process.line(timeout=max(120.0, share / 50))
                if booted.get("connected") != share:
                    raise RuntimeError(f"only {booted.get('connected')} of {share} idle charge points: {booted}")
            g["listing"] = await _listing(nodes[1], n + extra)
        finally:
            for process in idle:
                await process.close()
        await loads["two_nodes"].close(timeout=60)
    ratio = g["calls_per_s"] / b["calls_per_s"] if b["calls_per_s"] else None
    first_ms = g["listing"]["first_page_ms"]
    at_scale = g["listing"]["clients"] >= LISTED_FULL
    return {
        "scenario": "B10", "gateway": g, "baseline": b, "ratio": _round(ratio),
        "ratio_of": "calls/s through HAProxy to 2 cluster nodes / calls/s to 1 node (same run, same cores)",
        "bar": {"listing_20000_first_page_ms_max": 1000.0},
        "meets_bar": (first_ms < 1000.0) if at_scale else None,
        "cps": n, "listed": n + extra, "seconds": opts.measure_s, **_pinning(cores),
    }
