"""One load process of B4 with workers: holds its share of the charge points (connected, booted,
heartbeating), each process under the open-file limit. Driven over standard input and output, one
JSON line per phase: it prints `booted` when its charge points are, `report` on a line "report",
and closes them all on end of input.

    python -m engine.bench.hold URL N HEARTBEAT_S PREFIX SOURCE_NET
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson

from engine import eventloop
from engine.bench import load as loadgen
from engine.bench.processes.machine import raise_nofile


async def hold(url: str, n: int, every: float, prefix: str, net: int) -> None:
    raise_nofile()
    load = loadgen.Load(url, prefix)
    # a source network of its own (127.<net>.0.x): the ephemeral ports run out near 28,000 per source
    load.source_for = lambda index, per_source=loadgen.PER_SOURCE_ADDRESS: (  # type: ignore[method-assign]
        f"127.{net}.0.{1 + index // per_source}")
    holder = loadgen.Holder(load, every)
    t0 = time.perf_counter()
    connected = await load.connect(n, concurrency=128, deadline_s=max(60.0, n / 40), on_connected=holder.on_connected)
    connect_s = time.perf_counter() - t0
    await holder.wait_booted(connected["connected"], timeout=max(60.0, n / 100))

    def say(phase: str, **fields: object) -> None:
        sys.stdout.write(orjson.dumps({"phase": phase, **fields}).decode() + "\n")
        sys.stdout.flush()

    say("booted", connected=connected["connected"], booted=holder.booted, connect_s=round(connect_s, 2),
        booted_s=round(time.perf_counter() - t0, 2), refused=connected["refused"], failures=connected["failures"])
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if line.strip() != "report":
            break
        say("report", alive=len(load.alive()), booted=holder.booted, heartbeats=holder.heartbeats,
            errors=holder.errors, lost=load.lost, closed_by_server=dict(load.close_reasons))
    await load.close(timeout=30)


def main() -> None:
    url, n, every, prefix, net = sys.argv[1:6]
    with eventloop.runner() as runner:
        runner.run(hold(url, int(n), float(every), prefix, int(net)))


if __name__ == "__main__":
    main()
