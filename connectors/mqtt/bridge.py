"""The MQTT bridge: bus ↔ broker, through reconnects, in order, counting every drop.

Outgoing: `forward` (a bus handler) queues local messages for the broker in
an `OutgoingBuffer`; one sender task publishes them in order with up to
`max_inflight` awaiting their PUBACK. When the connection drops, the
unacknowledged ones go back to the head of the buffer, so they are sent
again, still in order, when the broker returns (at least once).

Incoming: the broker's messages for our subscriptions (the bus's remote
filters, mirrored in batches, plus `mqtt.subscriptions`) are handed to
`deliver` with origin "mqtt", which `forward` never sends back. With MQTT v5
the subscriptions carry no-local, so the broker never echoes our own
publishes; with 3.1.1 (the embedded amqtt broker speaks only that) an
`EchoFilter` drops the echoes instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import aiomqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from connectors.mqtt.buffer import EchoFilter, OutgoingBuffer
from engine.bus.message import Message
from engine.bus.trie import TopicTrie

log = logging.getLogger("ocppgw.mqtt")

SUBSCRIBE_BATCH = 200
ORIGIN = "mqtt"


@dataclass
class BridgeOptions:
    host: str
    port: int
    client_id: str
    username: str = ""
    password: str = ""
    proto_ver: str = "v5"  # "v5" or "v4" (MQTT 3.1.1)
    qos: int = 1
    keepalive: float = 60.0
    max_inflight: int = 100
    buffer_max_messages: int = 100_000
    reconnect_initial: float = 1.0
    reconnect_max: float = 30.0
    tls: ssl.SSLContext | None = None
    forward_topics: list[str] = field(default_factory=lambda: ["#"])
    forward_exclude: list[str] = field(default_factory=lambda: ["$events/#"])
    subscriptions: list[str] = field(default_factory=list)


class MqttBridge:
    def __init__(self, options: BridgeOptions, deliver: Callable[[Message], object]) -> None:
        self.options = options
        self._deliver = deliver
        self._buffer = OutgoingBuffer(options.buffer_max_messages)
        self._inflight: dict[int, Message] = {}  # insertion order = send order
        self._seq = itertools.count()
        self._echo = EchoFilter() if options.proto_ver == "v4" else None
        self.set_forward(options.forward_topics, options.forward_exclude)
        self._wanted: dict[str, int] = {topic: 1 for topic in options.subscriptions}
        self._wanted_trie: TopicTrie[str] = TopicTrie()
        for topic in options.subscriptions:
            self._wanted_trie.add(topic, topic)
        self._on_broker: set[str] = set()
        self._outbox_event = asyncio.Event()
        self._subs_event = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._run_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._connected_once = asyncio.Event()
        self.connected = False
        self.published = 0
        self.received = 0
        self.reconnects = 0
        self.last_error = ""

    # --- counters ------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        return len(self._buffer) + len(self._inflight)

    @property
    def dropped(self) -> int:
        return self._buffer.dropped

    @property
    def echo_suppressed(self) -> int:
        return self._echo.suppressed if self._echo is not None else 0

    # --- bus side ------------------------------------------------------------------

    def set_forward(self, topics: list[str], exclude: list[str]) -> None:
        """Which local messages go to the broker (a reload may change the mountpoints they name)."""
        forward: TopicTrie[str] = TopicTrie()
        excluded: TopicTrie[str] = TopicTrie()
        for topic in topics:
            forward.add(topic, topic)
        for topic in exclude:
            excluded.add(topic, topic)
        self._forward, self._exclude = forward, excluded

    def forward(self, message: Message) -> None:
        """Bus handler: queue a local message for the broker if the forward rules say so."""
        if message.origin == ORIGIN or self._exclude.match(message.topic):
            return
        if not (message.origin.startswith("rule") or self._forward.match(message.topic)):
            return
        self._buffer.append(message)
        self._drained.clear()
        self._outbox_event.set()

    def remote_added(self, topic_filter: str) -> None:
        count = self._wanted.get(topic_filter, 0)
        self._wanted[topic_filter] = count + 1
        if count == 0:
            self._wanted_trie.add(topic_filter, topic_filter)
            self._subs_event.set()

    def remote_removed(self, topic_filter: str) -> None:
        count = self._wanted.get(topic_filter, 0)
        if count <= 1:
            self._wanted.pop(topic_filter, None)
            self._wanted_trie.remove(topic_filter, topic_filter)
            self._subs_event.set()
        else:
            self._wanted[topic_filter] = count - 1

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        self._run_task = asyncio.create_task(self._run(), name="mqtt-bridge")

    async def wait_connected(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._connected_once.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def stop(self, flush_timeout: float = 5.0) -> None:
        """Flush what is buffered (while connected, up to `flush_timeout`), then disconnect."""
        if self.connected and self.buffered:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drained.wait(), flush_timeout)
        self._stopping = True
        if self._run_task:
            self._run_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._run_task
        if self.buffered:
            log.warning("mqtt bridge stopped with %d messages not delivered to the broker", self.buffered)

    # --- connection loop -------------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        o = self.options
        v5 = o.proto_ver == "v5"
        client = aiomqtt.Client(
            o.host,
            o.port,
            username=o.username or None,
            password=o.password or None,
            identifier=o.client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else True,
            keepalive=max(1, int(o.keepalive)),
            tls_context=o.tls,
            max_inflight_messages=o.max_inflight,
            timeout=10,
        )
        # a full inflight window is normal here, not a warning per publish
        client.pending_calls_threshold = o.max_inflight + 10
        return client

    async def _run(self) -> None:
        delay = self.options.reconnect_initial
        while not self._stopping:
            try:
                async with self._client() as client:
                    self.connected = True
                    self._connected_once.set()
                    delay = self.options.reconnect_initial
                    log.info("mqtt bridge connected to %s:%d", self.options.host, self.options.port)
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                self.last_error = str(exc)
                if self.connected:
                    log.warning("mqtt bridge lost the broker %s:%d: %s", self.options.host, self.options.port, exc)
                else:
                    log.warning("mqtt bridge cannot reach %s:%d: %s; retrying in %.1fs",
                                self.options.host, self.options.port, exc, delay)
            finally:
                self._after_disconnect()
            if self._stopping:
                return
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.options.reconnect_max)
            self.reconnects += 1

    def _after_disconnect(self) -> None:
        self.connected = False
        self._on_broker.clear()
        if self._inflight:
            self._buffer.requeue_front(self._inflight.values())
            self._inflight.clear()
        if self._echo is not None:
            self._echo.clear()

    async def _serve(self, client: aiomqtt.Client) -> None:
        self._subs_event.set()
        tasks = [
            asyncio.create_task(self._receive(client)),
            asyncio.create_task(self._send(client)),
            asyncio.create_task(self._sync_subscriptions(client)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # raises the MqttError that ended the connection
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for m in client.messages:
            payload = m.payload
            if isinstance(payload, str):
                payload = payload.encode()
            elif payload is None:
                payload = b""
            elif not isinstance(payload, bytes):
                payload = bytes(payload) if isinstance(payload, bytearray) else str(payload).encode()
            topic = m.topic.value
            if self._echo is not None and self._echo.consume(topic, payload):
                continue
            self.received += 1
            self._deliver(Message(topic, payload, qos=m.qos, retain=m.retain, origin=ORIGIN))

    async def _send(self, client: aiomqtt.Client) -> None:
        window = asyncio.Semaphore(self.options.max_inflight)
        pending: set[asyncio.Task[None]] = set()
        try:
            while True:
                if not self._buffer:
                    if not self._inflight:
                        self._drained.set()
                    self._outbox_event.clear()
                    await self._outbox_event.wait()
                    continue
                await window.acquire()
                if not self._buffer:
                    window.release()
                    continue
                message = self._buffer.popleft()
                seq = next(self._seq)
                self._inflight[seq] = message
                if self._echo is not None and self._wanted_trie.match(message.topic):
                    self._echo.expect(message.topic, message.payload)
                task = asyncio.ensure_future(self._publish(client, seq, message, window))
                pending.add(task)
                task.add_done_callback(pending.discard)
        finally:
            for task in pending:
                task.cancel()

    async def _publish(self, client: aiomqtt.Client, seq: int, message: Message, window: asyncio.Semaphore) -> None:
        try:
            await client.publish(
                message.topic, message.payload, qos=self.options.qos, retain=message.retain, timeout=math.inf
            )
        except aiomqtt.MqttError:
            return  # stays in _inflight; requeued when the connection is found dead
        finally:
            window.release()
        if self._inflight.pop(seq, None) is not None:
            self.published += 1
        if not self._buffer and not self._inflight:
            self._drained.set()

    async def _sync_subscriptions(self, client: aiomqtt.Client) -> None:
        v5 = self.options.proto_ver == "v5"
        qos = self.options.qos
        while True:
            await self._subs_event.wait()
            self._subs_event.clear()
            wanted = set(self._wanted)
            to_add = sorted(wanted - self._on_broker)
            to_remove = sorted(self._on_broker - wanted)
            for i in range(0, len(to_add), SUBSCRIBE_BATCH):
                batch = to_add[i : i + SUBSCRIBE_BATCH]
                if v5:
                    topics = [(t, SubscribeOptions(qos=qos, noLocal=True)) for t in batch]
                else:
                    topics = [(t, qos) for t in batch]
                codes = await client.subscribe(topics)
                for topic, code in zip(batch, codes):
                    value = getattr(code, "value", code)
                    if value >= 0x80:
                        log.error("broker refused subscription %s: %s", topic, code)
                    else:
                        self._on_broker.add(topic)
            for i in range(0, len(to_remove), SUBSCRIBE_BATCH):
                batch = to_remove[i : i + SUBSCRIBE_BATCH]
                await client.unsubscribe(batch)
                self._on_broker.difference_update(batch)
