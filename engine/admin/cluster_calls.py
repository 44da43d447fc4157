"""Asking the cluster room from the admin API: every other node at once, and who did not answer."""

from __future__ import annotations

import asyncio
from typing import Any

from engine.admin.common import ApiError
from engine.admin.nodeview import ClusterView, NodeView
from engine.cluster import NodeUnreachable, RemoteError


def cluster_of(node: NodeView) -> ClusterView | None:
    """The cluster room if this node is in one (a test's stand-in may have none)."""
    return getattr(node, "cluster", None)


async def ask_each(cluster: ClusterView, nodes: list[str], op: str, args: dict[str, Any],
                   timeout: float | None = None) -> tuple[dict[str, Any], list[str]]:
    """`op` on each of `nodes` at once: (answers by node, the nodes that did not answer in time).
    An error a node answers with (RemoteError) is raised."""
    found = await asyncio.gather(*(cluster.request(n, op, args, timeout) for n in nodes), return_exceptions=True)
    answers: dict[str, Any] = {}
    silent: list[str] = []
    for name, result in zip(nodes, found, strict=True):
        if isinstance(result, NodeUnreachable):
            silent.append(name)
        elif isinstance(result, RemoteError):
            raise ApiError(result.status, result.code, result.message)
        elif isinstance(result, BaseException):
            raise result
        else:
            answers[name] = result
    return answers, silent
