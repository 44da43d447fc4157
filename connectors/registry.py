"""Connectors and actions built from the config, and the resolver rules use for "type:name"."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from connectors.action_store import DurableError, close_under
from connectors.http import HttpConnector, check_url, http_action
from connectors.resource import BufferedAction, Connector
from connectors.sql import PGSQL_DEFAULT_PORT, PgsqlConnector, SqliteConnector, parse_server, sql_action
from connectors.sql_template import SqlTemplateError
from engine.config.schema import Settings
from engine.durable import queue_path
from engine.errors import ErrorList
from engine.template import TemplateError

log = logging.getLogger("ocppgw.connector")


class ResourceConfigError(ErrorList):
    """Connectors or actions that cannot be built; `errors` names each key."""


def _check_connector(kind: str, settings: Any) -> tuple[str, str] | None:
    """(key, problem) for a connector setting that cannot work, or None."""
    if kind == "http":
        problem = check_url(settings.url)
        return ("url", f"{settings.url!r}: {problem}") if problem else None
    if kind == "pgsql":
        try:
            parse_server(settings.server, PGSQL_DEFAULT_PORT)
        except ValueError as exc:
            return "server", f"{settings.server!r}: {exc}"
    return None


MAKE_ACTION: dict[str, Callable[[str, Any, Any], BufferedAction]] = {
    "http": http_action,
    "sqlite": lambda name, a, c: sql_action("sqlite", name, a, c),
    "pgsql": lambda name, a, c: sql_action("pgsql", name, a, c),
}


class Resources:
    def __init__(self, settings: Settings) -> None:
        self.connectors: dict[str, Connector] = {}
        self.actions: dict[str, BufferedAction] = {}
        data_dir = settings.node.data_dir
        make_connector: dict[str, Callable[[str, Any], Connector]] = {
            "http": lambda name, c: HttpConnector(name, c),
            "sqlite": lambda name, c: SqliteConnector(name, c, data_dir),
            "pgsql": lambda name, c: PgsqlConnector(name, c),
        }
        make_action = MAKE_ACTION
        self._node = (settings.node.data_dir, settings.node.name, settings.node.durable_sync)
        errors: list[str] = []
        for kind, build in make_connector.items():
            for name, c in getattr(settings.connectors, kind).items():
                if not c.enable:
                    continue
                problem = _check_connector(kind, c)
                if problem:
                    errors.append(f"connectors.{kind}.{name}.{problem[0]} = {problem[1]}")
                    continue
                self.connectors[f"{kind}:{name}"] = build(name, c)
        for kind, make in make_action.items():
            for name, a in getattr(settings.actions, kind).items():
                if not a.enable:
                    continue
                key = f"actions.{kind}.{name}"
                connector = self.connectors.get(f"{kind}:{a.connector}")
                if connector is None:
                    errors.append(f"{key}.connector = {a.connector!r}: no connectors.{kind}.{a.connector}")
                    continue
                try:
                    action = make(name, a, connector)
                except (TemplateError, SqlTemplateError) as exc:
                    errors.append(f"{key}.{'parameters' if kind == 'http' else 'parameters.sql'}: {exc}")
                    continue
                try:
                    self._open_disk(action)
                except DurableError as exc:
                    errors.append(f"{key}.resource_opts.buffer_mode = {a.resource_opts.buffer_mode}: {exc}")
                    continue
                self.actions[f"{kind}:{name}"] = action
                connector.health_check_interval = min(connector.health_check_interval, a.resource_opts.health_check_interval)
        if errors:
            for action in self.actions.values():
                action.discard_disk()
            raise ResourceConfigError(errors)

    def _open_disk(self, action: BufferedAction) -> None:
        """The action's file(s): `<data_dir>/buffers/<node>/action_<kind>_<name>.db` (connectors/action_disk.py)."""
        data_dir, node, sync = self._node
        owner = f"action_{action.kind}_{action.name}"
        action.open_disk(queue_path(data_dir, node, owner), queue_path(data_dir, node, f"{owner}.spill"), sync)

    def adopt(self, old: Resources) -> tuple[list[Connector], list[tuple[BufferedAction, BufferedAction | None]]]:
        """Keep the running connectors and actions whose settings did not change (so their
        connections and buffers carry on); return the old connectors to stop and, for each old
        action going away, its successor (None if removed) to hand its waiting messages to."""
        stop_connectors: list[Connector] = []
        for key, running in old.connectors.items():
            mine = self.connectors.get(key)
            if mine is not None and getattr(mine, "settings", None) == getattr(running, "settings", None):
                self.connectors[key] = running
            else:
                stop_connectors.append(running)
        for key, action in list(self.actions.items()):
            connector = self.connectors[f"{action.kind}:{action.settings.connector}"]
            if action.connector is not connector:
                # built on the new connector object, which the running one replaced: build it on that
                rebuilt = MAKE_ACTION[action.kind](action.name, action.settings, connector)
                rebuilt.store, rebuilt.spill, rebuilt.keep_path, rebuilt.sync = (
                    action.store, action.spill, action.keep_path, action.sync)
                if action._queue:  # restored from the file when this reload opened it
                    rebuilt.give_queue(action.take_queue())
                    rebuilt.restored, rebuilt.metrics.matched = action.restored, action.metrics.matched
                self.actions[key] = rebuilt
        handovers: list[tuple[BufferedAction, BufferedAction | None]] = []
        for key, old_action in old.actions.items():
            new_action = self.actions.get(key)
            if new_action is not None and new_action.settings == old_action.settings and new_action.connector is old_action.connector:
                new_action.discard_disk()
                self.actions[key] = old_action
            else:
                handovers.append((old_action, new_action))
        return stop_connectors, handovers

    async def start_new(self, old: Resources) -> None:
        """Start what `adopt` did not take over from `old`."""
        running_connectors = set(map(id, old.connectors.values()))
        running_actions = set(map(id, old.actions.values()))
        for connector in self.connectors.values():
            if id(connector) not in running_connectors:
                await connector.start()
        for action in self.actions.values():
            if id(action) not in running_actions:
                await action.start()

    def resolve(self, ref: str) -> Any:
        return self.actions.get(ref)

    async def start(self) -> None:
        for connector in self.connectors.values():
            await connector.start()
        for action in self.actions.values():
            await action.start()

    async def stop(self) -> None:
        for action in self.actions.values():
            await action.stop()
        for connector in self.connectors.values():
            await connector.stop()
        data_dir, node, _ = self._node
        # a reload that failed after opening an action's file leaves it open: closed with the node
        await close_under(queue_path(data_dir, node, "x").parent)
