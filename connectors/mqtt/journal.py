"""The bridge's messages on disk: `mqtt.buffer.mode = disk`, and what a stop keeps for the next start.

One durable queue (engine/durable) per node, `<node.data_dir>/buffers/<node.name>/mqtt_bridge.db`.
With `disk` every message is written before the bridge buffers it for the broker, and removed
when it is done: acknowledged by the broker (QoS 1/2 PUBACK), written to the socket (QoS 0),
refused, or dropped (full buffer, poison). With `memory` the file is used only when the node
stops with messages the broker did not take: they are written then, and the next start sends
them first, in order, whatever the mode. Messages read back at a start may have reached the
broker already (sent, the PUBACK lost with the node): they are counted in `redelivered` when
the broker takes them again.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from pathlib import Path

import orjson

from engine.bus.message import Message
from engine.durable import DurableError, DurableQueue
from engine.durable.codec import tagged, untagged

log = logging.getLogger("ocppgw.mqtt")

_HEADER = struct.Struct(">BBBHI")  # format, qos, retain, topic length, properties length
_FORMAT = 1
ORIGIN_RESTORED = "mqtt-journal"  # never "mqtt": that origin is what the bridge received


def encode(message: Message) -> bytes:
    topic = message.topic.encode("utf-8", "surrogatepass")
    props = orjson.dumps(tagged(message.properties)) if message.properties else b""
    return _HEADER.pack(_FORMAT, message.qos, 1 if message.retain else 0, len(topic), len(props)) + topic + props \
        + message.payload


def decode(data: bytes) -> Message:
    fmt, qos, retain, topic_len, props_len = _HEADER.unpack_from(data)
    if fmt != _FORMAT:
        raise ValueError(f"unknown message format {fmt}")
    start = _HEADER.size
    topic = data[start : start + topic_len].decode("utf-8", "surrogatepass")
    start += topic_len
    properties = untagged(orjson.loads(data[start : start + props_len])) if props_len else None
    start += props_len
    return Message(topic, data[start:], qos=qos, retain=bool(retain), origin=ORIGIN_RESTORED, properties=properties)


class BridgeJournal:
    """Which of the bridge's messages are on disk (by identity: the bridge holds each until done)."""

    def __init__(self, path: Path, *, disk: bool, sync: str = "full") -> None:
        self.path = path
        self.disk = disk
        self.sync = sync
        self.queue: DurableQueue | None = None
        self._seq_of: dict[int, int] = {}  # id(message) -> its number in the queue
        self._restored: set[int] = set()  # numbers read back at the start
        self.restored = 0
        self.redelivered = 0
        self.write_errors = 0

    # --- counters for metrics --------------------------------------------------------

    @property
    def items(self) -> int:
        return self.queue.items if self.queue is not None else 0

    @property
    def bytes(self) -> int:
        return self.queue.bytes if self.queue is not None else 0

    @property
    def commits(self) -> int:
        return self.queue.commits if self.queue is not None else 0

    # --- start -------------------------------------------------------------------------

    def open(self) -> list[Message]:
        """Open the file (with `disk`, or when a previous stop left messages) and read back what it
        holds, in order. Raises DurableError (locked, unreadable)."""
        if not self.disk and not self.path.exists():
            return []
        self.queue = DurableQueue(self.path, sync=self.sync)
        messages: list[Message] = []
        bad = 0
        for seq, data in self.queue.load():
            try:
                message = decode(data)
            except (ValueError, KeyError, TypeError, struct.error):  # JSONDecodeError is a ValueError
                bad += 1
                self.queue.ack(seq)
                continue
            self._seq_of[id(message)] = seq
            self._restored.add(seq)
            messages.append(message)
        if bad:
            log.error("%s: %d stored messages could not be read back and were dropped", self.path, bad)
        self.restored = len(messages)
        if messages:
            log.info("mqtt bridge: %d messages kept from the last run go to the broker first (%s)",
                     len(messages), self.path)
        return messages

    # --- running -----------------------------------------------------------------------

    def write(self, message: Message) -> asyncio.Future[int | None]:
        assert self.queue is not None
        future = self.queue.append(encode(message))
        self._seq_of[id(message)] = self.queue.last_seq
        return future

    def forget(self, message: Message) -> None:
        """The message was not written (a write error or overflow before the write)."""
        self._seq_of.pop(id(message), None)

    def done(self, message: Message, delivered: bool = True) -> None:
        """The message is finished with (acknowledged, written to the socket, refused or dropped)."""
        seq = self._seq_of.pop(id(message), None)
        if seq is None or self.queue is None:
            return
        if seq in self._restored:
            self._restored.discard(seq)
            if delivered:
                self.redelivered += 1
        self.queue.ack(seq)

    def on_disk(self, message: Message) -> bool:
        return id(message) in self._seq_of

    # --- stop --------------------------------------------------------------------------

    async def keep(self, messages: list[Message]) -> int:
        """Write the messages not on disk yet (in their order, after those that are: those came first),
        wait until everything is durable, close. Returns how many messages the file now holds."""
        spill = [m for m in messages if not self.on_disk(m)]
        try:
            if spill and self.queue is None:
                self.queue = DurableQueue(self.path, sync=self.sync)
            if self.queue is None:
                return 0
            for message in spill:
                self.write(message)
            await self.queue.flush()
            return self.queue.items
        except DurableError as exc:
            log.error("mqtt bridge: could not keep %d messages for the next start: %s", len(spill), exc)
            return 0
        finally:
            if self.queue is not None:
                await self.queue.close()
                self.queue = None
            self._seq_of.clear()
