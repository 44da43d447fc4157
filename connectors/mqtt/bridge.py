"""The MQTT bridge: bus ↔ broker, through reconnects, in order, counting every drop.

Outgoing: `forward` (a bus handler) queues local messages for the broker in
an `OutgoingBuffer`; one sender task publishes them in order with up to
`max_inflight` awaiting their PUBACK. When the connection drops, the
unacknowledged ones go back to the head of the buffer, so they are sent
again, still in order, when the broker returns (at least once). A message
the broker keeps answering by dropping the connection is dropped after
`max_disconnects_per_message` lost connections (see `poison.py`).

On disk (`journal.py`): with `mqtt.buffer.mode = disk` a message enters the
buffer only once it is written to the node's durable queue, and leaves the
file when the broker acknowledged it; with `memory` a stop writes what the
broker did not take. Either way the next start sends those first, in order.

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
import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.mqtt.buffer import EchoFilter, OutgoingBuffer
from connectors.mqtt.journal import BridgeJournal
from connectors.mqtt.client import MqttClient, MqttError, publish_refusal
from connectors.mqtt.poison import PoisonGuard
from engine.bus.message import Message
from engine.bus.trie import TopicTrie

log = logging.getLogger("ocppgw.mqtt")

SUBSCRIBE_BATCH = 200
SEND_BATCH = 500
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
    max_inflight: int = 1000
    buffer_max_messages: int = 100_000
    buffer_max_bytes: int = 0  # 0: no bound in bytes
    buffer_overflow: str = "drop_oldest"
    buffer_mode: str = "memory"  # or "disk"
    # the durable queue's file (journal.py); None: nothing is kept across a stop
    journal_path: Path | None = None
    durable_sync: str = "full"
    # lost connections with a message alone in flight before it is dropped (poison.py; 0: only when an
    # MQTT 5 broker's DISCONNECT names it)
    max_disconnects_per_message: int = 3
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
        self._buffer = OutgoingBuffer(options.buffer_max_messages, options.buffer_max_bytes, options.buffer_overflow,
                                      on_drop=self._dropped_from_buffer)
        self._writing = 0  # messages being written to disk before they are buffered
        self.journal: BridgeJournal | None = None
        if options.journal_path is not None:
            self.journal = BridgeJournal(options.journal_path, disk=options.buffer_mode == "disk",
                                         sync=options.durable_sync)
            for message in self.journal.open():  # raises DurableError: the node refuses to start
                self._buffer.append(message, 0)
        self._inflight: dict[int, Message] = {}  # insertion order = send order
        self._poison = PoisonGuard(options.max_disconnects_per_message)
        self._seq = itertools.count()
        self._echo = EchoFilter() if options.proto_ver == "v4" else None
        self.set_forward(options.forward_topics, options.forward_exclude)
        self._wanted: dict[str, int] = {topic: 1 for topic in options.subscriptions}
        self._wanted_trie: TopicTrie[str] = TopicTrie()
        for topic in options.subscriptions:
            self._wanted_trie.add(topic, topic)
        self._on_broker: set[str] = set()
        self._dirty: set[str] = set()  # filters whose wanted state changed since the last sync
        self._outbox_event = asyncio.Event()
        self._window_event = asyncio.Event()
        # A message waits until the subscriptions made before it are acknowledged: a charge point's
        # first CALL must not reach a backend before its command topic is subscribed, or the answer
        # is lost. Generation = how many remote subscriptions were added; -1: none confirmed yet.
        self._sub_generation = 0
        self._subscribed_upto = -1
        self._subs_done = asyncio.Event()
        self._sub_waiters: list[tuple[int, asyncio.Future[None]]] = []  # subscriptions_confirmed()
        self._client: MqttClient | None = None
        self._subs_event = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._run_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._connected_once = asyncio.Event()
        self.connected = False
        self.published = 0
        self.refused = 0  # messages the broker answered with a reason code >= 0x80
        self._refusals_logged: set[int] = set()
        self.received = 0
        self.malformed_received = 0  # packets from the broker that broke MQTT (each cost the connection)
        self.reconnects = 0
        self.last_error = ""

    # --- counters ------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        return len(self._buffer) + len(self._inflight) + self._writing

    @property
    def dropped(self) -> int:
        return self._buffer.dropped

    @property
    def redelivered(self) -> int:
        """Messages kept from the last run that the broker took (some may have reached it then too)."""
        return self.journal.redelivered if self.journal is not None else 0

    @property
    def poison_dropped(self) -> dict[str, int]:
        """Messages dropped because the broker dropped the connection over them, by reason."""
        return self._poison.dropped

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
        if message.origin == ORIGIN or self._exclude.has_match(message.topic):
            return
        if not (message.origin.startswith("rule") or self._forward.has_match(message.topic)):
            return
        self._drained.clear()
        journal = self.journal
        if journal is not None and journal.disk and journal.queue is not None:  # (None: stopped)
            self._writing += 1
            stamp = self._sub_generation
            journal.write(message).add_done_callback(lambda done: self._written(message, stamp, done))
            return
        self._buffer.append(message, self._sub_generation)
        self._outbox_event.set()

    def _written(self, message: Message, stamp: int, done: asyncio.Future[int | None]) -> None:
        """The message is on disk (or could not be written: then it goes on from memory, counted)."""
        self._writing -= 1
        assert self.journal is not None
        if done.cancelled() or done.exception() is not None or done.result() is None:
            self.journal.forget(message)
            self.journal.write_errors += 1
        self._buffer.append(message, stamp)
        self._outbox_event.set()

    def _dropped_from_buffer(self, message: Message) -> None:
        if self.journal is not None:
            self.journal.done(message, delivered=False)

    def subscriptions_confirmed(self) -> asyncio.Future[None] | None:
        """None when every remote subscription made so far is on the broker, else a future done when
        it is (after a reconnect too): a takeover claim goes out only then (engine/ocpp/takeover.py)."""
        if self._subscribed_upto >= self._sub_generation:
            return None
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sub_waiters.append((self._sub_generation, waiter))
        return waiter

    def remote_added(self, topic_filter: str) -> None:
        count = self._wanted.get(topic_filter, 0)
        self._wanted[topic_filter] = count + 1
        if count == 0:
            self._sub_generation += 1
            self._wanted_trie.add(topic_filter, topic_filter)
            self._dirty.add(topic_filter)
            self._subs_event.set()

    def remote_removed(self, topic_filter: str) -> None:
        count = self._wanted.get(topic_filter, 0)
        if count <= 1:
            self._wanted.pop(topic_filter, None)
            self._wanted_trie.remove(topic_filter, topic_filter)
            self._dirty.add(topic_filter)
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
        journal = self.journal
        if journal is not None and journal.queue is not None:
            await journal.queue.flush()  # messages being written: on disk, and (next turn) in the buffer
            await asyncio.sleep(0)
        leftover = list(self._inflight.values()) + self._buffer.drain()
        self._inflight.clear()
        kept = await journal.keep(leftover) if journal is not None else 0
        if kept:
            log.warning("mqtt bridge stopped with %d messages not delivered to the broker: kept in %s, they go "
                        "first after the next start", kept, journal.path if journal else "")
        elif leftover:
            log.warning("mqtt bridge stopped with %d messages not delivered to the broker", len(leftover))

    # --- connection loop -------------------------------------------------------------

    async def _run(self) -> None:
        o = self.options
        delay = o.reconnect_initial
        while not self._stopping:
            try:
                client = await MqttClient.connect(
                    o.host, o.port, client_id=o.client_id, on_message=self._on_broker_message,
                    v5=o.proto_ver == "v5", username=o.username, password=o.password,
                    keepalive=max(1, int(o.keepalive)), tls=o.tls, with_properties=True,
                )
            except MqttError as exc:
                self.last_error = str(exc)
                log.warning("mqtt bridge cannot reach %s:%d: %s; retrying in %.1fs", o.host, o.port, exc, delay)
            else:
                self.connected = True
                self._connected_once.set()
                delay = o.reconnect_initial
                log.info("mqtt bridge connected to %s:%d", o.host, o.port)
                try:
                    await self._serve(client)
                except MqttError as exc:
                    self.last_error = str(exc)
                finally:
                    if self._stopping and not client.closed.done():
                        with contextlib.suppress(Exception):
                            await client.disconnect()
                    client.abort()
                    self._after_disconnect(client)
                if self._stopping:
                    return
                log.warning("mqtt bridge lost the broker %s:%d: %s", o.host, o.port, self.last_error or "closed")
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, o.reconnect_max)
            self.reconnects += 1

    def _after_disconnect(self, client: MqttClient) -> None:
        self.connected = False
        if client.protocol_error is not None:  # logged once, as why the broker was lost
            self.malformed_received += 1
            self.last_error = f"the broker sent a packet that breaks MQTT ({client.protocol_error}); reconnecting"
        self._subscribed_upto = -1  # a new connection publishes once its subscriptions are back
        self._client = None
        self._on_broker.clear()
        if self._inflight:
            unacked = list(self._inflight.values())
            self._inflight.clear()
            # the broker may have closed the connection over one of them (poison.py); what we closed
            # ourselves (stop, a silent connection) accuses nobody
            if not self._stopping and not client.closed_by_us and \
                    self._poison.connection_lost(unacked, client.disconnect_reason):
                self._done(unacked.pop(0), delivered=False)
            self._buffer.requeue_front(unacked)
        if self._echo is not None:
            self._echo.clear()

    async def _serve(self, client: MqttClient) -> None:
        self._client = client
        self._dirty.update(self._wanted)  # a new connection subscribes to everything again
        self._subs_event.set()
        tasks = [
            asyncio.create_task(self._send(client)),
            asyncio.create_task(self._sync_subscriptions(client)),
        ]
        closed = asyncio.ensure_future(asyncio.shield(client.closed))
        try:
            done, _ = await asyncio.wait([*tasks, closed], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not closed:
                    task.result()  # raises what ended it
            if closed in done:
                self.last_error = self.last_error or "connection closed"
        finally:
            for task in (*tasks, closed):
                task.cancel()
            await asyncio.gather(*tasks, closed, return_exceptions=True)

    def _on_broker_message(self, topic: str, payload: bytes, qos: int, retain: bool,
                           properties: dict[str, Any] | None) -> None:
        if self._echo is not None and self._echo.consume(topic, payload):
            return
        self.received += 1
        self._deliver(Message(topic, payload, qos=qos, retain=retain, origin=ORIGIN, properties=properties))

    async def _send(self, client: MqttClient) -> None:
        qos = self.options.qos
        inflight, buffer, seq, echo, poison = self._inflight, self._buffer, self._seq, self._echo, self._poison
        client.on_ack = self._acked
        publish = client.publish
        max_size, max_inflight = client.max_packet_size, self.options.max_inflight
        while True:
            # after a lost connection, what was in flight goes out again in a small window (poison.py)
            window = min(poison.probe_window, max_inflight) if poison.probing else max_inflight
            if not buffer:
                if not inflight and not self._writing:
                    self._drained.set()
                self._outbox_event.clear()
                await self._outbox_event.wait()
                continue
            room = window - len(inflight)
            if room <= 0:
                self._window_event.clear()
                await self._window_event.wait()
                continue
            # what may go now: in order, up to the window, none queued before its subscriptions
            # were acknowledged, and at most SEND_BATCH before the loop gets to flush and read
            batch = buffer.take(min(room, SEND_BATCH), self._subscribed_upto)
            if not batch:
                self._subs_done.clear()
                await self._subs_done.wait()
                continue
            for message in batch:
                if max_size is not None and (message.properties or len(message.payload) + 4 * len(message.topic) + 16
                                             > max_size) and \
                        client.publish_size(message.topic, message.payload, qos, message.properties) > max_size:
                    # the broker said how big a packet it takes (MQTT 5): a bigger one would end the connection
                    poison.drop(message, "packet_too_large",
                                f"bigger than the broker's maximum packet size of {max_size} bytes")
                    self._done(message, delivered=False)
                    continue
                if echo is not None and self._wanted_trie.match(message.topic):
                    echo.expect(message.topic, message.payload)
                try:
                    if qos:
                        token = next(seq)
                        inflight[token] = message  # before publishing: if the connection is gone, it is resent
                        publish(message.topic, message.payload, qos, message.retain, token, message.properties)
                    else:
                        publish(message.topic, message.payload, 0, message.retain, None, message.properties)
                        self.published += 1
                        self._done(message)  # QoS 0: done once written to the socket
                except (UnicodeEncodeError, OverflowError) as exc:
                    # no MQTT packet can carry it (a lone surrogate in the topic, a payload over 256 MB)
                    if qos:
                        del inflight[token]
                    poison.drop(message, "invalid_message", f"it cannot be encoded as MQTT: {exc}")
                    self._done(message, delivered=False)
            if len(batch) == SEND_BATCH:
                await asyncio.sleep(0)  # a long backlog: let the loop flush and read in between

    def _acked(self, token: int, code: int) -> None:
        """The broker answered a publish (the client's on_ack). A refusal (MQTT 5 reason code >= 0x80:
        not authorized, quota exceeded, topic invalid...) is final: sending it again would get the
        same answer, so the message is counted as refused and logged, not retried."""
        message = self._inflight.pop(token, None)
        if message is not None and self._poison.probing:
            self._poison.acked(message)
        if message is not None and code >= 0x80:
            self.refused += 1
            if code not in self._refusals_logged:
                self._refusals_logged.add(code)
                log.warning("the MQTT broker refused a message on %s: %s (counted in mqtt_bridge_refused; "
                            "logged once per reason code)", message.topic, publish_refusal(code))
        elif message is not None:
            self.published += 1
        if message is not None:
            self._done(message)
        self._window_event.set()
        if not self._buffer and not self._inflight and not self._writing:
            self._drained.set()

    def _done(self, message: Message, delivered: bool = True) -> None:
        if self.journal is not None:
            self.journal.done(message, delivered)

    async def _sync_subscriptions(self, client: MqttClient) -> None:
        qos = self.options.qos
        while True:
            await self._subs_event.wait()
            self._subs_event.clear()
            generation = self._sub_generation  # every subscription added so far is in `wanted` now
            # only the filters that changed since the last pass: a connect storm adds thousands,
            # one wake-up each, and comparing whole sets every time would cost O(n) per wake-up
            dirty, self._dirty = self._dirty, set()
            wanted, on_broker = self._wanted, self._on_broker
            to_add = sorted(t for t in dirty if t in wanted and t not in on_broker)
            to_remove = sorted(t for t in dirty if t not in wanted and t in on_broker)
            for i in range(0, len(to_add), SUBSCRIBE_BATCH):
                batch = to_add[i : i + SUBSCRIBE_BATCH]
                codes = await client.subscribe([(t, qos) for t in batch], no_local=True)
                for topic, code in zip(batch, codes, strict=False):
                    if code >= 0x80:
                        log.error("broker refused subscription %s: reason code 0x%02x", topic, code)
                    else:
                        self._on_broker.add(topic)
            self._subscribed_upto = generation
            self._subs_done.set()
            if self._sub_waiters:
                waiting, self._sub_waiters = self._sub_waiters, []
                for stamp, waiter in waiting:
                    if stamp > generation:
                        self._sub_waiters.append((stamp, waiter))
                    elif not waiter.done():
                        waiter.set_result(None)
            for i in range(0, len(to_remove), SUBSCRIBE_BATCH):
                batch = to_remove[i : i + SUBSCRIBE_BATCH]
                await client.unsubscribe(batch)
                self._on_broker.difference_update(batch)
