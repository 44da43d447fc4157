"""Hot reload: validate the whole new config, then swap only what changed.

Everything new is built and checked before anything running is touched; a
config with any error changes nothing and every error is reported. The swap
of rules, templates and checking happens without an await in between, so a
message is handled entirely by the old config or entirely by the new one.
Connectors and actions whose settings did not change keep running (their
connections and buffers with them); a replaced action hands its waiting
messages to its successor, which starts before the old one stops. Charge
points stay connected; only a listener whose address or TLS changed is
restarted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from connectors.registry import ResourceConfigError, Resources
from engine.config.schema import ListenerSettings, Settings, WssListenerSettings
from engine.errors import ErrorList
from engine.ocpp.listener import ListenerError, OcppListener
from rules.runtime import RuleEngine, RuleLoadError

if TYPE_CHECKING:
    from engine.node import Node

log = logging.getLogger("ocppgw.reload")


class ReloadError(ErrorList):
    """A config that cannot be applied: nothing changed; `errors` lists every problem."""


@dataclass
class ReloadReport:
    changed: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)  # changed, but only a restart applies it

    def as_dict(self) -> dict[str, list[str]]:
        return {"changed": self.changed, "needs_restart": self.needs_restart}


def _restart_only(old: Settings, new: Settings) -> list[str]:
    keys = []
    if old.node != new.node:
        keys.append("node")
    if old.mqtt != new.mqtt:
        keys.append("mqtt")
    if old.dashboard.listeners != new.dashboard.listeners:
        keys.append("dashboard.listeners")
    o, n = old.gateway.ocpp, new.gateway.ocpp
    if o.enable != n.enable or o.takeover_topic != n.takeover_topic:
        keys.append("gateway.ocpp.enable/takeover_topic")
    return keys


async def reload(node: Node, new: Settings) -> ReloadReport:
    old = node.settings
    errors: list[str] = []
    # --- build and check everything first ---------------------------------------------------
    resources = None
    try:
        resources = Resources(new)
    except ResourceConfigError as exc:
        errors.extend(exc.errors)
    try:
        node.check_admin_credentials(new)
    except Exception as exc:
        errors.append(str(exc))
    registry = None
    try:
        registry = node.schema_registry(new, node.ocpp.registry if node.ocpp is not None else None)
    except Exception as exc:
        errors.append(str(exc))
    stop_connectors, handovers = [], []
    if resources is not None:
        stop_connectors, handovers = resources.adopt(node.resources)
        try:
            compiled = RuleEngine(node.bus, resources.resolve).compile(new.rule_engine.rules, node.rules.rules)
        except RuleLoadError as exc:
            errors.extend(exc.errors)
    if errors:
        raise ReloadError(errors)
    assert resources is not None
    report = ReloadReport(needs_restart=_restart_only(old, new))

    # --- swap ---------------------------------------------------------------------------------
    await resources.start_new(node.resources)
    node.rules.external = resources.resolve
    node.rules.configure(new.rule_engine)
    node.rules.install(compiled)  # no await between this and the OCPP settings below
    node.resources = resources
    if node.ocpp is not None:
        node.ocpp.apply(new.gateway.ocpp, registry)
    for running, successor in handovers:
        waiting = running.take_queue()
        if successor is not None and waiting:
            successor.give_queue(waiting)
        elif waiting:
            log.warning("action %s was removed with %d messages waiting: dropped", running.id, len(waiting))
            running.metrics.dropped_other += len(waiting)
    if old.rule_engine != new.rule_engine:
        report.changed.append("rule_engine")
    if (old.connectors, old.actions) != (new.connectors, new.actions):
        report.changed.append("connectors/actions")
    if old.log != new.log:
        from engine.log import setup_logging

        setup_logging(new.log.level, new.log.format)
        report.changed.append("log")
    node.set_admin_credentials(new)
    if node.bridge is not None:
        options = node.bridge_options(new)  # forward filters name the mountpoints, which may have changed
        node.bridge.set_forward(options.forward_topics, options.forward_exclude)
    node.settings = new
    if node.ocpp is not None:
        await _apply_ocpp(node, old, new, report)
    for running, _ in handovers:
        await running.stop(flush_timeout=0)
    for connector in stop_connectors:
        await connector.stop()
    log.info("config reloaded: %s", ", ".join(report.changed) or "nothing changed")
    return report


async def _apply_ocpp(node: Node, old: Settings, new: Settings, report: ReloadReport) -> None:
    o, n = old.gateway.ocpp, new.gateway.ocpp
    if replace(o, listeners=n.listeners) != n:
        report.changed.append("gateway.ocpp")
    authenticator = node.apply_authentication(n.authentication)
    wanted: dict[str, tuple[str, str, ListenerSettings]] = {}
    for kind, listeners in (("ws", n.listeners.ws), ("wss", n.listeners.wss)):
        for name, settings in listeners.items():
            if settings.enable:
                wanted[f"ocpp:{kind}:{name}"] = (kind, name, settings)
    for full_name, listener in list(node.listeners.items()):
        target = wanted.get(full_name)
        if target is None:
            await listener.stop()
            del node.listeners[full_name]
            report.changed.append(f"listener {full_name} removed")
        elif _needs_restart(listener.settings, target[2]):
            kind, name, settings = target
            fresh = OcppListener(node.ocpp, name, kind, settings, authenticator)
            await listener.stop()  # its charge points move over by reconnecting to the new address
            try:
                await fresh.start()
            except ListenerError as exc:
                log.error("listener %s could not restart: %s", full_name, exc)
                del node.listeners[full_name]
                report.changed.append(f"listener {full_name} stopped: {exc}")
                continue
            node.listeners[full_name] = fresh
            report.changed.append(f"listener {full_name} restarted on {settings.bind}")
        else:
            if listener.settings != target[2]:
                report.changed.append(f"listener {full_name}")
            listener.apply(target[2])
            listener.app.authenticator = authenticator
    for full_name, (kind, name, settings) in wanted.items():
        if full_name not in node.listeners:
            fresh = OcppListener(node.ocpp, name, kind, settings, authenticator)
            try:
                await fresh.start()
            except ListenerError as exc:
                report.changed.append(f"listener {full_name} not started: {exc}")
                continue
            node.listeners[full_name] = fresh
            report.changed.append(f"listener {full_name} started")
    # charge points already connected follow a new mountpoint or downstream topic
    for session in list(node.ocpp.sessions.values()):
        listener = node.listeners.get(session.listener)
        mountpoint = listener.app.mountpoint if listener else n.mountpoint
        session.resubscribe(mountpoint)


def _needs_restart(old: ListenerSettings, new: ListenerSettings) -> bool:
    """Only a new address or new TLS settings need a new socket; the rest is applied in place."""
    if old.bind != new.bind or type(old) is not type(new):
        return True
    return isinstance(old, WssListenerSettings) and isinstance(new, WssListenerSettings) and old.ssl_options != new.ssl_options
