"""The bridge's outgoing buffer and its echo filter."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable

from engine.bus.message import Message


class OutgoingBuffer:
    """Bounded FIFO of messages waiting for the broker; overflow drops the oldest (or the newest:
    `overflow = "drop_newest"`) and counts it. Bounded in messages and in bytes (topic + payload).

    Each message carries a stamp (the bridge's subscription generation when it was queued), so
    the sender can hold a message until the subscriptions made before it are on the broker.
    `on_drop` is told of every message dropped (the bridge removes it from disk).
    """

    def __init__(self, max_messages: int, max_bytes: int = 0, overflow: str = "drop_oldest",
                 on_drop: Callable[[Message], object] | None = None) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.drop_newest = overflow == "drop_newest"
        self.on_drop = on_drop
        self._queue: deque[tuple[Message, int]] = deque()
        self.dropped = 0
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._queue)

    def __bool__(self) -> bool:
        return bool(self._queue)

    def _full(self, extra: int) -> bool:
        return len(self._queue) >= self.max_messages or bool(self.max_bytes and self.bytes + extra > self.max_bytes)

    def _drop(self, message: Message) -> None:
        self.dropped += 1
        if self.on_drop is not None:
            self.on_drop(message)

    def _pop_oldest(self) -> None:
        message, _ = self._queue.popleft()
        self.bytes -= size_of(message)
        self._drop(message)

    def append(self, message: Message, stamp: int = 0) -> bool:
        """Queue the message; False if it was dropped (drop_newest, full)."""
        size = size_of(message)
        if self._full(size):
            if self.drop_newest:
                self._drop(message)
                return False
            while self._queue and self._full(size):
                self._pop_oldest()
        self._queue.append((message, stamp))
        self.bytes += size
        return True

    def take(self, limit: int, upto_stamp: int) -> list[Message]:
        """Up to `limit` messages from the head, stopping at the first stamped after `upto_stamp`."""
        queue = self._queue
        taken: list[Message] = []
        while queue and len(taken) < limit:
            message, stamp = queue[0]
            if stamp > upto_stamp:
                break
            queue.popleft()
            self.bytes -= size_of(message)
            taken.append(message)
        return taken

    def requeue_front(self, messages: Iterable[Message]) -> None:
        """Put unacknowledged messages back at the head, in their order, for the next connection."""
        messages = list(messages)
        self._queue.extendleft((m, 0) for m in reversed(messages))
        self.bytes += sum(size_of(m) for m in messages)
        while len(self._queue) > self.max_messages or (self.max_bytes and self.bytes > self.max_bytes
                                                       and len(self._queue) > 1):
            self._pop_oldest()

    def drain(self) -> list[Message]:
        """Everything waiting, in order, leaving the buffer empty."""
        messages = [m for m, _ in self._queue]
        self._queue.clear()
        self.bytes = 0
        return messages


def size_of(message: Message) -> int:
    return len(message.topic) + len(message.payload)


class EchoFilter:
    """Recognises our own publishes coming back from an MQTT 3.1.1 broker.

    MQTT 3.1.1 has no no-local option, so a message we publish on a topic we
    are also subscribed to comes straight back. Each such publish is counted
    by (topic, payload); the first matching inbound message consumes one
    count and is dropped. Counting, not time-windowing, keeps the number of
    deliveries exact even if a backend happens to publish an identical
    message at the same moment. Counts older than `ttl` are forgotten, in
    case the broker never echoed (a lost connection).
    """

    def __init__(self, ttl: float = 60.0) -> None:
        self.ttl = ttl
        # per key, the send times of echoes still expected, oldest first
        self._pending: dict[tuple[str, bytes], deque[float]] = {}
        self._order: deque[tuple[float, tuple[str, bytes]]] = deque()
        self.suppressed = 0

    def __len__(self) -> int:
        return sum(len(times) for times in self._pending.values())

    def expect(self, topic: str, payload: bytes) -> None:
        now = time.monotonic()
        key = (topic, payload)
        self._pending.setdefault(key, deque()).append(now)
        self._order.append((now, key))
        self._expire(now)

    def consume(self, topic: str, payload: bytes) -> bool:
        times = self._pending.get((topic, payload))
        if not times:
            return False
        times.popleft()
        if not times:
            del self._pending[(topic, payload)]
        self.suppressed += 1
        return True

    def clear(self) -> None:
        self._pending.clear()
        self._order.clear()

    def _expire(self, now: float) -> None:
        cutoff = now - self.ttl
        while self._order and self._order[0][0] < cutoff:
            sent, key = self._order.popleft()
            times = self._pending.get(key)
            # consumption takes the oldest first, so the entry is still there
            # exactly when the head of its key's queue is no newer than it
            if times and times[0] <= sent:
                times.popleft()
                if not times:
                    del self._pending[key]
