"""An action's requests on disk: `resource_opts.buffer_mode`, and what a stop keeps for the next start.

One durable queue (engine/durable) per action, `<node.data_dir>/buffers/<node.name>/action_<kind>_<name>.db`:

- `disk`: every rendered request is written there before it is delivered, and removed when the
  target acknowledged it (success, or a final failure); the next start delivers what is left first.
- `memory_only`, `volatile_offload`: the file is written only when the node stops with requests
  the target did not take; the next start delivers them first, whatever the mode.
- `volatile_offload` spills the tail of its buffer beyond `buffer_seg_bytes` to a second file,
  `action_<kind>_<name>.spill.db`, emptied at every start (EMQX's volatile: not kept after a crash).

An item is the rendered request (`_render`'s result: an SQL row's values, an HTTP request) with
its enqueue time (wall clock, seconds): `request_ttl` counts from it, across restarts too.
A file is opened once per process: a reload that keeps the action's name shares it.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import orjson

from engine.durable import DurableError, DurableQueue
from engine.durable.codec import tagged, untagged

log = logging.getLogger("ocppgw.connector")

__all__ = ["ActionStore", "DurableError", "StoredRequest", "decode", "encode", "release", "acquire", "close_under"]


def encode(data: Any, enqueued: float) -> bytes:
    return orjson.dumps({"v": 1, "at": enqueued, "r": tagged(data)})


def decode(raw: bytes) -> tuple[Any, float]:
    """(rendered request, enqueue time); ValueError for an item this version cannot read."""
    try:
        item = orjson.loads(raw)
        if not isinstance(item, dict) or item.get("v") != 1:
            raise ValueError("unknown item format")
        return untagged(item["r"]), float(item["at"])
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(str(exc)) from None


StoredRequest = tuple[int, Any, float]  # (seq, rendered request, enqueue time)


class ActionStore:
    """One action's file: the queue, and the counts metrics read."""

    def __init__(self, path: Path, sync: str) -> None:
        self.path = path
        self.queue = DurableQueue(path, sync=sync)
        self.users = 0
        self.write_errors = 0

    @property
    def items(self) -> int:
        return self.queue.items

    @property
    def bytes(self) -> int:
        return self.queue.bytes

    def load(self) -> list[StoredRequest]:
        """What a previous run left, in order; unreadable items are removed (one log line)."""
        restored: list[StoredRequest] = []
        bad = 0
        for seq, raw in self.queue.load():
            try:
                data, enqueued = decode(raw)
            except ValueError:
                bad += 1
                self.queue.ack(seq)
                continue
            restored.append((seq, data, enqueued))
        if bad:
            log.error("%s: %d stored requests could not be read back and were dropped", self.path, bad)
        return restored


_OPEN: dict[Path, ActionStore] = {}


def acquire(path: Path, sync: str, *, fresh: bool = False, create: bool = True) -> tuple[ActionStore | None, list[StoredRequest]]:
    """The store of `path`, shared within this process, and (for its first user) what it holds.
    `fresh`: the file starts empty (a volatile spill file). `create=False`: None when there is no
    file (a memory buffer with nothing kept from a stop). Raises DurableError (locked, unreadable)."""
    store = _OPEN.get(path)
    if store is not None:
        store.users += 1
        return store, []
    if fresh:
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(f"{path}{suffix}")
            except FileNotFoundError:
                pass
    elif not create and not path.exists():
        return None, []
    store = ActionStore(path, sync)
    store.users = 1
    _OPEN[path] = store
    return store, ([] if fresh else store.load())


async def release(store: ActionStore) -> None:
    """Done with the store: the last user flushes and closes the file."""
    store.users -= 1
    if store.users > 0:
        return
    _OPEN.pop(store.path, None)
    try:
        await store.queue.close()
    except DurableError as exc:
        log.error("%s: %s", store.path, exc)


async def close_under(folder: Path) -> None:
    """Close every file of this process under `folder` (a node's buffers), whoever still holds it."""
    for store in [s for path, s in _OPEN.items() if path.parent == folder]:
        store.users = 1
        await release(store)


def wall_clock() -> float:
    return time.time()
