"""Garbage collector settings for a process that holds thousands of connections.

CPython collects its youngest generation after 700 new container objects. An
accepted charge point leaves about 75 long-lived ones behind (protocol,
transport, session, timers, queues), so a connect storm ran a collection every
few connections and a full one each time the heap grew by a quarter, and those
full passes are what froze the loop for up to a second. Measured with 10,000
charge points connecting to one gateway (docs/benchmarks.md, B7): the
collector took 2.2 s of 4.3 s CPU with the default, 0.4 s of 2.6 s with a
threshold of 10,000; its longest pause went from 525 ms to 32 ms.

A full pass still walks every object, so its pause grows with the number of
charge points (1.3 s over what 19,300 connections hold). `Freezer` keeps the connections' objects out
of it: once a few hundred charge points have connected, everything alive is
moved to the permanent generation (`gc.freeze()`, which costs nothing), and
full passes only walk what came after. Frozen objects are still freed by
reference counting; what freezing keeps are the reference cycles of closed
connections, so once closed connections add up to a quarter of those
connected (at least 1,000), the freezer thaws everything, collects once (the
pause a full pass would have cost anyway) and freezes again. What starting
built is frozen at once. A config replaced by a reload may leave a few cycles
in the frozen set until the next thaw; that is bounded and small.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

GEN0_THRESHOLD = 10_000

log = logging.getLogger("ocppgw.gc")


def tune() -> None:
    """Collect the young generation every 10,000 new objects; the older ones as CPython does."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


class Freezer:
    """`counts()` gives (charge points accepted since start, connected now); `check()` runs once a
    second from `start()`'s task."""

    def __init__(self, counts: Callable[[], tuple[int, int]], *, grow: int = 500, thaw_min: int = 1000,
                 thaw_fraction: float = 0.25, every: float = 1.0) -> None:
        self.counts = counts
        self.grow = grow
        self.thaw_min = thaw_min
        self.thaw_fraction = thaw_fraction
        self.every = every
        self.accepted_at_freeze = 0
        self.closed_at_thaw = 0
        self.freezes = 0
        self.thaws = 0
        self._task: asyncio.Task[None] | None = None

    def check(self) -> None:
        accepted, connected = self.counts()
        closed = accepted - connected
        if closed - self.closed_at_thaw >= max(self.thaw_min, self.thaw_fraction * connected):
            started = time.perf_counter()
            gc.unfreeze()
            found = gc.collect()
            gc.freeze()
            self.thaws += 1
            log.info("gc: %d connections closed since the last thaw: collected %d objects in %.0f ms, "
                     "%d frozen again", closed - self.closed_at_thaw, found,
                     (time.perf_counter() - started) * 1000, gc.get_freeze_count())
            self.closed_at_thaw, self.accepted_at_freeze = closed, accepted
        elif accepted - self.accepted_at_freeze >= self.grow:
            gc.freeze()
            self.freezes += 1
            self.accepted_at_freeze = accepted

    async def __aenter__(self) -> Freezer:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Freeze what starting built (modules, schemas, compiled rules: ~100k objects that live as
        long as the process), then check once a second."""
        gc.freeze()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            self.check()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        gc.unfreeze()
