"""In-process publish/subscribe with MQTT topic semantics.

Delivery is synchronous and in order: `publish` calls every matching
handler before it returns, so a handler must not block; one that needs to
do I/O queues the message itself. A handler that raises is logged and
counted, and the other handlers still get the message.

A subscription may be `remote`: the MQTT bridge mirrors those filters to the
broker (a charge point's downstream topic, so the broker routes its commands
to the node holding its socket). Watchers hear when the first remote
subscription to a filter appears and the last one goes.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Protocol

from engine.bus.message import Message
from engine.bus.topic import validate_filter, validate_name
from engine.bus.trie import TopicTrie

log = logging.getLogger("ocppgw.bus")

Handler = Callable[[Message], None]


class RemoteWatcher(Protocol):
    def remote_added(self, topic_filter: str) -> None: ...
    def remote_removed(self, topic_filter: str) -> None: ...


class Subscription:
    __slots__ = ("topic_filter", "handler", "remote", "name")

    def __init__(self, topic_filter: str, handler: Handler, remote: bool, name: str) -> None:
        self.topic_filter = topic_filter
        self.handler = handler
        self.remote = remote
        self.name = name

    def __repr__(self) -> str:
        return f"Subscription({self.topic_filter!r}, {self.name or self.handler!r})"


class Bus:
    def __init__(self) -> None:
        self._trie: TopicTrie[Subscription] = TopicTrie()
        self._remote: Counter[str] = Counter()
        self._watchers: list[RemoteWatcher] = []
        self.published = 0
        self.handler_errors = 0
        self.version = 0  # changes with every subscribe/unsubscribe, for callers that cache matches
        # why the MQTT 5 properties of published messages cannot reach the MQTT broker's subscribers
        # ("": they can); the node sets it from the MQTT settings, republish warns at rule load
        self.properties_dropped = ""

    def subscribe(self, topic_filter: str, handler: Handler, *, remote: bool = False, name: str = "") -> Subscription:
        validate_filter(topic_filter)
        sub = Subscription(topic_filter, handler, remote, name)
        self._trie.add(topic_filter, sub)
        self.version += 1
        if remote:
            self._remote[topic_filter] += 1
            if self._remote[topic_filter] == 1:
                for watcher in self._watchers:
                    watcher.remote_added(topic_filter)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if not self._trie.remove(sub.topic_filter, sub):
            return
        self.version += 1
        if sub.remote:
            self._remote[sub.topic_filter] -= 1
            if self._remote[sub.topic_filter] <= 0:
                del self._remote[sub.topic_filter]
                for watcher in self._watchers:
                    watcher.remote_removed(sub.topic_filter)

    def publish(self, message: Message) -> int:
        """Deliver to every matching subscription; return how many handlers took it."""
        validate_name(message.topic)
        self.published += 1
        delivered = 0
        for sub in self._trie.match(message.topic):
            try:
                sub.handler(message)
                delivered += 1
            except Exception:
                self.handler_errors += 1
                log.exception("bus handler %r failed on %s", sub, message.topic)
        return delivered

    def has_subscribers(self, topic: str) -> bool:
        return self._trie.has_match(topic)

    def watch_remote(self, watcher: RemoteWatcher) -> None:
        self._watchers.append(watcher)

    def unwatch_remote(self, watcher: RemoteWatcher) -> None:
        if watcher in self._watchers:
            self._watchers.remove(watcher)

    def remote_filters(self) -> Iterable[str]:
        return list(self._remote)

    def subscription_count(self) -> int:
        return len(self._trie)
