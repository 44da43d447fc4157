"""The performance scenarios B1..B10 (docs/benchmarks.md), end to end on this machine; each returns one dict.

Every dict has `scenario`, `gateway` (its figures), `baseline` (what it is compared with, measured in
the same run; None where nothing is), `ratio` and `ratio_of` (what was divided by what), `bar` and
`meets_bar` (None when the run was smaller than the bar's scale), plus how it was run.

Processes: the gateway, mosquitto and the baseline endpoint on one core, the load (this process)
and the MQTT backend on the other (see engine/bench/processes). Loopback only; every phase is bounded.

options: Options (sizes, pinning); common: what the scenarios share; one module a scenario family:
round_trips (B1-B3), memory (B4), rules (B5), reload_under_load (B6), connect_storm (B7), dashboard (B8), durable (B9), cluster (B10).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from engine import eventloop
from engine.bench.processes.machine import Cores, raise_nofile
from engine.bench.scenarios.cluster import b10
from engine.bench.scenarios.connect_storm import b7
from engine.bench.scenarios.dashboard import b8
from engine.bench.scenarios.durable import b9
from engine.bench.scenarios.memory import b4
from engine.bench.scenarios.options import Options
from engine.bench.scenarios.reload_under_load import b6
from engine.bench.scenarios.round_trips import b1, b2, b3
from engine.bench.scenarios.rules import b5

SCENARIOS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10")


RUNNERS: dict[str, Callable[[Options], Any]] = {"B1": b1, "B2": b2, "B3": b3, "B4": b4, "B5": b5, "B6": b6, "B7": b7, "B8": b8, "B9": b9, "B10": b10}


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
