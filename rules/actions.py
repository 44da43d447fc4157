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

from engine.bus import Bus, Message, TopicError, properties, validate_name
from engine.template import Template, TemplateError, lookup, to_json
from rules.values import UNDEFINED, RuleError

log = logging.getLogger("ocppgw.rule")
console_log = logging.getLogger("ocppgw.rule.console")


class Action(Protocol):
    name: str

    def run(self, output: dict[str, Any]) -> Any: ...  # an asyncio.Future: the rule's next actions wait for it


class ActionConfigError(ValueError):
    """An action entry that cannot be built; the message names what is wrong."""


# "type:name" → the action, or None if there is no such action (connector actions, issue 5)
ExternalResolver = Callable[[str], Action | None]


class Republish:
    """Publish into the message space: local charge points and rules see it, the bridge forwards it.

    EMQX 5's arguments: topic, payload, qos, retain, `mqtt_properties` (MQTT 5 PUBLISH properties,
    each a template), `user_properties` (one placeholder naming a map) and `direct_dispatch`
    (accepted, no effect here: see docs/rules.md).
    """

    ARGS = {"topic", "payload", "qos", "retain", "mqtt_properties", "user_properties", "direct_dispatch"}

    def __init__(self, bus: Bus, rule_id: str, args: dict[str, Any]) -> None:
        unknown = set(args) - self.ARGS
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
        self.properties = mqtt_properties(args.get("mqtt_properties", {}))
        self.user_properties = user_properties_path(args.get("user_properties", DEFAULT_USER_PROPERTIES))
        direct = args.get("direct_dispatch", False)
        if not isinstance(direct, (bool, str)):
            raise ActionConfigError(f"republish: direct_dispatch must be true, false or a ${{placeholder}}, "
                                    f"not {direct!r}")
        if direct not in (False, "false", ""):
            log.warning("rule %s: republish: direct_dispatch has no effect here (the message still reaches "
                        "the other rules, as with direct_dispatch = false)", rule_id)
        dropped = bus.properties_dropped
        if dropped and (self.properties or "user_properties" in args and args["user_properties"]):
            log.warning("rule %s: republish: mqtt_properties and user_properties do not reach MQTT "
                        "subscribers: %s (MQTT 3.1.1 has no properties)", rule_id, dropped)

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
        user = self.user_properties
        props = self._properties(output) if self.properties or (user and user[0] in output) else None
        self.bus.publish(Message(topic, self.payload.render(output).encode(), qos=qos, retain=retain,
                                 origin=self.origin, properties=props))

    def _properties(self, output: dict[str, Any]) -> dict[str, Any] | None:
        """The MQTT 5 properties for this output; a value the property cannot take fails the action."""
        props: dict[str, Any] = {}
        try:
            for name, value in self.properties:
                if isinstance(value, Template):
                    value = value.render_value(output) if value.single else value.render(output)
                    if value is UNDEFINED or value is None:
                        continue  # a missing field, or null: the property is left out
                    value = properties.coerce(name, value)
                props[name] = value
            if self.user_properties:
                pairs = properties.user_properties(lookup(output, self.user_properties))
                if pairs:
                    props[properties.USER_PROPERTY] = pairs
        except properties.PropertyError as exc:
            raise RuleError(f"republish: {exc}") from None
        return props or None


DEFAULT_USER_PROPERTIES = "${user_properties}"  # EMQX's default: a column of that name, if the rule selects one


def mqtt_properties(spec: Any) -> list[tuple[str, Any]]:
    """republish's `mqtt_properties`: property name → a template or a constant, checked now when constant."""
    if not isinstance(spec, dict):
        raise ActionConfigError("republish: mqtt_properties must be an object of MQTT 5 property names")
    found: list[tuple[str, Any]] = []
    for name in spec:
        if name not in properties.SETTABLE:
            raise ActionConfigError(f"republish: mqtt_properties: unknown property {name!r} "
                                    f"(one of {', '.join(properties.SETTABLE)})")
    for name in properties.SETTABLE:  # a fixed order: the same properties go out the same way
        if name not in spec:
            continue
        value = spec[name]
        try:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise properties.PropertyError(f"{name} must be a string or a number, not {value!r}")
            template = Template(value) if isinstance(value, str) else None
            if template is not None and template.parts and not template.variables:
                found.append((name, properties.coerce(name, value)))  # no placeholder: checked now
            elif template is not None and template.variables:
                found.append((name, template))
            else:
                found.append((name, properties.coerce(name, value)))
        except (TemplateError, properties.PropertyError) as exc:
            raise ActionConfigError(f"republish: mqtt_properties: {exc}") from None
    return found


def user_properties_path(text: Any) -> tuple[str, ...] | None:
    """republish's `user_properties`: one placeholder naming a map ("${pub_props.'User-Property'}",
    "${my_props}"); "" for none. The path it reads, quotes around a key dropped."""
    if not isinstance(text, str):
        raise ActionConfigError(f"republish: user_properties must be a ${{placeholder}} naming a map, not {text!r}")
    text = text.strip()
    if not text:
        return None
    if not (text.startswith("${") and text.endswith("}") and text.count("${") == 1):
        raise ActionConfigError(f"republish: user_properties must be one ${{placeholder}} naming a map "
                                f"(such as \"${{pub_props.'User-Property'}}\"), not {text!r}")
    path = tuple(part.strip().strip("'\"") for part in text[2:-1].strip().lstrip(".").split("."))
    if not all(path):
        raise ActionConfigError(f"republish: user_properties {text!r}: an empty key in the path")
    return path


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
