"""The node that watches every charge point's downstream topic for the offline queue.

Its own MQTT connection (client id `<mqtt client id>-offline`), never the bridge's: the bridge
subscribes each connected charge point's `cs/<cid>`, and a broker may send one copy per matching
subscription of one connection (mosquitto with MQTT 5 does), so a wildcard beside them there
would make a charge point get a command twice. On separate connections each gets one copy; the
wildcard's copy of a command for a charge point connected here is ignored (engine/ocpp/offline.py).

Exactly one node watches: without a cluster the node itself (which is why the feature needs
`cluster.enable` or the embedded broker: on a shared external broker a node alone cannot know
who else holds a charge point); with the cluster, the running node with the lowest name, checked
every `ROLE_CHECK` seconds against the cluster's presence records. While the role moves (a node
joins or stops) commands may be seen by two watchers or none for up to that long.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from connectors.mqtt.bridge import BridgeOptions
from connectors.mqtt.client import MqttClient
from connectors.mqtt.side_link import SideLink
from engine.ocpp.context import TopicTemplate

log = logging.getLogger("ocppgw.offline")

ROLE_CHECK = 1.0  # seconds


def wildcard_filters(template: str, mountpoints: list[str]) -> list[tuple[str, int]] | None:
    """(filter, level of the cid) for each mountpoint; None when `${cid}` is not a whole level."""
    rendered = TopicTemplate(template).render({"cid": "\0"})
    levels = rendered.split("/")
    if rendered.count("\0") != 1 or "\0" not in levels:
        return None
    at = levels.index("\0")
    found = []
    for mp in mountpoints:
        topic = mp + rendered.replace("\0", "+")
        found.append((topic, at + mp.count("/")))
    return found


class OfflineWatch(SideLink):
    suffix = "offline"
    what = "offline queue"

    def __init__(self, options: BridgeOptions, filters: list[tuple[str, int]],
                 on_command: Callable[[str, str, bytes], None], is_watcher: Callable[[], bool]) -> None:
        super().__init__(options)
        self.filters = filters
        self.on_command = on_command
        self.is_watcher = is_watcher
        self.watching = False  # the wildcard is subscribed on the broker

    def on_message(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        levels = topic.split("/")
        for topic_filter, at in self.filters:
            if _matches(topic_filter, levels) and at < len(levels):
                try:
                    self.on_command(levels[at], topic, payload)
                except Exception:
                    log.exception("offline queue: command on %s", topic[:200])
                return

    async def run_connected(self, client: MqttClient) -> None:
        """Take the watcher's role (subscribe the wildcard) or leave it, as `is_watcher` says, every
        ROLE_CHECK seconds while connected."""
        self._connected.set()
        while not client.closed.done():
            try:
                want = self.is_watcher()
            except Exception:
                log.exception("offline queue: cannot tell whether this node watches")
                want = False
            if want != self.watching:
                if want:
                    await client.subscribe([(f, 1) for f, _ in self.filters], no_local=False)
                    log.info("offline queue: this node watches %s", ", ".join(f for f, _ in self.filters))
                else:
                    await client.unsubscribe([f for f, _ in self.filters])
                    log.info("offline queue: another node watches now")
                self.watching = want
            await asyncio.wait([client.closed], timeout=ROLE_CHECK)

    def lost(self) -> None:
        self.watching = False


def _matches(topic_filter: str, levels: list[str]) -> bool:
    parts = topic_filter.split("/")
    if len(parts) != len(levels):
        return False
    return all(p == "+" or p == lvl for p, lvl in zip(parts, levels, strict=True))


def watcher_rule(node: str, cluster: object | None) -> Callable[[], bool]:
    """Whether this node is the watcher now: alone, or the lowest-named running node."""
    if cluster is None:
        return lambda: True

    def lowest() -> bool:
        joined = getattr(cluster, "joined_at", None)
        if joined is None or time.monotonic() - joined < ROLE_CHECK:
            return False  # the others' retained presence records may not have arrived yet
        nodes = cluster.nodes()  # type: ignore[attr-defined]  # ClusterMember
        running = [n for n, record in nodes.items() if record.get("node_status") == "running"]
        return min(running, default=node) == node

    return lowest
