"""What a measured phase of the bench load saw: latencies in a fixed histogram, counts, CPU; and the B7 rate check."""

from __future__ import annotations

import math
from typing import Any


class Histogram:
    """Latencies in 10 µs buckets up to 2 s (the last bucket holds everything slower)."""

    RESOLUTION = 100_000  # buckets per second
    SIZE = 200_001

    __slots__ = ("counts", "max", "n")

    def __init__(self) -> None:
        self.counts = [0] * self.SIZE
        self.n = 0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        i = int(seconds * 100_000)
        if i >= 200_000:
            i = 200_000
        self.counts[i] += 1
        self.n += 1
        if seconds > self.max:
            self.max = seconds

    def merge(self, other: Histogram) -> None:
        counts = self.counts
        for i, c in enumerate(other.counts):
            if c:
                counts[i] += c
        self.n += other.n
        self.max = max(self.max, other.max)

    def percentile_ms(self, p: float) -> float | None:
        if not self.n:
            return None
        target = max(1, math.ceil(p * self.n))
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= target:
                return round((i + 0.5) * 1000 / self.RESOLUTION, 3)
        return round(self.max * 1000, 3)


class Stats:
    """What one measured phase saw."""

    def __init__(self) -> None:
        self.hist = Histogram()
        self.ok = 0
        self.errors = 0  # CALLERRORs received
        self.timeouts = 0  # CALLs not answered within call_timeout
        self.late = 0  # answers to CALLs already given up on
        self.disconnects = 0
        self.elapsed = 0.0
        self.cpu: dict[str, float] = {}  # CPU seconds each probed process used while measuring

    def merge(self, other: Stats) -> None:
        self.hist.merge(other.hist)
        self.ok += other.ok
        self.errors += other.errors
        self.timeouts += other.timeouts
        self.late += other.late
        self.disconnects += other.disconnects
        self.elapsed += other.elapsed
        for name, seconds in other.cpu.items():
            self.cpu[name] = self.cpu.get(name, 0.0) + seconds

    def summary(self) -> dict[str, Any]:
        h = self.hist
        return {
            "calls": self.ok, "calls_per_s": round(self.ok / self.elapsed, 1) if self.elapsed else 0.0,
            "p50_ms": h.percentile_ms(0.50), "p99_ms": h.percentile_ms(0.99), "max_ms": round(h.max * 1000, 3),
            "errors": self.errors, "timeouts": self.timeouts, "disconnects": self.disconnects,
            "seconds": round(self.elapsed, 2),
            "cpu": {name: round(s / self.elapsed, 2) for name, s in self.cpu.items()} if self.elapsed else {},
        }


def rate_check(times: list[float], rate: float, burst: float, slack: float) -> dict[str, Any]:
    """Against the sorted times at which the server accepted each connection: the largest amount by
    which any interval holds more new connections than a token bucket allows (burst + rate x length
    + slack; <= 0: honoured throughout), and the most connections accepted within any 1 s.

    Over events i < j the interval [t_i, t_j] holds j - i + 1 of them, so the excess is the largest
    (j - rate t_j) - (i - rate t_i) + 1 - burst - slack: one pass keeping the smallest i - rate t_i."""
    if not times:
        return {"bucket_excess": None, "max_in_1s": 0}
    worst = -math.inf
    lowest = math.inf
    first = 0
    most = 0
    for j, t in enumerate(times):
        lowest = min(lowest, j - rate * t)
        worst = max(worst, (j - rate * t) - lowest + 1 - burst - slack)
        while t - times[first] > 1.0:
            first += 1
        most = max(most, j - first + 1)
    return {"bucket_excess": round(worst, 1), "max_in_1s": most}
