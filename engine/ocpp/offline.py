"""Commands for charge points that are connected to no node: queued on disk, or reported at once.

One node of the cluster (the lowest-named running one; the only node without a cluster) watches
every charge point's downstream topic (`OfflineWatch`, engine/ocpp/offline_link.py, on its own
MQTT connection, so the bridge never holds overlapping subscriptions and a broker that sends one
copy per matching subscription cannot make a charge point get a command twice). For each command
it sees for a charge point held by no node (not here; no running peer answers `locate` with yes):

- with `dnstream.offline_queue.enable = false`: `$events/message_dropped`, reason `not_connected`;
- a frame that is not a CALL, or not valid: `not_connected` / `invalid_payload` (never queued);
- larger than `max_payload_size`: `too_large`; `max_len` already queued for it, or
  `max_clients` charge points already with a queue: the new one is dropped, `queue_full`;
- otherwise it is written to this node's `OfflineStore` (<node.data_dir>/offline/<node>.db).

When a charge point connects to a node, that node first takes what the other running nodes
queued for it (`offline_take`, copied into its own store, then `offline_ack`: the holder deletes
only then), and sends its queue in order through the session's downstream queue (one CALL in
flight) once its BootNotification is accepted, or `boot_wait` after it connected, whichever
comes first. A CALL older than `ttl` is dropped, `expired` (swept every few seconds, and checked
again before it is sent).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import orjson

from engine.bus import Message
from engine.config.schema import OfflineQueueSettings
from engine.ocpp import envelope, events, frames
from engine.ocpp.context import GatewayContext
from engine.ocpp.offline_store import OfflineStore, Queued

log = logging.getLogger("ocppgw.offline")

ORIGIN = "offline"
MAX_CID = 256  # a charge point id longer than this is not a charge point's (the listener refuses it)


class Peers(Protocol):
    """What the queue asks of the cluster (engine/cluster/member.py ClusterMember)."""

    name: str

    def peers(self) -> list[str]: ...
    def request(self, node: str, op: str, args: dict[str, Any], timeout: float | None = None) -> Awaitable[Any]: ...
    def serve(self, op: str, handler: Callable[[dict[str, Any]], Awaitable[Any]]) -> None: ...


def store_path(data_dir: str, node: str) -> Path:
    return Path(data_dir) / "offline" / f"{node}.db"


class OfflineQueue:
    def __init__(self, ctx: GatewayContext, store: OfflineStore, cluster: Peers | None = None) -> None:
        self.ctx = ctx
        self.store = store
        self.cluster = cluster
        self.delivered = 0
        self.dropped: Counter[str] = Counter()
        self._loop = asyncio.get_running_loop()
        self._work: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._worker: asyncio.Task[None] | None = None
        self._sweeper = self._loop.create_task(self._sweep_forever())
        self._waiting: dict[str, asyncio.TimerHandle] = {}  # cid → its boot_wait timer
        self._sub = ctx.bus.subscribe("$events/client_connected", self._connected, name="offline")
        if cluster is not None:
            self._worker = self._loop.create_task(self._work_forever())
            for op, handler in (("offline_take", self._serve_take), ("offline_ack", self._serve_ack),
                                ("offline_view", self._serve_view), ("offline_delete", self._serve_delete_all)):
                cluster.serve(op, handler)

    @property
    def settings(self) -> OfflineQueueSettings:
        return self.ctx.settings.dnstream.offline_queue

    def close(self) -> None:
        self.ctx.bus.unsubscribe(self._sub)
        for task in (self._sweeper, self._worker, *self._tasks):
            if task is not None:
                task.cancel()
        for timer in self._waiting.values():
            timer.cancel()
        self.store.close()

    # --- commands for charge points held nowhere ---------------------------------------------

    def command(self, cid: str, topic: str, payload: bytes) -> None:
        """A command seen on the downstream wildcard for `cid` (OfflineWatch)."""
        if not 0 < len(cid) <= MAX_CID:  # `cs/` (an empty level), or an id no listener accepts
            self._drop("invalid_clientid", cid[:MAX_CID], Message(topic[:1024], payload, qos=1, origin=ORIGIN),
                       f"no charge point can have the id {cid[:64]!r} ({len(cid)} characters)")
            return
        if self.ctx.sessions.get(cid) is not None:
            return  # connected here: the session's own subscription brings it
        if self.cluster is not None and self.cluster.peers():
            if self._work.qsize() >= self.settings.max_pending:
                self._drop("overloaded", cid, Message(topic, payload, qos=1, origin=ORIGIN),
                           f"{self.settings.max_pending} commands already wait for the other nodes' answer "
                           "(offline_queue.max_pending)")
                return
            self._work.put_nowait((cid, topic, payload))  # ask the others, in arrival order
        else:
            self._absent(cid, topic, payload)

    async def _work_forever(self) -> None:
        while True:
            cid, topic, payload = await self._work.get()
            try:
                if self.ctx.sessions.get(cid) is None and not await self._held_elsewhere(cid):
                    self._absent(cid, topic, payload)
            except Exception:
                log.exception("offline queue: command for %s", cid[:64])

    async def _held_elsewhere(self, cid: str) -> bool:
        cluster = self.cluster
        if cluster is None:
            return False
        peers = cluster.peers()
        found = await asyncio.gather(*(cluster.request(n, "locate", {"clientid": cid}) for n in peers),
                                     return_exceptions=True)
        # a node that does not answer is taken as holding nothing: one that is gone shows stopped soon
        return any(answer is True for answer in found)

    def _absent(self, cid: str, topic: str, payload: bytes) -> None:
        message = Message(topic, payload, qos=1, origin=ORIGIN)
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self._drop("invalid_payload", cid, message, "not valid JSON")
            return
        problem = envelope.check_downstream(body)
        if problem:
            self._drop("invalid_payload", cid, message, problem)
            return
        s = self.settings
        if body["MessageTypeId"] != frames.CALL:
            self._drop("not_connected", cid, message, "the charge point is not connected; only a CALL is queued")
        elif not s.enable:
            self._drop("not_connected", cid, message, "the charge point is not connected to any node")
        elif len(payload) > s.max_payload_size:
            self._drop("too_large", cid, message,
                       f"{len(payload)} bytes, over dnstream.offline_queue.max_payload_size ({int(s.max_payload_size)})")
        elif self.store.counts.get(cid, 0) >= s.max_len:
            self._drop("queue_full", cid, message, f"{s.max_len} commands already queued (offline_queue.max_len)")
        elif cid not in self.store.counts and len(self.store.counts) >= s.max_clients:
            self._drop("queue_full", cid, message,
                       f"{s.max_clients} charge points already have queued commands (offline_queue.max_clients)")
        else:
            try:
                self.store.add(cid, topic, payload, int(time.time() * 1000))
            except sqlite3.Error as exc:  # the disk full, the file gone: the backend learns at once
                self._drop("write_failed", cid, message, f"cannot write the offline queue ({self.store.path}): {exc}")

    def _drop(self, reason: str, cid: str, message: Message, description: str) -> None:
        self.dropped[reason] += 1
        self.ctx.metrics.drops[reason] += 1
        if not self.ctx.wants_event("message_dropped"):
            return
        fields = events.absent_message_fields(cid, message, message.payload.decode("utf-8", "replace"))
        fields["reason"] = reason
        fields["description"] = description
        self.ctx.publish_event("message_dropped", fields)

    def _drop_queued(self, items: list[Queued], reason: str, description: str) -> None:
        self.store.delete(items)
        for q in items:
            self._drop(reason, q.cid, Message(q.topic, q.payload, qos=1, origin=ORIGIN, timestamp=q.queued_at),
                       description)

    # --- expiry ------------------------------------------------------------------------------

    def expire(self) -> None:
        ttl = float(self.settings.ttl)
        old = self.store.older_than(int((time.time() - ttl) * 1000))
        if old:
            self._drop_queued(old, "expired", f"queued longer than dnstream.offline_queue.ttl ({ttl:g}s)")

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(max(0.2, min(float(self.settings.ttl) / 4, 5.0)))
            try:
                self.expire()
            except Exception:
                log.exception("offline queue: expiry sweep failed")

    # --- delivery ----------------------------------------------------------------------------

    def _connected(self, event: Message) -> None:
        cid = event.json().get("clientid")
        if not isinstance(cid, str):
            return
        if self.cluster is not None and self.cluster.peers() and self.settings.enable:
            # the others are asked only with the queue on: off, a connect storm costs no requests
            task = self._loop.create_task(self._gather_then_wait(cid))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._wait_for_boot(cid)

    async def _gather_then_wait(self, cid: str) -> None:
        cluster = self.cluster
        assert cluster is not None
        for node in cluster.peers():
            try:
                rows = await cluster.request(node, "offline_take", {"clientid": cid})
                if not isinstance(rows, list) or not rows:
                    continue
                ids = []
                for row in rows:
                    self.store.add(cid, str(row["topic"]), str(row["payload"]).encode(), int(row["queued_at"]))
                    ids.append(int(row["id"]))
                await cluster.request(node, "offline_ack", {"clientid": cid, "ids": ids})
            except Exception as exc:  # that node keeps them: the next connection asks again
                log.warning("offline queue: could not take %s's commands from node %s: %s", cid[:64], node, exc)
        self._wait_for_boot(cid)

    def _wait_for_boot(self, cid: str) -> None:
        session = self.ctx.sessions.get(cid)
        if session is None or not self.store.counts.get(cid):
            return
        old = self._waiting.pop(cid, None)
        if old is not None:
            old.cancel()
        self._waiting[cid] = self._loop.call_later(float(self.settings.boot_wait), self._deliver, cid, session)
        session.on_accepted = lambda: self._deliver(cid, session)

    def _deliver(self, cid: str, session: Any) -> None:
        timer = self._waiting.get(cid)
        if timer is not None and self.ctx.sessions.get(cid) is session:
            timer.cancel()
            del self._waiting[cid]
        session.on_accepted = None
        if session.closed or self.ctx.sessions.get(cid) is not session:
            return
        self.expire()
        items = self.store.items(cid)
        self.store.delete(items)
        for q in items:
            session.on_downstream(Message(q.topic, q.payload, qos=1, origin=ORIGIN, timestamp=q.queued_at))
            self.delivered += 1

    # --- what the other nodes and the admin API ask ------------------------------------------

    def listing(self, cid: str) -> list[dict[str, Any]]:
        return [q.as_dict() for q in self.store.items(cid)]

    def delete(self, cid: str) -> int:
        items = self.store.items(cid)
        self._drop_queued(items, "deleted", "deleted through the admin API")
        return len(items)

    async def _serve_view(self, args: dict[str, Any]) -> dict[str, Any]:
        return waiting_here(self.ctx, self, _cid(args))

    async def _serve_delete_all(self, args: dict[str, Any]) -> int:
        return delete_here(self.ctx, self, _cid(args))

    async def _serve_take(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        return self.listing(_cid(args))

    async def _serve_ack(self, args: dict[str, Any]) -> int:
        ids = args.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise ValueError("offline_ack: expected ids")
        wanted = set(ids)
        items = [q for q in self.store.items(_cid(args)) if q.id in wanted]
        self.store.delete(items)
        return len(items)



def waiting_here(ctx: GatewayContext, queue: OfflineQueue | None, cid: str) -> dict[str, Any]:
    """What waits on this node for `cid`: its session's CALLs in flight and queued, then its offline
    queue (EMQX's mqueue message fields, plus `state` and `node`)."""
    data: list[dict[str, Any]] = []
    session = ctx.sessions.get(cid)
    connected = session is not None and not session.closed
    if connected:
        for state, out in session.waiting_calls():
            data.append({"msgid": out.unique_id, "action": out.action, "topic": out.message.topic,
                         "payload": out.message.payload.decode("utf-8", "replace"),
                         "publish_at": out.message.timestamp, "state": state, "node": ctx.node})
    if queue is not None:
        for q in queue.store.items(cid):
            try:
                body = orjson.loads(q.payload)
                uid, action = str(body.get("UniqueId", "")), str(body.get("Action", ""))
            except (orjson.JSONDecodeError, AttributeError):
                uid = action = ""
            data.append({"msgid": uid, "action": action, "topic": q.topic, "payload": q.payload.decode("utf-8", "replace"),
                         "publish_at": q.queued_at, "state": "offline", "node": ctx.node})
    return {"connected": connected, "data": data}


def delete_here(ctx: GatewayContext, queue: OfflineQueue | None, cid: str) -> int:
    """Drop what waits here for `cid` (not a CALL in flight), each evented `deleted`; how many."""
    count = 0
    session = ctx.sessions.get(cid)
    if session is not None and not session.closed:
        count += session.drop_queued("deleted")
    if queue is not None:
        count += queue.delete(cid)
    return count


def _cid(args: dict[str, Any]) -> str:
    cid = args.get("clientid")
    if not isinstance(cid, str) or not 0 < len(cid) <= MAX_CID:
        raise ValueError("expected a clientid")
    return cid
