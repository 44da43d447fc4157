"""The resource model, written once: connectors with health, actions with buffers.

A `Connector` owns a connection (or pool) to one system and knows whether
it is up: `connecting`, `connected`, `disconnected`. It reconnects by itself
and checks its health every `health_check_interval`.

A `BufferedAction` is what a rule calls: `run(output)` renders the
request at once (so a template error fails that output, counted, right away)
and queues it. A worker delivers the queue through the connector, in batches,
with `inflight_window` requests at a time. While the connector is down,
requests wait; a request not delivered within `request_ttl` is dropped as
expired; a full queue drops its oldest. Retriable failures (the target is
down, busy, or timed out) are retried with backoff (a target's Retry-After
lengthens a wait, up to MAX_BACKOFF); others fail. Nothing is dropped
without being counted:

    matched = success + failed + dropped + inflight + queuing

Where the queue is (`resource_opts.buffer_mode`: memory, a spill file, or each request on disk
before delivery), what a stop keeps for the next start and what a start reads back: the
DiskBuffer mixin, connectors/action_disk.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from connectors import action_store
from connectors.action_disk import ON_DISK, DiskBuffer, _Request, rendered_size
from engine.config.schema import ResourceOpts
from engine.log import Throttle

log = logging.getLogger("ocppgw.connector")

MAX_BACKOFF = 30.0
NO_RETRY = -1  # a ResourceOpts.max_retries the config cannot spell (0 there is "until request_ttl"): fail at once
WARN_EVERY = 10.0  # seconds: a target refusing every message logs one line per action this often


class SendError(Exception):
    """A delivery that did not succeed; `retriable` says whether trying again may help."""

    def __init__(self, message: str, retriable: bool, connection: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.connection = connection  # the connector itself is down: check its health
        self.retry_after = retry_after  # seconds the target asked us to wait (HTTP Retry-After)


class Connector:
    """Base of every connector: status, reconnect and health-check loop."""

    type = "?"

    def __init__(self, name: str, health_check_interval: float = 15.0) -> None:
        self.name = name
        self.status = "connecting"
        self.last_error = ""
        self.health_check_interval = health_check_interval
        self._up = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return f"{self.type}:{self.name}"

    async def connect(self) -> None:
        """Open the connection or pool; raise on failure."""

    async def disconnect(self) -> None:
        """Close what connect opened."""

    async def check(self) -> None:
        """Raise if the target does not answer."""

    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=f"connector {self.id}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.disconnect()
        self.status = "disconnected"
        self._up.clear()

    async def wait_up(self) -> None:
        await self._up.wait()

    def report_down(self, error: str) -> None:
        """A delivery found the target gone: mark it down and let the supervisor reconnect."""
        if self.status == "connected":
            log.warning("connector %s is down: %s", self.id, error)
        self.status, self.last_error = "disconnected", error
        self._up.clear()
        self._wake.set()

    async def _supervise(self) -> None:
        delay = 0.5
        while True:
            if self.status != "connected":
                try:
                    with contextlib.suppress(Exception):
                        await self.disconnect()
                    await self.connect()
                    await self.check()
                except Exception as exc:
                    if self.status != "disconnected" or self.last_error != str(exc):
                        log.warning("connector %s cannot connect: %s", self.id, exc)
                    self.status, self.last_error = "disconnected", str(exc) or type(exc).__name__
                    await self._sleep(delay)
                    delay = min(delay * 2, MAX_BACKOFF)
                    continue
                delay = 0.5
                if self.last_error:
                    log.info("connector %s is connected again", self.id)
                self.status, self.last_error = "connected", ""
                self._up.set()
            await self._sleep(self.health_check_interval)
            if self.status == "connected":
                try:
                    await self.check()
                except Exception as exc:
                    self.report_down(str(exc) or type(exc).__name__)

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)


@dataclass
class ActionMetrics:
    matched: int = 0
    success: int = 0
    failed: int = 0
    dropped_queue_full: int = 0
    dropped_expired: int = 0
    dropped_other: int = 0
    retried: int = 0
    inflight: int = 0
    queuing: int = 0

    @property
    def dropped(self) -> int:
        return self.dropped_queue_full + self.dropped_expired + self.dropped_other

    def as_dict(self) -> dict[str, int]:
        return {
            "matched": self.matched, "success": self.success, "failed": self.failed, "dropped": self.dropped,
            "dropped.queue_full": self.dropped_queue_full, "dropped.expired": self.dropped_expired,
            "dropped.other": self.dropped_other, "retried": self.retried, "inflight": self.inflight,
            "queuing": self.queuing,
        }


Render = Callable[[dict[str, Any]], Any]
Send = Callable[[list[Any]], Awaitable[None]]


class BufferedAction(DiskBuffer):
    def __init__(self, kind: str, name: str, connector: Connector, opts: ResourceOpts, render: Render, send: Send,
                 settings: Any = None) -> None:
        self.kind = kind
        self.name = name
        self.settings = settings  # as configured: a reload keeps an action whose settings did not change
        self.connector = connector
        self.opts = opts
        self._render = render
        self._send = send
        self.metrics = ActionMetrics()
        self._queue: deque[_Request] = deque()
        self.queued_bytes = 0  # the sizes of the requests in _queue (resource_opts.max_buffer_bytes)
        self.memory_bytes = 0  # the part of queued_bytes held in memory (buffer_seg_bytes)
        self._ready = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self._window = asyncio.Semaphore(opts.inflight_window)
        self._failure_lines = Throttle(WARN_EVERY)
        self._stopping = False
        self._taken: list[_Request] = []
        self.init_disk()

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def durable(self) -> bool:
        """A rule runs its later actions once this one's request is on disk."""
        return self.mode == "disk" and self.store is not None

    # --- rule side ------------------------------------------------------------------------

    def run(self, output: dict[str, Any]) -> asyncio.Future[int | None] | None:
        """Render and queue. With buffer_mode = disk, returns the future of the write: the rule
        runs its next actions once the request is on disk."""
        self.metrics.matched += 1
        try:
            data = self._render(output)
        except Exception:
            self.metrics.failed += 1  # the rule counts and logs it as a failed action too
            raise
        size = rendered_size(data)
        opts = self.opts
        if size > opts.max_buffer_bytes:  # larger than the whole buffer: never queued
            self.metrics.dropped_queue_full += 1
            return self._not_kept("larger than max_buffer_bytes")
        if self._queue and (len(self._queue) >= opts.max_buffer_messages
                            or self.queued_bytes + size > opts.max_buffer_bytes):
            if opts.buffer_overflow == "drop_newest":
                self.metrics.dropped_queue_full += 1
                return self._not_kept("the buffer is full (buffer_overflow = drop_newest)")
            while self._queue and (len(self._queue) >= opts.max_buffer_messages
                                   or self.queued_bytes + size > opts.max_buffer_bytes):
                self._finish(self._pop(), delivered=False)
                self.metrics.dropped_queue_full += 1
        request = _Request(data, time.monotonic() + opts.request_ttl, size, action_store.wall_clock())
        self._push(request)
        self.metrics.queuing += 1
        self._ready.set()
        return self.write_new(request)

    def _not_kept(self, why: str) -> asyncio.Future[int | None] | None:
        """A request dropped at once. With buffer_mode = disk, a failed write, so that the rule does not
        run its next actions (the answer to the charge point) for a message that is not kept."""
        if self.mode != "disk":
            return None
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        future.set_exception(action_store.DurableError(f"action {self.id}: request dropped: {why}"))
        return future

    def _push(self, request: _Request, left: bool = False) -> None:
        if left:
            self._queue.appendleft(request)
        else:
            self._queue.append(request)
        request.in_queue = True
        self.queued_bytes += request.size
        if request.data is not ON_DISK:
            self.memory_bytes += request.size

    # --- delivery ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._work(), name=f"action {self.id}")

    async def stop(self, flush_timeout: float = 5.0) -> None:
        """Deliver what is queued if the target is up (up to `flush_timeout`), then stop; what is
        left is kept on disk for the next start."""
        deadline = time.monotonic() + flush_timeout
        while (self._queue or self._deliveries) and self.connector.status == "connected" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self._stopping = True
        if self._worker:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for task in list(self._deliveries):
            task.cancel()
        await asyncio.gather(*self._deliveries, return_exceptions=True)
        for request in self._taken:
            if not request.handed:  # a reload removed the action: dropped (and counted) there
                self._finish(request, delivered=False)
        self._taken = []
        await self.keep_and_close()

    def _pop(self) -> _Request:
        """The oldest waiting request, out of the queue and its counts."""
        request = self._queue.popleft()
        request.in_queue = False
        self.queued_bytes -= request.size
        if request.data is not ON_DISK:
            self.memory_bytes -= request.size
        self.metrics.queuing -= 1
        return request

    def take_queue(self) -> list[_Request]:
        """Hand the waiting requests to a successor action (on reload)."""
        taken = [self._pop() for _ in range(len(self._queue))]
        self._taken = taken  # those no successor takes (the action was removed) leave the file at the stop
        return taken

    def give_queue(self, requests: list[_Request]) -> None:
        for request in reversed(requests):
            request.handed = True
            self.borrow(request)
            self._push(request, left=True)
        self.metrics.matched += len(requests)
        self.metrics.queuing += len(requests)
        self._ready.set()

    async def _work(self) -> None:
        while True:
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
                continue
            self._expire()
            if not self._queue:
                continue
            if self.connector.status != "connected":
                await self._wait_up_or_expiry()
                continue
            await self._window.acquire()
            batch = await self._take_batch()
            if not batch:
                self._window.release()
                continue
            task = asyncio.create_task(self._deliver(batch))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._queue and self._queue[0].deadline <= now:
            self._finish(self._pop(), delivered=False)
            self.metrics.dropped_expired += 1

    async def _wait_up_or_expiry(self) -> None:
        timeout = max(0.0, self._queue[0].deadline - time.monotonic())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.connector.wait_up(), timeout)

    async def _take_batch(self) -> list[_Request]:
        size = self.opts.batch_size
        if size > 1 and len(self._queue) < size and self.opts.batch_time > 0:
            # give the batch a moment to fill
            deadline = time.monotonic() + self.opts.batch_time
            while len(self._queue) < size and time.monotonic() < deadline:
                self._ready.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._ready.wait(), deadline - time.monotonic())
        self._expire()
        batch = [self._pop() for _ in range(min(size, len(self._queue)))]
        self.metrics.inflight += len(batch)
        try:
            return await self.ready_to_send(batch)
        except asyncio.CancelledError:
            for request in reversed(batch):  # stopped while waiting for the disk: still waiting
                self._push(request, left=True)
            self.metrics.inflight -= len(batch)
            self.metrics.queuing += len(batch)
            raise

    async def _deliver(self, batch: list[_Request]) -> None:
        metrics = self.metrics
        attempts = 0
        delay: float = self.opts.retry_interval
        try:
            while True:
                now = time.monotonic()
                live = [r for r in batch if r.deadline > now]
                if len(live) < len(batch):
                    expired = len(batch) - len(live)
                    metrics.dropped_expired += expired
                    metrics.inflight -= expired
                    self._finish_all([r for r in batch if r.deadline <= now], delivered=False)
                    batch = live
                if not batch:
                    return
                try:
                    await self._send([r.data for r in batch])
                except SendError as exc:
                    if exc.connection:
                        self.connector.report_down(str(exc))
                    attempts += 1
                    limit = self.opts.max_retries
                    if exc.retriable and (limit == 0 or attempts <= limit):
                        metrics.retried += 1
                        wait = delay
                        if exc.retry_after is not None:  # the target may ask for longer, within reason
                            wait = max(wait, min(exc.retry_after, MAX_BACKOFF))
                        wait = min(wait, max(0.0, min(r.deadline for r in batch) - time.monotonic()))
                        await asyncio.sleep(wait)
                        delay = min(delay * 2, MAX_BACKOFF)
                        if exc.connection:
                            await self._wait_up_or_batch_expiry(batch)
                        continue
                    metrics.failed += len(batch)
                    metrics.inflight -= len(batch)
                    self._finish_all(batch, delivered=False)
                    self._warn_failed(len(batch), exc)
                    return
                except Exception as exc:  # a bug in a connector must not kill the worker
                    metrics.dropped_other += len(batch)
                    metrics.inflight -= len(batch)
                    self._finish_all(batch, delivered=False)
                    log.exception("action %s: unexpected error, %d message(s) dropped: %s", self.id, len(batch), exc)
                    return
                metrics.success += len(batch)
                metrics.inflight -= len(batch)
                self._finish_all(batch, delivered=True)
                return
        except asyncio.CancelledError:
            metrics.inflight -= len(batch)
            if self._stopping:
                # stopped with this batch in flight: it waits again, and the stop keeps it on disk
                for request in reversed(batch):
                    self._push(request, left=True)
                metrics.queuing += len(batch)
            else:
                metrics.dropped_other += len(batch)
                self._finish_all(batch, delivered=False)
            raise
        finally:
            self._window.release()

    def _finish_all(self, batch: list[_Request], delivered: bool) -> None:
        for request in batch:
            self._finish(request, delivered)

    def _warn_failed(self, count: int, exc: SendError) -> None:
        """One line per failure, but at most one per WARN_EVERY (a webhook answering 400 to every
        message must not flood the log); the metrics count every one."""
        held = self._failure_lines.allow(weight=count)
        if held is None:
            return
        more = f" ({held} more failed since the last warning)" if held else ""
        log.warning("action %s: %d message(s) failed: %s%s", self.id, count, exc, more)

    async def _wait_up_or_batch_expiry(self, batch: list[_Request]) -> None:
        timeout = max(0.0, min(r.deadline for r in batch) - time.monotonic())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.connector.wait_up(), timeout)
