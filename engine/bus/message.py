"""The one message shape that travels the bus, rules and connectors."""

from __future__ import annotations

import time
from typing import Any

import orjson

_UNSET: Any = object()


class Message:
    """A published message: MQTT's fields plus where it came from.

    `origin` says which part published it ("ocpp", "mqtt", "rule:<id>",
    "event", "api"); the MQTT bridge uses it to never send a broker's message
    back to the broker, and rules use it as a loop guard. `headers` carries
    the per-message context rules read (clientid, username, peerhost,
    proto_ver, node, ...). `properties` holds its MQTT 5 PUBLISH properties
    (engine/bus/properties.py; None: none), which the MQTT bridge sends on to
    an MQTT 5 broker. `json()` decodes the payload once and caches it.
    """

    __slots__ = ("topic", "payload", "qos", "retain", "origin", "timestamp", "headers", "properties", "_decoded")

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        origin: str = "",
        timestamp: int | None = None,
        headers: dict[str, Any] | None = None,
        decoded: Any = _UNSET,
        properties: dict[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.origin = origin
        self.timestamp = time.time_ns() // 1_000_000 if timestamp is None else timestamp
        self.headers = headers if headers is not None else {}
        self.properties = properties
        self._decoded = decoded

    def json(self) -> Any:
        """The payload decoded as JSON (cached); raises `orjson.JSONDecodeError` if it is not."""
        if self._decoded is _UNSET:
            self._decoded = orjson.loads(self.payload)
        return self._decoded

    def __repr__(self) -> str:
        return f"Message({self.topic!r}, {self.payload[:60]!r}, qos={self.qos}, origin={self.origin!r})"
