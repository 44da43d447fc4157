"""Connectors and actions built from the config, and the resolver rules use for "type:name"."""

from __future__ import annotations

import logging
from typing import Any

from connectors.http import HttpConnector, check_url, http_action
from connectors.resource import BufferedAction, Connector
from engine.config.schema import Settings
from engine.template import TemplateError

log = logging.getLogger("ocppgw.connector")


class ResourceConfigError(Exception):
    """Connectors or actions that cannot be built; `errors` names each key."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class Resources:
    def __init__(self, settings: Settings) -> None:
        self.connectors: dict[str, Connector] = {}
        self.actions: dict[str, BufferedAction] = {}
        errors: list[str] = []
        interval = 15.0
        for name, c in settings.connectors.http.items():
            if not c.enable:
                continue
            problem = check_url(c.url)
            if problem:
                errors.append(f"connectors.http.{name}.url = {c.url!r}: {problem}")
                continue
            self.connectors[f"http:{name}"] = HttpConnector(name, c, interval)
        for name, a in settings.actions.http.items():
            if not a.enable:
                continue
            key = f"actions.http.{name}"
            connector = self.connectors.get(f"http:{a.connector}")
            if connector is None:
                errors.append(f"{key}.connector = {a.connector!r}: no connectors.http.{a.connector}")
                continue
            try:
                action = http_action(name, a, connector)  # type: ignore[arg-type]
            except TemplateError as exc:
                errors.append(f"{key}.parameters: {exc}")
                continue
            self.actions[f"http:{name}"] = action
            connector.health_check_interval = a.resource_opts.health_check_interval
        if errors:
            raise ResourceConfigError(errors)

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
