"""The built-in user store as cluster state (engine/cluster/config_sync.py, kind `users`): a user
added, changed or deleted through the API on one node is in every node's store. Only the store's
file travels: hashed records, never a password."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from engine.admin.cluster_calls import cluster_of
from engine.admin.nodeview import NodeView
from engine.auth.store import AuthStoreError, UserStore
from engine.cluster.config_sync import ConfigSync, Version

T = TypeVar("T")

_locks: weakref.WeakKeyDictionary[NodeView, asyncio.Lock] = weakref.WeakKeyDictionary()
_syncs: weakref.WeakKeyDictionary[NodeView, ConfigSync] = weakref.WeakKeyDictionary()


async def change_users(node: NodeView, store: UserStore, fn: Callable[..., T], *args: Any) -> tuple[T, list[dict[str, Any]]]:
    """`fn(*args)` (a store change, off the loop); in a cluster, the store then goes to every other
    node: their outcomes. One change at a time per node, so versions follow the store's order."""
    lock = _locks.setdefault(node, asyncio.Lock())
    sync = _syncs.get(node)
    async with lock:
        result = await asyncio.to_thread(fn, *args)
        if sync is None:
            return result, []
        text, version = store.export(), sync.next_version()
        sync.kept(version, text, publish=True)
    return result, sync.mark(version, await sync.spread(version, text))  # first: this node, if it lost


def join_users_sync(node: NodeView) -> None:
    """In a cluster: take the user store other nodes publish, and answer their `users.apply`."""
    from engine.cluster.member import ClusterMember

    cluster, store = cluster_of(node), node.user_store
    if not isinstance(cluster, ClusterMember) or store is None:
        return
    lock = _locks.setdefault(node, asyncio.Lock())

    async def apply(text: str, version: Version) -> dict[str, Any]:
        async with lock:
            if version <= sync.version:
                return {"status": "reloaded" if version == sync.version else "superseded", "errors": []}
            try:
                await asyncio.to_thread(store.replace_all, text,
                                        f"the cluster's user store version {version[0]} from node {version[1]}")
            except AuthStoreError as exc:
                return {"status": "refused", "errors": [str(exc)]}
            sync.kept(version, text, publish=False)
        return {"status": "reloaded", "errors": []}

    sync = ConfigSync(cluster, node.settings.node.data_dir, apply, kind="users",
                      max_size=int(node.settings.cluster.max_record_size),
                      current=lambda: store.export() if sync.version != (0, "") else None)
    _syncs[node] = sync
