"""The disk side of an action's buffer (`resource_opts.buffer_mode`), mixed into BufferedAction.

- `memory_only`: requests are in memory; a stop writes what is left to the action's file.
- `volatile_offload`: the first `buffer_seg_bytes` of the buffer are in memory, the rest in a
  spill file emptied at every start (not kept after a crash: EMQX's meaning); a stop keeps all.
- `disk`: each request is written (and fsynced, `node.durable_sync`) before it is delivered and
  removed once the target answered it; the first `buffer_seg_bytes` are kept in memory as well.

Whatever the mode, a start delivers first what the file holds (in order; counted in `matched`
and `queuing`; those the target then takes are counted in `redelivered`: they may have reached
it before the node went down, at least once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connectors import action_store
from connectors.action_store import ActionStore, DurableError
from engine.log import Throttle

if TYPE_CHECKING:
    from engine.config.schema import ResourceOpts

log = logging.getLogger("ocppgw.connector")

ON_DISK: Any = object()  # a request's data while only its file holds it (beyond buffer_seg_bytes)


@dataclass(slots=True, eq=False)
class _Request:
    data: Any
    deadline: float
    size: int = 0  # bytes, roughly: what max_buffer_bytes counts
    enqueued: float = 0.0  # wall clock: request_ttl counts from it after a restart too
    seq: int = 0  # its number in `store`
    store: ActionStore | None = None  # the file it is in, until it is answered
    written: asyncio.Future[int | None] | None = None  # the write to `store`, while it runs
    restored: bool = False  # read back at the start: it may have been delivered before
    offload: bool = False  # its data leaves memory once it is on disk
    in_queue: bool = False
    handed: bool = False  # a reload gave it to the action's successor


def rendered_size(data: Any) -> int:
    """About how many bytes a rendered request holds: its text and bytes, 8 per other value."""
    if isinstance(data, (bytes, bytearray)):
        return len(data)
    if isinstance(data, str):
        return len(data.encode("utf-8", "surrogatepass"))
    if isinstance(data, dict):
        return sum(rendered_size(k) + rendered_size(v) for k, v in data.items())
    if isinstance(data, (list, tuple)):
        return 8 + sum(rendered_size(v) for v in data)
    return 8


class DiskBuffer:
    @property
    def id(self) -> str:
        raise NotImplementedError

    if TYPE_CHECKING:
        kind: str
        name: str
        opts: ResourceOpts
        metrics: Any
        memory_bytes: int
        _queue: deque[_Request]

        def _push(self, request: _Request, left: bool = False) -> None: ...

    def init_disk(self) -> None:
        self.mode: str = getattr(self.opts, "buffer_mode", "memory_only")
        self.store: ActionStore | None = None  # the action's file (disk; or kept by a stop)
        self.spill: ActionStore | None = None  # volatile_offload's spill file
        self.keep_path: Path | None = None
        self.sync = "full"
        self._borrowed: list[ActionStore] = []  # a predecessor's files its requests are in
        self.restored = 0
        self.redelivered = 0
        self.write_errors = 0
        self._write_lines = Throttle(10.0)

    # --- counters for metrics ----------------------------------------------------------

    @property
    def disk_items(self) -> int:
        return sum(s.items for s in (self.store, self.spill) if s is not None)

    @property
    def disk_bytes(self) -> int:
        return sum(s.bytes for s in (self.store, self.spill) if s is not None)

    # --- opening -------------------------------------------------------------------------

    def open_disk(self, path: Path, spill_path: Path, sync: str) -> None:
        """Open the files the mode needs and queue what a previous run left. Raises DurableError."""
        self.keep_path, self.sync = path, sync
        self.store, kept = action_store.acquire(path, sync, create=self.mode == "disk")
        try:
            if self.mode == "volatile_offload":
                self.spill, _ = action_store.acquire(spill_path, sync, fresh=True)
        except DurableError:
            self.discard_disk()
            raise
        if kept:
            self._restore(kept)

    def _restore(self, kept: list[action_store.StoredRequest]) -> None:
        now_wall, now = action_store.wall_clock(), time.monotonic()
        ttl = self.opts.request_ttl
        for seq, data, enqueued in kept:
            request = _Request(data, now + (enqueued + ttl - now_wall), rendered_size(data), enqueued,
                               seq=seq, store=self.store, restored=True)
            if self.memory_bytes + request.size > self.opts.buffer_seg_bytes:
                request.data, request.offload = ON_DISK, True
            self._push(request)
        self.metrics.matched += len(kept)
        self.metrics.queuing += len(kept)
        self.restored += len(kept)
        log.info("action %s: %d requests kept from the last run are delivered first (%s)",
                 self.id, len(kept), self.keep_path)

    def discard_disk(self) -> None:
        """This action is thrown away unstarted (a reload kept the running one): let go of its files."""
        for store in (self.store, self.spill):
            if store is not None:
                store.users -= 1  # the running action holds it too: never the last user
        self.store = self.spill = None

    # --- writing -------------------------------------------------------------------------

    def write_new(self, request: _Request) -> asyncio.Future[int | None] | None:
        """Write a new request where the mode wants it; the future of the write with `disk`."""
        if self.mode == "disk" and self.store is not None:
            request.offload = self.memory_bytes > self.opts.buffer_seg_bytes
            return self._write(request, self.store)
        if self.spill is not None and self.memory_bytes > self.opts.buffer_seg_bytes:
            request.offload = True
            self._write(request, self.spill)
        return None

    def _write(self, request: _Request, store: ActionStore) -> asyncio.Future[int | None]:
        try:
            raw = action_store.encode(request.data, request.enqueued)
            future = store.queue.append(raw)
        except (TypeError, ValueError, DurableError) as exc:  # orjson refuses a value, a closed file
            future = asyncio.get_running_loop().create_future()
            future.set_exception(DurableError(f"{store.path}: cannot write the request: {exc}"))
        else:
            request.store, request.seq = store, store.queue.last_seq
        request.written = future
        future.add_done_callback(lambda f: self._written(request, f))
        return future

    def _written(self, request: _Request, future: asyncio.Future[int | None]) -> None:
        request.written = None
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            request.store, request.seq, request.offload = None, 0, False
            self.write_errors += 1
            held = self._write_lines.allow()
            if held is not None:
                log.error("action %s: a request could not be written to disk, it is delivered from memory: %s%s",
                          self.id, exc, f" ({held} more since the last report)" if held else "")
            return
        if request.offload and request.in_queue and request.data is not ON_DISK:
            request.data = ON_DISK
            self.memory_bytes -= request.size

    def borrow(self, request: _Request) -> None:
        """A request handed over by a predecessor (reload): keep its file open until the stop."""
        store = request.store
        if store is not None and store is not self.store and store is not self.spill and store not in self._borrowed:
            store.users += 1
            self._borrowed.append(store)

    # --- delivering ----------------------------------------------------------------------

    async def ready_to_send(self, batch: list[_Request]) -> list[_Request]:
        """Wait until each request is on disk (disk mode) and read back what is only there."""
        pending = [r.written for r in batch if r.written is not None]
        if pending:
            await asyncio.wait(pending)
        await self._load(batch)
        missing = [r for r in batch if r.data is ON_DISK]
        if missing:  # cannot happen unless the file was changed under us
            log.error("action %s: %d requests are no longer in %s: dropped", self.id, len(missing),
                      missing[0].store.path if missing[0].store else "?")
            self.metrics.dropped_other += len(missing)
            self.metrics.inflight -= len(missing)
            batch = [r for r in batch if r.data is not ON_DISK]
        return batch

    async def _load(self, requests: list[_Request]) -> None:
        by_store: dict[int, list[_Request]] = {}
        for request in requests:
            if request.data is ON_DISK and request.store is not None:
                by_store.setdefault(id(request.store), []).append(request)
        for group in by_store.values():
            store = group[0].store
            assert store is not None
            first, last = min(r.seq for r in group), max(r.seq for r in group)
            found: dict[int, Any] = {}
            after = first - 1
            while after < last:
                rows = await store.queue.read(after=after, limit=min(1000, last - after))
                if not rows:
                    break
                for seq, raw in rows:
                    if seq <= last:
                        try:
                            found[seq] = action_store.decode(raw)[0]
                        except ValueError:
                            pass
                after = rows[-1][0]
            for request in group:
                if request.seq in found:
                    request.data = found[request.seq]

    def _finish(self, request: _Request, delivered: bool) -> None:
        """The request is done with (answered, failed, dropped or expired): off its file."""
        if request.store is not None:
            request.store.queue.ack(request.seq)
            request.store = None
        if request.restored and delivered:
            self.redelivered += 1

    # --- stopping ------------------------------------------------------------------------

    async def keep_and_close(self) -> None:
        """At the stop: write what still waits (not in the action's file yet) there, close the files."""
        waiting = list(self._queue)
        try:
            if waiting:
                await self._keep(waiting)
        finally:
            for store in [self.store, self.spill, *self._borrowed]:
                if store is not None:
                    await action_store.release(store)
            self.store = self.spill = None
            self._borrowed.clear()

    async def _keep(self, waiting: list[_Request]) -> None:
        pending = [r.written for r in waiting if r.written is not None]
        if pending:
            await asyncio.wait(pending)
        spill = [r for r in waiting if r.store is not None and r.store is not self.store]
        try:
            await self._load(spill)
            if self.store is None and self.keep_path is not None:
                self.store, _ = action_store.acquire(self.keep_path, self.sync)
            if self.store is None:
                raise DurableError("no file for the action (not started)")
            for request in waiting:
                if request.store is self.store or request.data is ON_DISK:
                    continue
                if request.store is not None:
                    request.store.queue.ack(request.seq)
                self._write(request, self.store)
            await self.store.queue.flush()
            log.warning("action %s stopped with %d messages not delivered: kept in %s for the next start",
                        self.id, len(waiting), self.store.path)
        except DurableError as exc:
            log.error("action %s stopped with %d messages not delivered: lost (%s)", self.id, len(waiting), exc)
