"""What a simulated charge point holds: connectors, their transactions, and sleeps that can be cut short.

Plain objects with `__slots__` (a fleet holds a great many of them) and no I/O.

Energy: each connector has a meter register (Wh) that advances with the
session's power over time, so every MeterValues, StopTransaction and
TransactionEvent reads a value at least the previous one.
"""

from __future__ import annotations

import asyncio
from typing import Any


def resolve(fut: asyncio.Future[Any], value: Any) -> None:
    """Set a future's result unless it is done already."""
    if not fut.done():
        fut.set_result(value)


def retrieve(fut: asyncio.Future[Any]) -> None:
    """A done callback that reads the exception nobody awaits (asyncio logs it otherwise)."""
    if not fut.cancelled():
        fut.exception()


class Waiter:
    """Sleeps that `wake()` cuts short (a stop, a remote start)."""

    __slots__ = ("futures", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.futures: set[asyncio.Future[bool]] = set()

    async def sleep(self, seconds: float) -> bool:
        """True if woken before `seconds` passed."""
        fut: asyncio.Future[bool] = self.loop.create_future()
        self.futures.add(fut)
        handle = self.loop.call_later(max(0.0, seconds), resolve, fut, False)
        try:
            return await fut
        finally:
            handle.cancel()
            self.futures.discard(fut)

    def wake(self) -> None:
        for fut in list(self.futures):
            resolve(fut, True)


class Tx:
    __slots__ = ("id", "last_sample", "meter_start", "remote_start_id", "seq", "stop_reason", "tag")

    def __init__(self, tx_id: Any, tag: str, meter_start: int, now: float, remote_start_id: int | None = None) -> None:
        self.id = tx_id
        self.tag = tag
        self.meter_start = meter_start
        self.seq = 0
        self.stop_reason: str | None = None
        self.last_sample = now
        self.remote_start_id = remote_start_id

    def next_seq(self) -> int:
        seq = self.seq
        self.seq += 1
        return seq


class Connector:
    """1.6: a connector; 2.x: an EVSE with one connector. `status` is a 1.6 ChargePointStatus."""

    __slots__ = (
        "charging",
        "id",
        "last",
        "limit_w",
        "operative",
        "pending_operative",
        "power",
        "register",
        "remote",
        "reservation",
        "starting",
        "status",
        "task",
        "tx",
        "waiter",
    )

    def __init__(self, connector_id: int, register: float, loop: asyncio.AbstractEventLoop) -> None:
        self.id = connector_id
        self.status = "Available"
        self.operative = True
        self.pending_operative: bool | None = None  # a ChangeAvailability waiting for the session to end
        self.reservation: tuple[int, str, asyncio.TimerHandle | None] | None = None  # (id, tag, expiry timer)
        self.tx: Tx | None = None
        self.register = register  # Wh, only ever increases
        self.power = 0.0
        self.limit_w: float | None = None  # from a charging profile
        self.last = 0.0
        self.charging = False
        self.waiter = Waiter(loop)
        self.remote: tuple[str, int | None] | None = None  # a remote start to run: (tag, remoteStartId)
        self.task: asyncio.Task[None] | None = None
        self.starting = False  # between Authorize and the transaction's start

    def advance(self, now: float) -> None:
        if self.charging:
            self.register += self.effective_power() * max(0.0, now - self.last) / 3600.0
        self.last = now

    def effective_power(self) -> float:
        if not self.charging:
            return 0.0
        return self.power if self.limit_w is None else min(self.power, self.limit_w)

    def free(self) -> bool:
        return self.operative and self.tx is None and not self.starting and self.remote is None
