"""What the node measures of its own process beyond prometheus_client's standard process_* collector:
the event loop lag.

`LoopLagMonitor` is started and stopped by the node; `engine.metrics` reads it at scrape time.
"""

from __future__ import annotations

import asyncio


# --- event loop lag ----------------------------------------------------------------------------


class LoopLagMonitor:
    """How late the event loop runs a timer: a sign of a blocked or overloaded loop.

    Every `interval` seconds a timer fires and notes how much later than due it
    ran. It is a self-rescheduling timer handle rather than a task, so a
    monitor nobody stops dies quietly with its loop. `last` is the latest
    sample, `max` the largest since start (both in seconds, never negative).
    """

    def __init__(self, interval: float = 0.5) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self.last = 0.0
        self.max = 0.0
        self.samples = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    @property
    def running(self) -> bool:
        return self._handle is not None

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start sampling on `loop` (default: the running loop). Starting a running monitor does nothing."""
        if self._handle is not None:
            return
        self._loop = loop or asyncio.get_running_loop()
        self._schedule(self._loop.time())

    def stop(self) -> None:
        """Stop sampling (idempotent); the values stay readable."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self, now: float) -> None:
        assert self._loop is not None
        self._due = now + self.interval
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        lag = max(0.0, now - self._due)  # a timer may fire a clock tick early
        self.last = lag
        self.max = max(self.max, lag)
        self.samples += 1
        self._schedule(now)
