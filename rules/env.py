"""A rule's input for one message: its columns, computed lazily, plus the aliases the rule adds.

`Env` is a dict of columns. Columns that cost something (the payload as
text, a message id) are computed on first use; a missing column is
`UNDEFINED`. The decoded payload comes from the message's own JSON cache,
so several rules on one message decode it once, and nothing a rule does
changes it (puts copy the dicts they pass through).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import orjson

from engine.bus import properties as properties_
from engine.bus.message import Message
from rules.values import HEAD, TAIL, UNDEFINED, RuleError

_DECODED_UNSET: Any = object()


def _message_id(message: Message | None) -> str:
    return uuid.uuid4().hex.upper()


class Env(dict[str, Any]):
    __slots__ = ("_decoded", "headers", "message")

    def __init__(self, columns: dict[str, Any] | None = None, message: Message | None = None) -> None:
        if columns:
            self.update(columns)
        self.message = message
        self.headers = message.headers if message is not None else _NO_HEADERS  # read first by __missing__
        self._decoded = _DECODED_UNSET

    @classmethod
    def for_message(cls, message: Message) -> Env:
        """The columns of EMQX's `message.publish` event for a bus message, each read on first use."""
        env = _new_dict(cls)  # no copying of columns a rule may never read
        env.message = message
        env.headers = message.headers
        env._decoded = _DECODED_UNSET
        return env

    @classmethod
    def for_event(cls, message: Message) -> Env:
        """An `$events/...` message: its fields are the columns."""
        fields = message.json()
        return cls(fields if isinstance(fields, dict) else {}, None)

    def __missing__(self, key: str) -> Any:
        message = self.message
        if message is not None:
            headers = self.headers
            if key in headers:
                value = self[key] = headers[key]
                return value
            column = _MESSAGE_COLUMNS.get(key)
            if column is not None:
                value = self[key] = column(message)
                return value
            if key == "payload":
                value = self["payload"] = message.payload.decode("utf-8", "replace")
                return value
            if key == "id":
                value = self["id"] = _message_id(message)
                return value
            if key == "flags":
                value = self["flags"] = {"retain": message.retain, "dup": False}
                return value
            if key == "pub_props":
                value = self["pub_props"] = pub_props(message.properties)
                return value
        return UNDEFINED

    def payload_value(self) -> Any:
        """The payload decoded as JSON (what `payload.x` reads)."""
        if dict.__contains__(self, "payload"):
            raw = dict.__getitem__(self, "payload")
            if type(raw) is not str:
                return raw  # a rule put a decoded value there, or the context gave one
            if self._decoded is _DECODED_UNSET:
                self._decoded = _decode(raw)
            return self._decoded
        if self.message is not None:
            self._decoded = payload_json(self.message)
            return self._decoded
        return UNDEFINED

    def materialize(self) -> dict[str, Any]:
        """Every column, lazy ones computed (for SELECT *)."""
        message = self.message
        if message is not None:
            for key in (*message.headers, *_MESSAGE_COLUMNS, "id", "payload", "flags", "pub_props"):
                self[key]
        return dict(self)

    def child(self, extra: dict[str, Any]) -> Env:
        env = Env(self, self.message)
        env._decoded = self._decoded
        env.update(extra)
        return env


_new_dict = dict.__new__
_NO_HEADERS: dict[str, Any] = {}

_MESSAGE_COLUMNS: dict[str, Callable[[Message], Any]] = {
    "topic": lambda m: m.topic,
    "qos": lambda m: m.qos,
    "timestamp": lambda m: m.timestamp,
    "publish_received_at": lambda m: m.timestamp,
    "event": lambda m: "message.publish",
}


def pub_props(properties: dict[str, Any] | None) -> dict[str, Any]:
    """A message's MQTT 5 PUBLISH properties as EMQX's rule SQL shows them in `pub_props`:
    `User-Property` a map (a repeated name: its last value) with every pair, in order, in
    `User-Property-Pairs` ([{key, value}]); `Correlation-Data` as text; `Subscription-Identifier`
    an integer (a list when the broker sent several)."""
    if not properties:
        return {}
    shown: dict[str, Any] = {}
    for name, value in properties.items():
        if name == properties_.USER_PROPERTY:
            shown[name] = dict(value)
            shown["User-Property-Pairs"] = [{"key": key, "value": item} for key, item in value]
        elif name == properties_.CORRELATION_DATA:
            shown[name] = value.decode("utf-8", "replace")
        elif name == properties_.SUBSCRIPTION_IDENTIFIER:
            shown[name] = value[0] if len(value) == 1 else list(value)
        else:
            shown[name] = value
    return shown


def payload_json(message: Message) -> Any:
    """The message's payload decoded (cached by the message); a `RuleError` when it is not JSON."""
    try:
        return message.json()
    except orjson.JSONDecodeError:
        raise RuleError(f"the payload is not JSON: {message.payload[:80]!r}") from None


def column(message: Message, name: str) -> Any:
    """One column of a bus message's `message.publish` event (undefined when there is none)."""
    return Env.for_message(message)[name]


def _decode(raw: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise RuleError(f"the payload is not JSON: {raw[:80]!r}") from None


def put_path(target: dict[str, Any], path: list[Any], value: Any) -> None:
    """target[a][b]... = value, copying the dicts and lists on the way so shared values never change.

    As emqx_rule_maps:nested_put: the first step is a name; the others are keys, 1-based
    indexes (negative from the end; one out of range puts nothing) or HEAD/TAIL; a step into
    something of the wrong kind replaces it (a list with just the new item, a map with one key).
    """
    key = path[0]
    env = target if key == "payload" and isinstance(target, Env) else None  # the payload of an Env
    if len(path) == 1:
        target[key] = value
        if env is not None:
            env._decoded = _DECODED_UNSET  # payload.x now reads the new value
        return
    if env is not None:
        current = env.payload_value()
    else:
        current = target.get(key)
        if key == "payload" and type(current) is str:
            current = _decode(current)  # EMQX decodes a selected payload before putting into it
    target[key] = new = _put(current, path, 1, value)
    if env is not None:
        env._decoded = new


def _put(container: Any, path: list[Any], i: int, value: Any) -> Any:
    """A copy of `container` with path[i:] set to value."""
    step = path[i]
    last = i == len(path) - 1
    if type(step) is str:
        result = dict(container) if type(container) is dict else {}
        result[step] = value if last else _put(result.get(step), path, i + 1, value)
        return result
    if type(container) is not list:
        return [value if last else _put(None, path, i + 1, value)]
    if step is HEAD or step is TAIL:
        item = value if last else _put(None, path, i + 1, value)
        return [item, *container] if step is HEAD else [*container, item]
    n = len(container)
    at = step - 1 if step > 0 else n + step
    if step == 0 or not 0 <= at < n:
        return container
    items = list(container)
    items[at] = value if last else _put(container[at], path, i + 1, value)
    return items
