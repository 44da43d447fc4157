"""A durable FIFO of byte items on SQLite, for a bridge or an action buffer.

API (all methods are called on the event loop's thread; only the writes run in a thread):

    q = DurableQueue(path, max_bytes=..., max_items=0, overflow="drop_oldest", sync="full")
        Opens (creates) the file, takes an exclusive lock on `<path>.lock` and loads the index of
        the items kept from a previous run. Raises `DurableError` (one clear line naming the file)
        when another process holds the queue, or the file is not a readable queue (the node then
        refuses to start; moving the file aside starts with an empty queue).
    q.load() -> list[(seq, bytes)]
        Everything not acknowledged, in order (call before the first append: on start).
    await q.read(after=0, limit=1000) -> list[(seq, bytes)]
        Committed items with seq > after, in order (reads in the writer thread).
    q.append(data) -> asyncio.Future[int | None]
        Queues the item; its sequence number (increasing, never reused) is `q.last_seq` at once.
        The future completes with that number when the item is on disk (committed with the
        configured fsync), with None when overflow dropped it before it was written, or with a
        `DurableError` when the write failed. Send the item on only once the future completed.
    q.ack(seq), q.ack_many(seqs), q.ack_upto(seq)
        Removes acknowledged items: any order; `ack_upto` removes every item <= seq cheaply.
        Unknown or already removed numbers are ignored. Removal is written with the next commit.
    await q.flush()    every queued append and ack is committed
    await q.close()    flush, close the file, release the lock

Group commit: appends and acks made while the writer is idle are committed at the end of the
loop turn (`loop.call_soon`, or after `commit_window` seconds), all in one transaction; those
made while a commit is running go together in the next one. The event loop never waits on fsync.

Bounds: `max_bytes` (sum of item sizes) and `max_items` (0: no bound). On overflow
`drop_oldest` removes the oldest items (even one that is in flight: its later ack is a no-op),
`drop_newest` refuses the new one (its future completes with None); `dropped[reason]` counts
them ("queue_full").

Durability (`sync`): the file is in WAL mode; "full" fsyncs every commit (an item whose future
completed survives SIGKILL and power loss); "normal" fsyncs only at checkpoints (survives a
process crash or SIGKILL, the last commits may be lost on power loss; fewer fsyncs).

Counters for metrics: `items`, `bytes`, `written` (items committed), `commits`, `dropped`.
Expiry (an action's `request_ttl`) and retries are the caller's: keep a timestamp in the item
and `ack` what is expired.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import sqlite3
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger("ocppgw.durable")

DROP_OLDEST = "drop_oldest"
DROP_NEWEST = "drop_newest"
SYNC_MODES = {"full": "FULL", "normal": "NORMAL"}
FORMAT_VERSION = 1


class DurableError(Exception):
    """A queue file that cannot be used (locked, unreadable) or a failed write."""


def queue_path(data_dir: str | os.PathLike[str], node_name: str, owner: str) -> Path:
    """`<data_dir>/buffers/<node_name>/<owner>.db`; `owner` names the queue's user ("mqtt_bridge")."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", owner)
    return Path(data_dir) / "buffers" / re.sub(r"[^A-Za-z0-9_.-]", "_", node_name) / f"{safe}.db"


def _runs(numbers: list[int]) -> list[tuple[int, int]]:
    """(first, last) of each run of consecutive numbers, sorted."""
    runs: list[tuple[int, int]] = []
    for n in sorted(numbers):
        if runs and n <= runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], max(n, runs[-1][1]))
        else:
            runs.append((n, n))
    return runs


class DurableQueue:
    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int = 0, max_items: int = 0,
                 overflow: str = DROP_OLDEST, sync: str = "full", commit_window: float = 0.0) -> None:
        if overflow not in (DROP_OLDEST, DROP_NEWEST):
            raise ValueError(f"overflow must be {DROP_OLDEST} or {DROP_NEWEST}, not {overflow!r}")
        if sync not in SYNC_MODES:
            raise ValueError(f"sync must be one of {sorted(SYNC_MODES)}, not {sync!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_items = max_items
        self.overflow = overflow
        self.sync = sync
        self.commit_window = commit_window
        self.written = 0
        self.commits = 0
        self.dropped: dict[str, int] = {}
        self.bytes = 0
        self.last_seq = 0
        self._sizes: dict[int, int] = {}  # seq -> size of every item not acknowledged, oldest first
        self._inserts: list[tuple[int, bytes, asyncio.Future[int | None]]] = []
        self._deletes: list[int] = []
        self._delete_upto = 0
        self._gone: set[int] = set()  # dropped while their insert was being committed
        self._busy = False
        self._scheduled = False
        self._waiters: list[asyncio.Future[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._lock_fd = self._lock()
        try:
            self._db = self._open()
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"durable-{self.path.stem}")

    # ---- opening ----------------------------------------------------------------------------

    def _lock(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = f"{self.path}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DurableError(f"{self.path}: the queue is in use by another process (pid {holder}); "
                               "two nodes must not share node.name and node.data_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd

    def _open(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise DurableError(f"{self.path}: cannot open the queue file: {exc}") from None
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={SYNC_MODES[self.sync]}")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, FORMAT_VERSION):
                raise DurableError(f"{self.path}: queue format {version} is not {FORMAT_VERSION}")
            db.execute("CREATE TABLE IF NOT EXISTS items (seq INTEGER PRIMARY KEY, data BLOB NOT NULL)")
            db.execute(f"PRAGMA user_version={FORMAT_VERSION}")
            # reading every row's size walks the whole table: a damaged file fails here, at start
            for seq, size in db.execute("SELECT seq, length(data) FROM items ORDER BY seq"):
                self._sizes[seq] = size
                self.bytes += size
            row = db.execute("SELECT max(seq) FROM items").fetchone()
            self.last_seq = row[0] or 0
        except sqlite3.Error as exc:
            db.close()
            raise DurableError(f"{self.path}: not a readable queue file ({exc}); move it aside to start "
                               "with an empty queue") from None
        except DurableError:
            db.close()
            raise
        return db

    # ---- reading ----------------------------------------------------------------------------

    @property
    def items(self) -> int:
        return len(self._sizes)

    def load(self) -> list[tuple[int, bytes]]:
        """Every item not acknowledged, in order; call on start, before appending."""
        if self._busy or self._inserts:
            raise RuntimeError("load() is for the start, before any append")
        return [(seq, bytes(data)) for seq, data in self._db.execute("SELECT seq, data FROM items ORDER BY seq")]

    async def read(self, after: int = 0, limit: int = 1000) -> list[tuple[int, bytes]]:
        def query() -> list[tuple[int, bytes]]:
            rows = self._db.execute("SELECT seq, data FROM items WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit))
            return [(seq, bytes(data)) for seq, data in rows]
        return await asyncio.get_running_loop().run_in_executor(self._executor, query)

    # ---- writing ----------------------------------------------------------------------------

    def append(self, data: bytes) -> asyncio.Future[int | None]:
        if self._closed:
            raise DurableError(f"{self.path}: the queue is closed")
        loop = self._loop or self._bind()
        future: asyncio.Future[int | None] = loop.create_future()
        size = len(data)
        if not self._make_room(size):
            self._count_drop("queue_full")
            future.set_result(None)
            return future
        self.last_seq += 1
        seq = self.last_seq
        self._sizes[seq] = size
        self.bytes += size
        self._inserts.append((seq, data, future))
        self._schedule()
        return future

    def _make_room(self, size: int) -> bool:
        def over() -> bool:
            return bool((self.max_bytes and self.bytes + size > self.max_bytes)
                        or (self.max_items and len(self._sizes) + 1 > self.max_items))
        if not over():
            return True
        if self.overflow == DROP_NEWEST or (self.max_bytes and size > self.max_bytes):
            return False
        while self._sizes and over():
            oldest = next(iter(self._sizes))
            self._forget(oldest)
            self._count_drop("queue_full")
            self._drop_unwritten(oldest)
        return True

    def _drop_unwritten(self, seq: int) -> None:
        for i, (s, _, future) in enumerate(self._inserts):
            if s == seq:
                del self._inserts[i]
                future.set_result(None)
                return
        self._deletes.append(seq)
        if self._busy:
            self._gone.add(seq)

    def _count_drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def _forget(self, seq: int) -> bool:
        size = self._sizes.pop(seq, None)
        if size is None:
            return False
        self.bytes -= size
        return True

    def ack(self, seq: int) -> None:
        if self._forget(seq):
            self._deletes.append(seq)
            self._schedule()

    def ack_many(self, seqs: Iterable[int]) -> None:
        for seq in seqs:
            self.ack(seq)

    def ack_upto(self, seq: int) -> None:
        sizes = self._sizes
        while sizes:
            oldest = next(iter(sizes))
            if oldest > seq:
                break
            self._forget(oldest)
        if seq > self._delete_upto:
            self._delete_upto = seq
            self._schedule()

    def _bind(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.get_running_loop()
        return self._loop

    def _schedule(self) -> None:
        if self._scheduled or self._busy:
            return
        loop = self._loop or self._bind()
        self._scheduled = True
        if self.commit_window > 0:
            loop.call_later(self.commit_window, self._kick)
        else:
            loop.call_soon(self._kick)

    def _has_work(self) -> bool:
        return bool(self._inserts or self._deletes or self._delete_upto)

    def _kick(self) -> None:
        self._scheduled = False
        if self._busy or not self._has_work():
            self._wake_waiters()
            return
        inserts, self._inserts = self._inserts, []
        deletes, self._deletes = self._deletes, []
        upto, self._delete_upto = self._delete_upto, 0
        self._busy = True
        assert self._loop is not None
        done = self._loop.run_in_executor(self._executor, self._write, [(s, d) for s, d, _ in inserts], deletes, upto)
        done.add_done_callback(lambda f: self._written(f, inserts))

    def _write(self, inserts: list[tuple[int, bytes]], deletes: list[int], upto: int) -> None:
        db = self._db
        db.execute("BEGIN")
        try:
            if inserts:
                db.executemany("INSERT INTO items (seq, data) VALUES (?, ?)", inserts)
            if deletes:
                # acks come mostly in order: one range delete per run of consecutive numbers
                db.executemany("DELETE FROM items WHERE seq BETWEEN ? AND ?", _runs(deletes))
            if upto:
                db.execute("DELETE FROM items WHERE seq <= ?", (upto,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _written(self, done: asyncio.Future[None],
                 inserts: list[tuple[int, bytes, asyncio.Future[int | None]]]) -> None:
        self._busy = False
        exc = done.exception()
        gone, self._gone = self._gone, set()
        if exc is not None:
            log.error("%s: write failed: %s", self.path, exc)
            error = DurableError(f"{self.path}: write failed: {exc}")
            for seq, _, future in inserts:
                self._forget(seq)  # not on disk: the caller keeps it (or not) itself
                if not future.done():
                    future.set_exception(error)
        else:
            self.commits += 1
            self.written += len(inserts)
            for seq, _, future in inserts:
                if not future.done():
                    future.set_result(None if seq in gone else seq)
        if self._has_work():
            self._schedule()
        else:
            self._wake_waiters()

    def _wake_waiters(self) -> None:
        if self._busy or self._has_work():
            return
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def flush(self) -> None:
        loop = self._loop or self._bind()
        while self._busy or self._has_work() or self._scheduled:
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            self._schedule()
            await waiter

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self.flush()
        finally:
            self._executor.shutdown(wait=True)
            self._db.close()
            os.close(self._lock_fd)
