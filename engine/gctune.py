"""Garbage collector settings for a process that holds thousands of connections.

CPython collects its youngest generation after 700 new container objects. An
accepted charge point leaves about 85 long-lived ones behind (protocol,
transport, session, timers, queues), so a connect storm ran a collection every
few connections and a full one each time the heap grew by a quarter, and those
full passes are what froze the loop for up to a second. Measured with 10,000
charge points connecting to one gateway (docs/benchmarks.md, B7): the
collector took 2.2 s of 4.3 s CPU with the default, 0.4 s of 2.6 s with a
threshold of 10,000; its longest pause went from 525 ms to 32 ms.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 10_000


def tune() -> None:
    """Collect the young generation every 10,000 new objects; the older ones as CPython does."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
