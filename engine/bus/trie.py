"""Topic trie: which subscriptions match a topic, in time independent of how many.

Exact filters (one per charge point is the common case) sit in a dict and
cost one lookup; only wildcard filters go into the trie, which is walked
level by level along the exact child, `+` and `#`. What the walk finds for
a topic is kept (up to `WILD_CACHE_MAX` topics) until a wildcard filter is
added or removed, so the steady state is two dict lookups per topic.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from engine.bus.topic import is_wildcard

T = TypeVar("T")

WILD_CACHE_MAX = 16_384


class _Node(Generic[T]):
    __slots__ = ("children", "values")

    def __init__(self) -> None:
        self.children: dict[str, _Node[T]] = {}
        self.values: list[T] = []


class TopicTrie(Generic[T]):
    """Maps topic filters to values; `match(topic)` returns the values of every matching filter."""

    def __init__(self) -> None:
        self._exact: dict[str, tuple[T, ...]] = {}  # replaced, never changed: match() hands them out
        self._root: _Node[T] = _Node()
        self._count = 0
        self._wild_cache: dict[str, tuple[T, ...]] = {}

    def __len__(self) -> int:
        return self._count

    def add(self, topic_filter: str, value: T) -> None:
        if is_wildcard(topic_filter):
            self._wild_cache.clear()
            node = self._root
            for level in topic_filter.split("/"):
                node = node.children.setdefault(level, _Node())
            node.values.append(value)
        else:
            self._exact[topic_filter] = self._exact.get(topic_filter, ()) + (value,)
        self._count += 1

    def remove(self, topic_filter: str, value: T) -> bool:
        """Remove one (filter, value) pair; False if it was not there."""
        if not is_wildcard(topic_filter):
            values = self._exact.get(topic_filter)
            if not values or value not in values:
                return False
            i = values.index(value)
            values = values[:i] + values[i + 1:]
            if values:
                self._exact[topic_filter] = values
            else:
                del self._exact[topic_filter]
            self._count -= 1
            return True
        path = [self._root]
        for level in topic_filter.split("/"):
            child = path[-1].children.get(level)
            if child is None:
                return False
            path.append(child)
        if value not in path[-1].values:
            return False
        path[-1].values.remove(value)
        self._wild_cache.clear()
        levels = topic_filter.split("/")
        for depth in range(len(levels), 0, -1):  # prune empty branches
            node = path[depth]
            if node.values or node.children:
                break
            del path[depth - 1].children[levels[depth - 1]]
        self._count -= 1
        return True

    def match(self, topic: str) -> tuple[T, ...]:
        """The values of every filter matching `topic`, exact filters first. A tuple that later adds
        and removes leave alone, so a caller may change subscriptions while it goes through one
        (the bus publishes twice per OCPP call: no list is built for it)."""
        exact = self._exact.get(topic, ())
        if not self._root.children:
            return exact
        wild = self._wild(topic)
        if not wild:
            return exact
        return exact + wild if exact else wild

    def has_match(self, topic: str) -> bool:
        """Whether any filter matches `topic` (no list built: the bridge asks this of every message)."""
        return topic in self._exact or (bool(self._root.children) and bool(self._wild(topic)))

    def _wild(self, topic: str) -> tuple[T, ...]:
        wild = self._wild_cache.get(topic)
        if wild is None:
            found: list[T] = []
            self._walk(self._root, topic.split("/"), 0, topic.startswith("$"), found)
            if len(self._wild_cache) >= WILD_CACHE_MAX:
                self._wild_cache.clear()
            wild = self._wild_cache[topic] = tuple(found)
        return wild

    def _walk(self, node: _Node[T], levels: list[str], depth: int, dollar: bool, found: list[T]) -> None:
        children = node.children
        wild_ok = not (dollar and depth == 0)
        if wild_ok:
            hash_node = children.get("#")
            if hash_node is not None:
                found.extend(hash_node.values)
        if depth == len(levels):
            return
        last = depth + 1 == len(levels)
        for child in (children.get(levels[depth]), children.get("+") if wild_ok else None):
            if child is None:
                continue
            if last:
                found.extend(child.values)
                # "a/#" also matches "a": the # child of the last level
                hash_node = child.children.get("#")
                if hash_node is not None:
                    found.extend(hash_node.values)
            elif child.children:
                self._walk(child, levels, depth + 1, dollar, found)

    def filters(self) -> Iterator[str]:
        yield from self._exact
        stack: list[tuple[_Node[T], list[str]]] = [(self._root, [])]
        while stack:
            node, prefix = stack.pop()
            if node.values:
                yield "/".join(prefix)
            for level, child in node.children.items():
                stack.append((child, prefix + [level]))
