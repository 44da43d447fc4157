"""End-to-end support: a gateway node on real sockets, a paho-mqtt backend, an event recorder.

The node runs in the test's event loop (so tests can read its state), but
everything crosses real sockets: charge points connect over WebSocket, the
node bridges to a real mosquitto, and the backend is a paho-mqtt client on
that broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho

from engine.bus import Message
from engine.config import load_settings
from engine.node import Node
from tests.servers import free_port


class Backend:
    """A CSMS backend on the MQTT broker, written with paho-mqtt (a client we did not write)."""

    def __init__(self, port: int, *filters: str) -> None:
        self.inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"backend-{free_port()}")
        self.client.on_message = self._on_message
        subscribed = queue.Queue()
        self.client.on_subscribe = lambda *a: subscribed.put(True)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        for f in filters or ("ocpp/cp/#",):
            self.client.subscribe(f, qos=1)
            subscribed.get(timeout=5)

    def _on_message(self, client: Any, userdata: Any, m: paho.MQTTMessage) -> None:
        try:
            body = orjson.loads(m.payload)
        except orjson.JSONDecodeError:
            body = m.payload
        self.inbox.put((m.topic, body))

    async def next(self, timeout: float = 5.0) -> tuple[str, Any]:
        try:
            return await asyncio.to_thread(self.inbox.get, True, timeout)
        except queue.Empty:
            raise AssertionError(f"the backend received nothing within {timeout}s") from None

    async def nothing(self, wait: float = 0.5) -> None:
        try:
            got = await asyncio.to_thread(self.inbox.get, True, wait)
        except queue.Empty:
            return
        raise AssertionError(f"the backend received {got!r}")

    def publish(self, topic: str, body: Any) -> None:
        payload = body if isinstance(body, (bytes, str)) else orjson.dumps(body)
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    async def answer(self, topic: str, payload: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Wait for the next CALL, check its topic, answer it with `payload`; return the CALL."""
        got_topic, call = await self.next(timeout)
        assert got_topic == topic, (got_topic, call)
        cid = topic.rsplit("/", 1)[-1]
        self.publish(f"ocpp/cs/{cid}", {"MessageTypeId": 3, "UniqueId": call["UniqueId"], "Payload": payload})
        return call

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class EventLog:
    """Every `$events/...` message the node publishes, in order."""

    def __init__(self, node: Node) -> None:
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        node.bus.subscribe("$events/#", self._record)

    def _record(self, message: Message) -> None:
        event = dict(message.json())
        event["_topic"] = message.topic
        self.events.append(event)
        self._changed.set()

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["_topic"] == f"$events/{name}"]

    async def wait(self, name: str, predicate: Callable[[dict[str, Any]], bool] = lambda e: True,
                   timeout: float = 10.0) -> dict[str, Any]:
        async def find() -> dict[str, Any]:
            while True:
                for event in self.named(name):
                    if predicate(event):
                        return event
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(find(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"no {name} event matched within {timeout}s; events: {self.events}") from None


@dataclass
class Gateway:
    node: Node
    ocpp_port: int
    events: EventLog
    wss_port: int | None = None
    admin_port: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def url(self, cid: str, path: str = "/ocpp") -> str:
        return f"ws://127.0.0.1:{self.ocpp_port}{path}/{cid}"

    @property
    def ctx(self):
        return self.node.ocpp

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}/api/v5"


@contextlib.asynccontextmanager
async def running_gateway(tmp_path: Path, mqtt_port: int, conf: str = "") -> AsyncIterator[Gateway]:
    ocpp_port, admin_port = free_port(), free_port()
    path = tmp_path / "gateway.conf"
    path.write_text(
        f'node {{ name = "gw-test", data_dir = "{tmp_path / "data"}" }}\n'
        f'mqtt {{ server = "mqtt://127.0.0.1:{mqtt_port}", reconnect.initial_interval = 100ms }}\n'
        f'gateway.ocpp.listeners.ws.default.bind = "127.0.0.1:{ocpp_port}"\n'
        f'dashboard.listeners.http.bind = "127.0.0.1:{admin_port}"\n' + conf
    )
    node = Node(load_settings(path, {}), str(path))
    events = EventLog(node)
    try:
        await node.start()
    except BaseException:
        await node.stop()
        raise
    try:
        assert node.bridge and await node.bridge.wait_connected(5)
        yield Gateway(node, ocpp_port, events, admin_port=admin_port)
    finally:
        await node.stop()


async def until(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll `check()` (a coroutine function) every 0.1 s until it returns something true; that."""
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:g} s")
        await asyncio.sleep(0.1)


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def recv_json(ws: Any, timeout: float = 5.0) -> Any:
    """The next frame a charge point receives, decoded."""
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout))


async def nothing_sent(ws: Any, wait: float = 0.4) -> None:
    """The charge point receives nothing within `wait` seconds."""
    try:
        got = await asyncio.wait_for(ws.recv(), wait)
    except asyncio.TimeoutError:
        return
    raise AssertionError(f"the charge point received {got!r}")


async def closed_with(ws: Any, code: int, timeout: float = 5.0) -> None:
    """The gateway closes the charge point's connection with `code`."""
    import websockets

    try:
        await asyncio.wait_for(ws.recv(), timeout)
    except websockets.ConnectionClosed:
        assert ws.close_code == code, ws.close_code
        return
    raise AssertionError("the connection is still open")


async def subscribed(gw: Gateway, cid: str) -> None:
    """Wait until the node has the charge point's downstream topic on the broker, and takes commands
    (its takeover claim is back: engine/ocpp/takeover.py)."""
    assert gw.node.bridge
    await eventually(lambda: f"ocpp/cs/{cid}" in gw.node.bridge._on_broker
                     and not getattr(gw.ctx.sessions.get(cid), "held", True))
