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

`Node.reload` does the swap of its own parts; this module holds the steps
that need no node (building and checking, the report, the listeners, the
handover of waiting messages) and never imports the node.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from connectors.registry import ResourceConfigError, Resources
from engine.config.schema import ListenerSettings, Settings, WssListenerSettings
from engine.errors import ErrorList
from engine.ocpp.listener import ListenerError, OcppListener
from engine.parts import enabled_listeners, schema_registry
from engine.preflight import problems as preflight_problems
from rules.runtime import RuleEngine, RuleLoadError, RunningRule

if TYPE_CHECKING:
    from connectors.resource import BufferedAction, Connector
    from engine.auth import Authenticator
    from engine.bus import Bus
    from engine.ocpp.context import GatewayContext
    from engine.ocpp.schemas import SchemaRegistry

log = logging.getLogger("ocppgw.reload")


class ReloadError(ErrorList):
    """A config that cannot be applied: nothing changed; `errors` lists every problem."""


@dataclass
class ReloadReport:
    changed: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)  # changed, but only a restart applies it

    def as_dict(self) -> dict[str, list[str]]:
        return {"changed": self.changed, "needs_restart": self.needs_restart}


def restart_only(old: Settings, new: Settings) -> list[str]:
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
    if old.cluster != new.cluster:
        keys.append("cluster")  # the cluster member is built at start (engine/node.py)
    return keys


@dataclass
class ReloadPlan:
    """The parts a new config needs, built and checked; nothing running has been touched yet."""

    resources: Resources
    compiled: dict[str, RunningRule]
    registry: SchemaRegistry | None
    stop_connectors: list[Connector]
    handovers: list[tuple[BufferedAction, BufferedAction | None]]  # (running, successor or None)

    def hand_over_queues(self) -> None:
        """Each replaced action's waiting messages go to its successor (none: dropped, counted)."""
        for running, successor in self.handovers:
            waiting = running.take_queue()
            if successor is not None and waiting:
                successor.give_queue(waiting)
            elif waiting:
                log.warning("action %s was removed with %d messages waiting: dropped", running.id, len(waiting))
                running.metrics.dropped_other += len(waiting)

    async def finish(self, report: ReloadReport) -> None:
        """Stop what the new parts replaced, once the swap is done."""
        for running, _ in self.handovers:
            await running.stop(flush_timeout=0)
        for connector in self.stop_connectors:
            await connector.stop()
        log.info("config reloaded: %s", ", ".join(report.changed) or "nothing changed")


def plan_reload(new: Settings, bus: Bus, resources: Resources, rules: RuleEngine,
                registry: SchemaRegistry | None) -> ReloadPlan:
    """Build the new config's parts beside the running ones (`resources`, `rules`, `registry`);
    raise ReloadError with every problem."""
    errors: list[str] = []
    fresh = None
    try:
        fresh = Resources(new)
    except ResourceConfigError as exc:
        errors.extend(exc.errors)
    checking = None
    try:
        checking = schema_registry(new, registry)
    except Exception as exc:
        errors.append(str(exc))
    errors.extend(preflight_problems(new, schemas=False))  # the files run would refuse (engine/preflight.py)
    stop_connectors: list[Connector] = []
    handovers: list[tuple[BufferedAction, BufferedAction | None]] = []
    compiled: dict[str, RunningRule] = {}
    if fresh is not None:
        stop_connectors, handovers = fresh.adopt(resources)
        try:
            compiled = RuleEngine(bus, fresh.resolve).compile(new.rule_engine.rules, rules.rules)
        except RuleLoadError as exc:
            errors.extend(exc.errors)
    if errors:
        raise ReloadError(errors)
    assert fresh is not None
    return ReloadPlan(fresh, compiled, checking, stop_connectors, handovers)


def note_changes(old: Settings, new: Settings, report: ReloadReport) -> None:
    """Report the sections the swap changed; a new log setup is applied here (it is no part to swap)."""
    if old.rule_engine != new.rule_engine:
        report.changed.append("rule_engine")
    if (old.connectors, old.actions) != (new.connectors, new.actions):
        report.changed.append("connectors/actions")
    if old.log != new.log:
        from engine.log import setup_logging

        setup_logging(new.log.level, new.log.format)
        report.changed.append("log")


async def apply_ocpp(ctx: GatewayContext, listeners: dict[str, OcppListener], authenticator: Authenticator | None,
                     old: Settings, new: Settings, report: ReloadReport) -> None:
    """Start, restart, update and stop the listeners in `listeners` (the node's, changed in place)
    to match `new`; the charge points already connected follow a new mountpoint or topic."""
    o, n = old.gateway.ocpp, new.gateway.ocpp
    if replace(o, listeners=n.listeners) != n:
        report.changed.append("gateway.ocpp")
    wanted = enabled_listeners(n)
    for full_name, listener in list(listeners.items()):
        target = wanted.get(full_name)
        if target is None:
            await listener.stop()
            del listeners[full_name]
            report.changed.append(f"listener {full_name} removed")
        elif _needs_restart(listener.settings, target[2]):
            kind, name, settings = target
            fresh = OcppListener(ctx, name, kind, settings, authenticator)
            await listener.stop()  # its charge points move over by reconnecting to the new address
            try:
                await fresh.start()
            except ListenerError as exc:
                log.error("listener %s could not restart: %s", full_name, exc)
                del listeners[full_name]
                report.changed.append(f"listener {full_name} stopped: {exc}")
                continue
            listeners[full_name] = fresh
            report.changed.append(f"listener {full_name} restarted on {settings.bind}")
        else:
            if listener.settings != target[2]:
                report.changed.append(f"listener {full_name}")
            listener.apply(target[2])
            listener.app.authenticator = authenticator
    for full_name, (kind, name, settings) in wanted.items():
        if full_name not in listeners:
            fresh = OcppListener(ctx, name, kind, settings, authenticator)
            try:
                await fresh.start()
            except ListenerError as exc:
                report.changed.append(f"listener {full_name} not started: {exc}")
                continue
            listeners[full_name] = fresh
            report.changed.append(f"listener {full_name} started")
    # charge points already connected follow a new mountpoint or downstream topic
    for session in list(ctx.sessions.values()):
        running = listeners.get(session.listener)
        mountpoint = running.app.mountpoint if running else n.mountpoint
        session.resubscribe(mountpoint)


def _needs_restart(old: ListenerSettings, new: ListenerSettings) -> bool:
    """Only a new address, new TLS settings or a listening-socket option (backlog, reuseaddr) need a
    new socket; the rest is applied in place, to connections accepted from then on."""
    if old.bind != new.bind or type(old) is not type(new):
        return True
    if (old.tcp_options.backlog, old.tcp_options.reuseaddr) != (new.tcp_options.backlog, new.tcp_options.reuseaddr):
        return True
    return isinstance(old, WssListenerSettings) and isinstance(new, WssListenerSettings) and old.ssl_options != new.ssl_options
