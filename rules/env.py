"""A rule's input for one message: its columns, computed lazily, plus the aliases the rule adds.

`Env` is a dict of columns. Columns that cost something (the payload as
text, a message id) are computed on first use; a missing column is
`UNDEFINED`. The decoded payload comes from the message's own JSON cache,
so several rules on one message decode it once, and nothing a rule does
changes it (puts copy the dicts they pass through).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from engine.bus.message import Message
from rules.values import UNDEFINED, RuleError

_DECODED_UNSET: Any = object()


def _message_id(message: Message | None) -> str:
    return uuid.uuid4().hex.upper()


class Env(dict):
    __slots__ = ("message", "_decoded")

    def __init__(self, columns: dict[str, Any], message: Message | None = None) -> None:
        super().__init__(columns)
        self.message = message
        self._decoded = _DECODED_UNSET

    @classmethod
    def for_message(cls, message: Message) -> Env:
        """The columns of EMQX's `message.publish` event for a bus message."""
        columns = dict(message.headers)
        columns["topic"] = message.topic
        columns["qos"] = message.qos
        columns["timestamp"] = message.timestamp
        columns["publish_received_at"] = message.timestamp
        columns["event"] = "message.publish"
        return cls(columns, message)

    @classmethod
    def for_event(cls, message: Message) -> Env:
        """An `$events/...` message: its fields are the columns."""
        fields = message.json()
        return cls(fields if isinstance(fields, dict) else {}, None)

    def __missing__(self, key: str) -> Any:
        message = self.message
        if message is not None:
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
                value = self["pub_props"] = {}
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
            try:
                return self.message.json()
            except orjson.JSONDecodeError:
                raise RuleError(f"the payload is not JSON: {self.message.payload[:80]!r}") from None
        return UNDEFINED

    def materialize(self) -> dict[str, Any]:
        """Every column, lazy ones computed (for SELECT *)."""
        if self.message is not None:
            for key in ("id", "payload", "flags", "pub_props"):
                self[key]
        return dict(self)

    def child(self, extra: dict[str, Any]) -> Env:
        env = Env(self, self.message)
        env._decoded = self._decoded
        env.update(extra)
        return env


def _decode(raw: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise RuleError(f"the payload is not JSON: {raw[:80]!r}") from None


def put_path(target: dict[str, Any], path: list[str], value: Any) -> None:
    """target[a][b]... = value, copying the dicts on the way so shared values never change."""
    key = path[0]
    if len(path) == 1:
        target[key] = value
        return
    if isinstance(target, Env) and key == "payload":
        current = target.payload_value()
    else:
        current = target.get(key)
    child = dict(current) if type(current) is dict else {}
    put_path(child, path[1:], value)
    target[key] = child
