"""The node's alarms, as EMQX keeps them: a named condition is activated when it starts and
deactivated when it ends; the active ones and a bounded history of the ended ones are listed by
`GET /api/v5/alarms`.

The conditions are evaluated by `evaluate` on each tick of the node's monitor (engine/monitor.py,
every 10 s), from the live objects, the way the metrics read them:

- `mqtt_bridge_down`: the bridge is not connected to the MQTT broker.
- `action_failing:<action id>`: the action's connector is disconnected, or requests failed or were
  dropped since the last tick; it ends on the first tick with neither (and the connector up).
- `certificate_expiring:<clientid>`: a connected charge point's client certificate expires within
  its listener's `ssl_options.cert_expiry_warning`; it ends when that charge point goes away.
- `listener_stopped:<listener>`: an enabled OCPP listener is not serving.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

MAX_HISTORY = 1000  # default of alarm.size_limit (EMQX's key): deactivated alarms kept for the API


@dataclass
class Alarm:
    name: str
    message: str
    details: dict[str, Any]
    activated_at: float  # ms since the epoch
    node: str
    deactivated_at: float | None = None

    @property
    def activated(self) -> bool:
        return self.deactivated_at is None


Condition = tuple[str, dict[str, Any]]  # message, details


@dataclass
class Alarms:
    node: str = ""
    active: dict[str, Alarm] = field(default_factory=dict)
    history: deque[Alarm] = field(default_factory=lambda: deque(maxlen=MAX_HISTORY))
    _action_counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    dropped: int = 0  # deactivated alarms pushed out of `history` by alarm.size_limit (a metric)

    def resize(self, size_limit: int) -> None:
        """Keep at most `size_limit` deactivated alarms from now on (the oldest beyond it go at once)."""
        if size_limit != self.history.maxlen:
            self.dropped += max(0, len(self.history) - size_limit)
            self.history = deque(self.history, maxlen=size_limit)

    def update(self, conditions: dict[str, Condition], now_ms: float | None = None) -> None:
        """Activate the conditions that hold and are not active yet, deactivate the active ones that
        no longer hold (a held one keeps its activation time, its message and details follow)."""
        now = time.time() * 1000 if now_ms is None else now_ms
        for name, (message, details) in conditions.items():
            alarm = self.active.get(name)
            if alarm is None:
                self.active[name] = Alarm(name, message, details, now, self.node)
            else:
                alarm.message, alarm.details = message, details
        for name in [n for n in self.active if n not in conditions]:
            alarm = self.active.pop(name)
            alarm.deactivated_at = now
            if len(self.history) == self.history.maxlen:
                self.dropped += 1
            self.history.append(alarm)

    def evaluate(self, node: Any) -> None:
        """Read the node's parts and update the alarms (the monitor's tick calls this); a reloaded
        alarm.size_limit is taken here."""
        settings = getattr(node, "settings", None)
        alarm_settings = getattr(settings, "alarm", None)
        if alarm_settings is not None:
            self.resize(alarm_settings.size_limit)
        conditions: dict[str, Condition] = {}
        self._bridge(node, conditions)
        self._actions(node, conditions)
        self._certificates(node, conditions)
        self._listeners(node, conditions)
        self.update(conditions)

    def _bridge(self, node: Any, out: dict[str, Condition]) -> None:
        bridge = getattr(node, "bridge", None)
        if bridge is not None and not bridge.connected:
            error = getattr(bridge, "last_error", "") or "not connected"
            out["mqtt_bridge_down"] = (f"the MQTT bridge is disconnected from the broker: {error}",
                                       {"last_error": error, "buffered": bridge.buffered})

    def _actions(self, node: Any, out: dict[str, Condition]) -> None:
        resources = getattr(node, "resources", None)
        actions = dict(resources.actions) if resources is not None else {}
        counts: dict[str, tuple[int, int]] = {}
        for action_id, action in actions.items():
            m = action.metrics
            counts[action_id] = (m.failed, m.dropped)
            failed, dropped = (max(0, now - before) for now, before in
                               zip(counts[action_id], self._action_counts.get(action_id, (m.failed, m.dropped))))
            connector = getattr(action, "connector", None)
            status = getattr(connector, "status", "connected")
            last_error = getattr(connector, "last_error", "") or ""
            if status != "disconnected" and not failed and not dropped:
                continue
            if status == "disconnected":
                why = f"its connector is disconnected: {last_error or 'unknown error'}"
            else:
                why = f"{failed} request(s) failed and {dropped} were dropped since the last check"
            out[f"action_failing:{action_id}"] = (f"action {action_id} is failing: {why}", {
                "action": action_id, "connector_status": status, "last_error": last_error, "failed": m.failed,
                "dropped": m.dropped, "queuing": m.queuing})
        self._action_counts = counts

    def _certificates(self, node: Any, out: dict[str, Condition]) -> None:
        now = time.time()
        for name, listener in (getattr(node, "listeners", None) or {}).items():
            watch = getattr(listener.app, "certificates", None)
            ssl_options = getattr(listener.settings, "ssl_options", None)
            if watch is None or ssl_options is None:
                continue
            window = float(ssl_options.cert_expiry_warning)
            for session, cert in list(watch.certificates.items()):
                if cert.not_after - now <= window:
                    cid = getattr(session, "cid", "?")
                    out[f"certificate_expiring:{cid}"] = (
                        f"the client certificate of {cid} expires in {cert.days_left(now)} day(s)",
                        {"clientid": cid, "listener": name, **cert.as_dict()})

    def _listeners(self, node: Any, out: dict[str, Condition]) -> None:
        settings = getattr(node, "settings", None)
        if settings is None or not settings.gateway.ocpp.enable or not getattr(node, "started", False):
            return
        from engine.parts import enabled_listeners

        running = getattr(node, "listeners", None) or {}
        for name in enabled_listeners(settings.gateway.ocpp):
            listener = running.get(name)
            server = getattr(listener, "server", None)
            if server is None or not getattr(server, "started", False) or getattr(server, "should_exit", False):
                out[f"listener_stopped:{name}"] = (f"the OCPP listener {name} is not serving", {"listener": name})

    def listing(self, activated: bool | None) -> list[Alarm]:
        """The active alarms (newest first), the deactivated ones (last ended first), or both."""
        found: list[Alarm] = []
        if activated in (None, True):
            found += sorted(self.active.values(), key=lambda a: a.activated_at, reverse=True)
        if activated in (None, False):
            found += reversed(self.history)
        return found
