"""The node's monitor: every SAMPLE_INTERVAL seconds, one sample of its traffic and buffers into a
ring of RING_SIZE (an hour at 10 s), read by `GET /api/v5/monitor` and `/api/v5/monitor_current`
(EMQX's paths and field names). The same tick evaluates the alarms (engine/alarms.py).

A sample costs a few reads of counters the parts keep anyway (a pass over the actions, none over
the charge points): nothing is counted on the hot path for it.

    received, sent       OCPP-J frames from / to charge points in the interval
    dropped              messages dropped in the interval: by the gateway (messages_dropped), the
                         MQTT bridge (buffer full) and the actions (queue full, expired, other)
    *_msg_rate           the same per second
    connections          charge points connected at the sample
    bridge_buffered      messages waiting for (or in flight to) the MQTT broker
    actions_buffered     requests waiting in the actions' buffers
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

from engine.alarms import Alarms

log = logging.getLogger("ocppgw.monitor")

SAMPLE_INTERVAL = 10.0  # seconds; tests make it shorter
RING_SIZE = 360


class Monitor:
    def __init__(self, node: Any) -> None:
        self.node = node
        self.samples: deque[dict[str, Any]] = deque(maxlen=RING_SIZE)
        self.alarms = Alarms(node=node.settings.node.name)
        self.alarms.resize(node.settings.alarm.size_limit)
        self._last: tuple[float, int, int, int] | None = None  # monotonic time, received, sent, dropped
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._last = (time.monotonic(), *self._totals())
        self._task = asyncio.get_running_loop().create_task(self._run(), name="monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL)
            try:
                self.tick()
            except Exception:  # a bug here must not end the sampling (nor the node)
                log.exception("monitor sample failed")

    def tick(self) -> dict[str, Any]:
        sample = self.sample()
        self.samples.append(sample)
        self.alarms.evaluate(self.node)
        return sample

    def _totals(self) -> tuple[int, int, int]:
        node = self.node
        ctx = getattr(node, "ocpp", None)
        received = ctx.metrics.frames_in if ctx is not None else 0
        sent = ctx.metrics.frames_out if ctx is not None else 0
        dropped = sum(ctx.metrics.drops.values()) if ctx is not None else 0
        bridge = getattr(node, "bridge", None)
        dropped += getattr(bridge, "dropped", 0) if bridge is not None else 0
        resources = getattr(node, "resources", None)
        for action in (resources.actions.values() if resources is not None else ()):
            dropped += action.metrics.dropped
        return received, sent, dropped

    def gauges(self) -> dict[str, int]:
        node = self.node
        ctx = getattr(node, "ocpp", None)
        bridge = getattr(node, "bridge", None)
        resources = getattr(node, "resources", None)
        actions = resources.actions.values() if resources is not None else ()
        return {
            "connections": len(ctx.sessions) if ctx is not None else 0,
            "bridge_buffered": bridge.buffered if bridge is not None else 0,
            "actions_buffered": sum(a.metrics.queuing for a in actions),
        }

    def sample(self) -> dict[str, Any]:
        now = time.monotonic()
        totals = self._totals()
        then, *before = self._last if self._last is not None else (now, *totals)
        self._last = (now, *totals)
        elapsed = max(now - then, 1e-3)
        # a reload may replace the actions and their counters: a count never goes below zero
        received, sent, dropped = (max(0, t - b) for t, b in zip(totals, before))
        return {
            "time_stamp": int(time.time() * 1000),
            **self.gauges(),
            "received": received,
            "sent": sent,
            "dropped": dropped,
            "received_msg_rate": round(received / elapsed, 3),
            "sent_msg_rate": round(sent / elapsed, 3),
            "dropped_msg_rate": round(dropped / elapsed, 3),
        }

    def latest(self, seconds: float) -> list[dict[str, Any]]:
        since = time.time() * 1000 - seconds * 1000
        return [s for s in self.samples if s["time_stamp"] >= since]

    def current(self) -> dict[str, Any]:
        """The last sample's rates with the gauges as they are now (zero rates before the first tick)."""
        last = self.samples[-1] if self.samples else {}
        return {
            "time_stamp": int(time.time() * 1000),
            **self.gauges(),
            "received_msg_rate": last.get("received_msg_rate", 0),
            "sent_msg_rate": last.get("sent_msg_rate", 0),
            "dropped_msg_rate": last.get("dropped_msg_rate", 0),
        }
