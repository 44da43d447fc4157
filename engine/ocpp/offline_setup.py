"""Building the offline command queue for a node (engine/node.py): the store, the queue, the watch."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from engine.config.schema import Settings
from engine.parts import NodeError
from engine.ocpp.context import GatewayContext
from engine.ocpp.offline import OfflineQueue, store_path
from engine.ocpp.offline_link import OfflineWatch, watcher_rule, wildcard_filters
from engine.ocpp.offline_store import OfflineStore

log = logging.getLogger("ocppgw.offline")


class OfflineCommands:
    def __init__(self, queue: OfflineQueue, watch: OfflineWatch) -> None:
        self.queue = queue
        self.watch = watch

    async def stop(self) -> None:
        await self.watch.stop()
        self.queue.close()


def start_offline(settings: Settings, ctx: GatewayContext, cluster: Any) -> OfflineCommands | None:
    """The offline queue and its watch, or None (and why, logged) where it cannot be exact."""
    from engine.parts import bridge_options, mountpoints

    enabled = settings.gateway.ocpp.dnstream.offline_queue.enable
    if cluster is None and settings.mqtt.server != "embedded":
        if enabled:
            log.warning("dnstream.offline_queue.enable has no effect: it needs cluster.enable or the embedded "
                        "broker (on a shared broker, a node alone cannot know whether another holds a charge point)")
        return None
    filters = wildcard_filters(settings.gateway.ocpp.dnstream.topic, mountpoints(settings))
    if filters is None:
        log.warning("offline queue off: dnstream.topic %r has no ${cid} level", settings.gateway.ocpp.dnstream.topic)
        return None
    path = store_path(settings.node.data_dir, settings.node.name)
    try:
        store = OfflineStore(path)
    except (sqlite3.Error, OSError) as exc:
        raise NodeError(f"gateway.ocpp.dnstream.offline_queue: {path}: {exc} (move the file aside to start "
                        "with an empty queue)") from None
    queue = OfflineQueue(ctx, store, cluster)
    watch = OfflineWatch(bridge_options(settings), filters, queue.command, watcher_rule(settings.node.name, cluster))
    watch.launch()
    return OfflineCommands(queue, watch)
