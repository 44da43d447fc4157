"""Config over the API: read it, change it, reload it (EMQX's /configs)."""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.admin.common import bad_request, json_response
from engine.admin.nodeview import NodeView
from engine.config import ConfigError, dump_hocon
from engine.config.dump import secrets_of
from engine.config.loader import log_warnings
from engine.config.background import in_background
from engine.cluster.config_sync import ConfigSync, Version
from engine.config.overlay import overlay_file, parse_hocon, read_overlay, settings_for_overlay, settings_for_upload, write_overlay_text
from engine.config.schema import Settings
from engine.reload import ReloadError, ReloadReport


def refused(errors: list[str]) -> Response:
    return json_response({"code": "BAD_CONFIG", "message": "; ".join(errors), "errors": errors}, 400)


_changing: weakref.WeakKeyDictionary[NodeView, asyncio.Lock] = weakref.WeakKeyDictionary()


class Refused(Exception):
    """A change the loader or the reload refused; nothing was applied or kept."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


_syncs: weakref.WeakKeyDictionary[NodeView, ConfigSync] = weakref.WeakKeyDictionary()


class Superseded(Exception):
    """A cluster version older than (or the same as: `same`) the one this node has: nothing to do."""

    def __init__(self, same: bool) -> None:
        super().__init__("superseded")
        self.same = same


async def _change(node: NodeView, fn: Callable[..., tuple[Settings, str, list[str]]], args: Callable[[], tuple[Any, ...]],
                  version: Version | None = None) -> tuple[ReloadReport, list[dict[str, Any]]]:
    """Build the settings and the overlay's text off the loop, apply them, and only then keep the text.
    One change at a time per node: `args` is called once the change before has been kept, so a merge
    (or a rule change) reads what that change wrote. Raises `Refused`. In a cluster, a change made
    here (`version` None) is then sent to every other node: their outcomes (`version`: one taken
    from another node; raises `Superseded` if this node has it or a newer one already)."""
    lock = _changing.setdefault(node, asyncio.Lock())
    sync = _syncs.get(node)
    async with lock:
        if version is not None and sync is not None and version <= sync.version:
            raise Superseded(version == sync.version)
        try:
            settings, text, warnings = await in_background(fn, node.config_path, dict(os.environ), *args())
            log_warnings(warnings)  # made in the worker, shown on the node
            if sync is not None:
                _check_node_local(node.settings, settings)
            report = await node.reload(settings)
        except (ConfigError, ReloadError) as exc:
            raise Refused(exc.errors) from None
        except RecursionError:  # a value too deep to hand to the worker (pickling recurses)
            raise Refused(["the admin API's config: nested too deeply"]) from None
        write_overlay_text(node.settings.node.data_dir, text)
        mine = sync.next_version() if sync is not None and version is None else None
        if sync is not None:
            sync.kept(version or mine or sync.version, text, publish=mine is not None)
    if sync is not None and mine is not None:
        return report, sync.mark(mine, await sync.spread(mine, text))  # first: this node's, if it lost
    return report, []


def _check_node_local(old: Settings, new: Settings) -> None:
    """In a cluster the overlay is every node's: it must not name a node or its data dir."""
    for key, before, after in (("node.name", old.node.name, new.node.name),
                               ("node.data_dir", old.node.data_dir, new.node.data_dir)):
        if before != after:
            raise Refused([f"{key}: set in each node's own config file, not through the admin API, "
                           "in a cluster (the API's config is every node's)"])


def settings_for_cluster_text(config_path: str | None, env: dict[str, str], text: str,
                              label: str) -> tuple[Settings, str, list[str]]:
    """`settings_for_overlay` for an overlay's text from another node (in the background worker:
    parsing is slow; module-level, so it is pickled by name)."""
    return settings_for_overlay(config_path, env, parse_hocon(text, label))


def join_config_sync(node: NodeView) -> None:
    """In a cluster: take the overlay other nodes publish, and answer their `config.apply`."""
    from engine.admin.cluster_calls import cluster_of
    from engine.cluster.member import ClusterMember

    cluster = cluster_of(node)
    if not isinstance(cluster, ClusterMember):
        return

    async def apply(text: str, version: Version) -> dict[str, Any]:
        try:
            label = f"the cluster's config version {version[0]} from node {version[1]}"
            await _change(node, settings_for_cluster_text, lambda: (text, label), version)
        except Superseded as exc:  # "reloaded": it came first as the retained record
            return {"status": "reloaded" if exc.same else "superseded", "errors": []}
        except (Refused, ConfigError) as exc:
            return {"status": "refused", "errors": exc.errors}
        return {"status": "reloaded", "errors": []}

    def current() -> str | None:
        try:
            return overlay_file(node.settings.node.data_dir).read_text("utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    _syncs[node] = ConfigSync(cluster, node.settings.node.data_dir, apply,
                              max_size=int(node.settings.cluster.max_record_size), current=current)


def _answer(report: ReloadReport, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    lost = next((n["superseded_by"] for n in nodes if "superseded_by" in n), None)  # ConfigSync.mark
    return {"status": "superseded" if lost else "reloaded", **report.as_dict(),
            **({"superseded_by": lost} if lost else {}), **({"nodes": nodes} if nodes else {})}


async def _apply(node: NodeView, fn: Callable[..., tuple[Settings, str, list[str]]], args: Callable[[], tuple[Any, ...]]) -> Response:
    try:
        report, nodes = await _change(node, fn, args)
    except Refused as exc:
        return refused(exc.errors)
    return json_response(_answer(report, nodes))


async def change_overlay(node: NodeView, edit: Callable[[dict[str, Any]], None]) -> ReloadReport:
    """`edit_overlay` for endpoints that answer in their own shape: the reload's report, or `Refused`.
    In a cluster the change goes to every node all the same."""
    report, _nodes = await _change(node, settings_for_overlay, _overlay_of(node, edit))
    return report


def _overlay_of(node: NodeView, edit: Callable[[dict[str, Any]], None]) -> Callable[[], tuple[Any, ...]]:
    def overlay() -> tuple[Any, ...]:
        current = read_overlay(node.settings.node.data_dir)
        edit(current)
        return (current,)

    return overlay


async def edit_overlay(node: NodeView, edit: Callable[[dict[str, Any]], None]) -> Response:
    """Change the stored overlay in place with `edit` (which may raise an ApiError), check the file +
    overlay as a whole, apply it, and only then keep the overlay; in turn with every other change."""
    try:
        report, nodes = await _change(node, settings_for_overlay, _overlay_of(node, edit))
    except Refused as exc:
        return refused(exc.errors)
    return json_response(_answer(report, nodes))


async def hocon_upload(request: Request) -> tuple[str, str]:
    """A HOCON body and its `?mode=merge|replace` (PUT /configs, POST /configs/validate), or a 400."""
    mode = request.query_params.get("mode", "merge")
    if mode not in ("merge", "replace"):
        raise bad_request("mode: expected merge or replace")
    raw = await request.body()  # size-limited by the app (dashboard.max_request_body)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("the body is not UTF-8 text") from None
    if not text.strip():
        raise bad_request("a HOCON body is required")
    return text, mode


def routes(node: NodeView) -> list[Route]:
    async def get_configs(request: Request) -> Response:
        return Response(dump_hocon(node.settings), media_type="text/plain; charset=utf-8")

    async def put_configs(request: Request) -> Response:
        text, mode = await hocon_upload(request)
        return await _apply(node, settings_for_upload,
                            lambda: (node.settings.node.data_dir, text, mode, secrets_of(node.settings)))

    async def reload_configs(request: Request) -> Response:
        try:
            report = await node.reload_from_files()
        except ReloadError as exc:
            return refused(exc.errors)
        return json_response({"status": "reloaded", **report.as_dict()})

    return [
        Route("/api/v5/configs", get_configs, methods=["GET"]),
        Route("/api/v5/configs", put_configs, methods=["PUT"]),
        Route("/api/v5/configs/reload", reload_configs, methods=["POST"]),
    ]
