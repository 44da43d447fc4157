"""One node's membership in the cluster: presence, requests and replies, over the shared broker.

A second connection of the bridge's MQTT client (connectors/mqtt/client.py), so the cluster's
small traffic never waits behind the bridge's buffer and its last will is its own. Topics under
`cluster.topic_prefix` (P):

- `P/nodes/<node>`: retained presence, `{"node", "node_status": "running", ...}`; the last will
  (retained) says `stopped`, so a node that dies shows stopped within 1.5x `cluster.keepalive`.
- `P/rpc/<node>`: requests to a node, `{"id", "from", "reply", "op", "args"}`;
- `P/reply/<node>`: the answers, `{"id", "from", "ok", "result" | "error"}`.
- `P/claims`: takeover claims (engine/ocpp/takeover.py), one topic so the broker orders them:
  `{"node", "clientid", "connected_at", "claim"}`, read back by the sender too (no-local off).
- `P/config`: the admin API's overlay and its version, retained (engine/cluster/config_sync.py).

The correlation id and reply topic travel in the payload rather than as MQTT 5 properties, so
the same code runs on the embedded broker (MQTT 3.1.1) and on any external one. A message that
is not what it should be is counted (`malformed`), logged, and ignored.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from connectors.mqtt.bridge import BridgeOptions
from connectors.mqtt.client import MqttClient
from connectors.mqtt.side_link import SideLink
from engine import __version__

log = logging.getLogger("ocppgw.cluster")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
MAX_NODES = 1000  # presence records kept: names beyond are refused (a rogue publisher's flood)


class NodeUnreachable(Exception):
    """A node did not answer in time (or is known stopped); the message names it."""

    def __init__(self, node: str, why: str) -> None:
        super().__init__(f"node {node} {why}")
        self.node = node


class RemoteError(Exception):
    """The other node answered with an error: `status`, `code`, `message` as its API would."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def check_node_name(name: str) -> str | None:
    """Why `name` cannot be a topic level (None: it can)."""
    if not name or any(c in name for c in "+#/\0"):
        return f"node.name {name!r}: a cluster node's name must be non-empty, without + # / or NUL"
    return None


class ClusterMember(SideLink):
    suffix = "cluster"
    what = "cluster"

    def __init__(self, options: BridgeOptions, node: str, prefix: str, keepalive: float,
                 request_timeout: float, info: Callable[[], dict[str, Any]] | None = None) -> None:
        super().__init__(options, keepalive)
        self.name = node
        self.prefix = prefix.rstrip("/")
        self.keepalive = keepalive
        self.request_timeout = request_timeout
        self.info = info or (lambda: {})
        self.started_at = time.time()
        self.presence: dict[str, dict[str, Any]] = {}  # node → its last presence record
        self.malformed = 0  # cluster messages ignored (metrics, tests)
        self.requests_served = 0
        self._handlers: dict[str, Handler] = {}
        self._subscribers: dict[str, Callable[[bytes], None]] = {}  # topic below the prefix → callback
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._joined: list[Callable[[], None]] = []  # called at each (re)connection (on_join)
        self.records_too_large: dict[str, int] = {}  # kind → records over cluster.max_record_size (metrics)
        self.joined_at: float | None = None  # monotonic time of the current connection's join; None: not connected

    # --- topics -------------------------------------------------------------------------------

    def topic(self, *levels: str) -> str:
        return "/".join((self.prefix, *levels))

    def _presence_record(self, status: str) -> bytes:
        record = {"node": self.name, "node_status": status, "version": __version__,
                  "started_at": int(self.started_at * 1000), **({} if status == "stopped" else self.info())}
        return orjson.dumps(record)

    # --- lifecycle ----------------------------------------------------------------------------

    def will(self) -> tuple[str, bytes, int, bool] | None:
        return (self.topic("nodes", self.name), self._presence_record("stopped"), 1, True)

    async def run_connected(self, client: MqttClient) -> None:
        o = self.options
        await client.subscribe([(self.topic("nodes", "+"), 1), (self.topic("rpc", self.name), 1),
                                (self.topic("reply", self.name), 1),
                                *[(self.topic(t), 1) for t in self._subscribers]], no_local=False)
        client.publish(self.topic("nodes", self.name), self._presence_record("running"), 1, True)
        self._connected.set()
        self.joined_at = time.monotonic()
        log.info("cluster: node %s joined on %s:%s under %s", self.name, o.host, o.port, self.prefix)
        for joined in self._joined:
            joined()
        await client.closed

    def lost(self) -> None:
        self.joined_at = None

    async def last_words(self, client: MqttClient) -> None:
        done = client.publish(self.topic("nodes", self.name), self._presence_record("stopped"), 1, True)
        if done is not None:
            await asyncio.wait_for(done, 2.0)

    async def stop(self) -> None:
        await super().stop()
        for future in self._waiting.values():
            future.cancel()

    # --- what the others see ------------------------------------------------------------------

    def nodes(self) -> dict[str, dict[str, Any]]:
        """Every node heard of (this one included), by name: its presence record."""
        found = dict(self.presence)
        found[self.name] = orjson.loads(self._presence_record("running"))
        return found

    def peers(self) -> list[str]:
        """The other nodes that say they are running."""
        return sorted(n for n, r in self.presence.items() if n != self.name and r.get("node_status") == "running")

    # --- requests -----------------------------------------------------------------------------

    def serve(self, op: str, handler: Handler) -> None:
        self._handlers[op] = handler

    def on(self, subtopic: str, callback: Callable[[bytes], None]) -> None:
        """Call `callback(payload)` for each message on `prefix/subtopic` (before start)."""
        self._subscribers[subtopic] = callback

    def on_join(self, callback: Callable[[], None]) -> None:
        """Call `callback()` each time the cluster link is (re)connected and subscribed."""
        self._joined.append(callback)

    def count_too_large(self, kind: str) -> None:
        self.records_too_large[kind] = self.records_too_large.get(kind, 0) + 1

    def publish(self, subtopic: str, payload: bytes, retain: bool = False) -> bool:
        client = self._client
        if client is None or client.closed.done():
            return False
        client.publish(self.topic(subtopic), payload, 1, retain, token=0)
        return True

    async def request(self, node: str, op: str, args: dict[str, Any], timeout: float | None = None) -> Any:
        """Ask `node` to run `op`; its result, or RemoteError, or NodeUnreachable."""
        client = self._client
        if client is None or client.closed.done():
            raise NodeUnreachable(node, "cannot be asked: this node is not connected to the broker")
        rid = f"{self.name}:{next(self._ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        try:
            body = {"id": rid, "from": self.name, "reply": self.topic("reply", self.name), "op": op, "args": args}
            client.publish(self.topic("rpc", node), orjson.dumps(body), 1, token=0)
            wait = self.request_timeout if timeout is None else timeout
            try:
                answer = await asyncio.wait_for(future, wait)
            except TimeoutError:
                raise NodeUnreachable(node, f"did not answer within {wait:g}s (cluster.request_timeout)") from None
        finally:
            self._waiting.pop(rid, None)
        if answer.get("ok"):
            return answer.get("result")
        found = answer.get("error")
        error: dict[str, Any] = found if isinstance(found, dict) else {}
        status = error.get("status")
        raise RemoteError(status if isinstance(status, int) and 400 <= status <= 599 else 500,
                          str(error.get("code", "INTERNAL_ERROR"))[:64],
                          str(error.get("message", f"node {node} failed"))[:1000])

    # --- receiving ----------------------------------------------------------------------------

    def _bad(self, topic: str, why: str) -> None:
        self.malformed += 1
        if self.malformed == 1 or self.malformed % 1000 == 0:
            log.warning("cluster: ignoring a malformed message on %s (%s; %d so far)", topic, why, self.malformed)

    def on_message(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        rest = topic[len(self.prefix) + 1:] if topic.startswith(self.prefix + "/") else ""
        kind, _, name = rest.partition("/")
        try:
            if kind in self._subscribers and not name:
                self._subscribers[kind](payload)
                return
            data = orjson.loads(payload) if payload else None
        except orjson.JSONDecodeError:
            self._bad(topic, "not JSON")
            return
        except Exception as exc:  # a subscriber's bug must not break the connection
            self._bad(topic, f"{type(exc).__name__}: {exc}")
            return
        if kind == "nodes":
            if data is None:
                self.presence.pop(name, None)  # a retained record cleared
            elif isinstance(data, dict) and data.get("node") == name and data.get("node_status") in ("running", "stopped"):
                if name != self.name:
                    if name in self.presence or len(self.presence) < MAX_NODES:
                        self.presence[name] = data
                    else:
                        self._bad(topic, f"more than {MAX_NODES} nodes")
                elif data["node_status"] == "stopped" and not self._stopping and self._client is not None:
                    # an old connection's last will (a restart under the same name) said we are gone: we are not
                    self._client.publish(topic, self._presence_record("running"), 1, True)
            else:
                self._bad(topic, "not a presence record")
        elif kind == "rpc" and name == self.name:
            if (isinstance(data, dict) and isinstance(data.get("id"), str) and isinstance(data.get("reply"), str)
                    and data["reply"].startswith(self.topic("reply", "")) and isinstance(data.get("op"), str)
                    and isinstance(data.get("args", {}), dict)):
                task = asyncio.get_running_loop().create_task(self._answer(data))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                self._bad(topic, "not a request")
        elif kind == "reply" and name == self.name:
            if isinstance(data, dict) and isinstance(data.get("id"), str):
                future = self._waiting.get(data["id"])
                if future is not None and not future.done():
                    future.set_result(data)
            else:
                self._bad(topic, "not a reply")
        else:
            self._bad(topic, "unknown topic")

    async def _answer(self, request: dict[str, Any]) -> None:
        handler = self._handlers.get(request["op"])
        answer: dict[str, Any] = {"id": request["id"], "from": self.name}
        if handler is None:
            answer.update(ok=False, error={"status": 400, "code": "BAD_REQUEST", "message": f"unknown op {request['op'][:40]!r}"})
        else:
            try:
                answer.update(ok=True, result=await handler(request.get("args", {})))
            except Exception as exc:
                status, code = getattr(exc, "status", None), getattr(exc, "code", None)
                if isinstance(status, int) and isinstance(code, str):  # RemoteError, the admin's ApiError
                    answer.update(ok=False, error={"status": status, "code": code,
                                                   "message": str(getattr(exc, "message", exc))})
                else:
                    log.exception("cluster: request %s failed", request["op"])
                    answer.update(ok=False, error={"status": 500, "code": "INTERNAL_ERROR", "message": str(exc)})
        self.requests_served += 1
        client = self._client
        if client is not None and not client.closed.done():
            client.publish(request["reply"], orjson.dumps(answer), 1, token=0)
