"""Built-in rule actions: `republish` and `console`, and the resolver for action entries.

An action is handed one rule output at a time (`run(output)`) and
either takes it or raises; the rule counts which. Connector actions
(`"http:name"`, ...) come from a resolver the node passes in, so rules know
nothing about connectors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from engine.bus import Bus, Message, TopicError, validate_name
from engine.template import Template, TemplateError, to_json
from rules.values import UNDEFINED, RuleError

log = logging.getLogger("ocppgw.rule")
console_log = logging.getLogger("ocppgw.rule.console")


class Action(Protocol):
    name: str

    def run(self, output: dict[str, Any]) -> None: ...


class ActionConfigError(ValueError):
    """An action entry that cannot be built; the message names what is wrong."""


# "type:name" → the action, or None if there is no such action (connector actions, issue 5)
ExternalResolver = Callable[[str], Action | None]


class Republish:
    """Publish into the message space: local charge points and rules see it, the bridge forwards it."""

    def __init__(self, bus: Bus, rule_id: str, args: dict[str, Any]) -> None:
        unknown = set(args) - {"topic", "payload", "qos", "retain"}
        if unknown:
            raise ActionConfigError(f"republish: unknown argument {sorted(unknown)[0]!r}")
        if not isinstance(args.get("topic"), str) or not args["topic"]:
            raise ActionConfigError("republish: args.topic is required")
        self.bus = bus
        self.origin = f"rule:{rule_id}"
        self.name = "republish"
        try:
            self.topic = Template(args["topic"])
            self.payload = Template(str(args.get("payload", "${.}")))
            self.qos = Template(args["qos"]) if isinstance(args.get("qos"), str) else args.get("qos", 0)
            self.retain = Template(args["retain"]) if isinstance(args.get("retain"), str) else args.get("retain", False)
        except TemplateError as exc:
            raise ActionConfigError(f"republish: {exc}") from None
        if not isinstance(self.qos, Template) and self.qos not in (0, 1, 2):
            raise ActionConfigError(f"republish: qos must be 0, 1, 2 or a ${{placeholder}}, not {self.qos!r}")
        if not isinstance(self.retain, (Template, bool)):
            raise ActionConfigError(f"republish: retain must be true, false or a ${{placeholder}}, not {self.retain!r}")

    def run(self, output: dict[str, Any]) -> None:
        topic = self.topic.render(output)
        try:
            validate_name(topic)
        except TopicError as exc:
            raise RuleError(f"republish: topic {topic!r}: {exc}") from None
        qos = self.qos.render_value(output) if isinstance(self.qos, Template) else self.qos
        retain = self.retain.render_value(output) if isinstance(self.retain, Template) else self.retain
        qos = _as_int(qos, "qos")
        if qos not in (0, 1, 2):
            raise RuleError(f"republish: qos {qos!r} is not 0, 1 or 2")
        retain = retain in (True, "true", 1)
        self.bus.publish(Message(topic, self.payload.render(output).encode(), qos=qos, retain=retain, origin=self.origin))


def _as_int(value: Any, what: str) -> Any:
    if type(value) is str and value.isdigit():
        return int(value)
    if value is UNDEFINED:
        return 0
    return value


class Console:
    def __init__(self, rule_id: str, args: dict[str, Any]) -> None:
        self.name = "console"
        self.rule_id = rule_id

    def run(self, output: dict[str, Any]) -> None:
        console_log.info("rule %s output: %s", self.rule_id, to_json(output).decode())


def build_actions(entries: list[Any], bus: Bus, rule_id: str, external: ExternalResolver | None) -> list[Action]:
    """Each entry is "type:name" or {function = republish|console, args {...}}."""
    actions: list[Action] = []
    for i, entry in enumerate(entries):
        where = f"actions[{i}]"
        if isinstance(entry, str):
            if ":" not in entry:
                raise ActionConfigError(f"{where}: {entry!r} is not \"type:name\" (e.g. \"http:alerts\") nor an object")
            action = external(entry) if external else None
            if action is None:
                kind, _, name = entry.partition(":")
                raise ActionConfigError(f"{where}: unknown action {entry!r} (no actions.{kind}.{name})")
            actions.append(action)
            continue
        if not isinstance(entry, dict):
            raise ActionConfigError(f"{where}: expected \"type:name\" or {{function = ..., args {{...}}}}")
        unknown = set(entry) - {"function", "args"}
        if unknown:
            raise ActionConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        function, args = entry.get("function"), entry.get("args", {})
        if not isinstance(args, dict):
            raise ActionConfigError(f"{where}.args: expected an object")
        try:
            if function == "republish":
                actions.append(Republish(bus, rule_id, args))
            elif function == "console":
                actions.append(Console(rule_id, args))
            else:
                raise ActionConfigError(f"function must be republish or console, not {function!r}")
        except ActionConfigError as exc:
            raise ActionConfigError(f"{where}: {exc}") from None
    return actions
