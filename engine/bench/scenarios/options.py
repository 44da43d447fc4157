"""How a bench run is sized and pinned: the Options every scenario takes."""

from __future__ import annotations

from dataclasses import dataclass

from engine.bench.processes.machine import Cores, plan_cores


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
    workers: int | None = None  # B4: the gateway's node.workers (more than 1: engine/bench/scenarios/memory_workers.py)
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
