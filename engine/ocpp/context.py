"""What every session shares: settings, schemas, the bus, the live sessions, counters.

The node owns one `GatewayContext`; a reload replaces `settings` (and the
registry) on it, and sessions read them per message, so a change applies to
charge points already connected.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from engine.bus import Bus, Message
from engine.config.schema import OcppSettings
from engine.ocpp.admission import Guards
from engine.ocpp.events import EVENT_NAMES
from engine.ocpp.registry import ConnectedSession, SessionRegistry
from engine.ocpp.trace import Tracer

if TYPE_CHECKING:
    from engine.ocpp.schemas import SchemaRegistry

_VAR = re.compile(r"\$\{([a-z_]+)\}")
TEMPLATE_VARS = frozenset({"cid", "clientid", "action", "type", "id", "proto_ver"})


class TopicTemplate:
    """`cp/${cid}/${action}` compiled once: literal parts and variable names."""

    __slots__ = ("text", "parts", "per_message")

    def __init__(self, text: str) -> None:
        self.text = text
        self.parts: list[tuple[bool, str]] = []
        pos = 0
        for m in _VAR.finditer(text):
            if m.start() > pos:
                self.parts.append((False, text[pos : m.start()]))
            name = "cid" if m.group(1) == "clientid" else m.group(1)
            self.parts.append((True, name))
            pos = m.end()
        if pos < len(text):
            self.parts.append((False, text[pos:]))
        # ${id} changes with every message; the others are fixed per (session, action)
        self.per_message = any(var and name == "id" for var, name in self.parts)

    def render(self, values: dict[str, str]) -> str:
        return "".join(values.get(name, "") if var else name for var, name in self.parts)


@dataclass
class GatewayMetrics:
    connections: int = 0
    connections_total: int = 0
    by_proto: Counter[str] = field(default_factory=Counter)
    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # CALLERROR codes we sent
    result_errors: Counter[str] = field(default_factory=Counter)  # CALLRESULTERROR codes we sent (2.1)
    # frames by MessageTypeId (index 2..6; a frame that does not parse is not counted here)
    received_by_type: list[int] = field(default_factory=lambda: [0] * 7)
    sent_by_type: list[int] = field(default_factory=lambda: [0] * 7)
    drops: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)  # handshake refusals by reason
    bounded: Counter[str] = field(default_factory=Counter)  # entries a per-session bound did not keep, by its key


class GatewayContext:
    def __init__(self, settings: OcppSettings, bus: Bus, node: str, registry: SchemaRegistry | None) -> None:
        self.bus = bus
        self.node = node
        self.sessions: SessionRegistry[ConnectedSession] = SessionRegistry()
        self.metrics = GatewayMetrics()
        self.guards = Guards()  # per-client admission: bans, per-source and per-id rates
        self.tracer = Tracer(self.sessions)  # frame traces and live streams: sessions' `tap`
        self.claims: Any = None  # engine.ocpp.takeover.ClaimOrder: new sessions' downstream waits for it
        self._wanted: dict[str, tuple[int, bool]] = {}
        self.apply(settings, registry)

    def apply(self, settings: OcppSettings, registry: SchemaRegistry | None) -> None:
        self.settings = settings
        self.registry = registry
        self.lenient = frozenset(settings.lenient_clients)
        up = settings.upstream
        self.call_topic = TopicTemplate(up.topic)
        self.reply_topic = TopicTemplate(up.reply_topic)
        self.error_topic = TopicTemplate(up.error_topic)
        self.override_topics = {action: TopicTemplate(t) for action, t in up.topic_override_mapping.items()}
        self.dnstream_topic = TopicTemplate(settings.dnstream.topic)
        self.generation = getattr(self, "generation", 0) + 1  # sessions re-derive cached topics on change

    def checks_upstream(self, cid: str, listener_mode: str | None = None) -> bool:
        mode = listener_mode or self.settings.message_format_checking
        return self.registry is not None and mode in ("all", "upstream_only") and cid not in self.lenient

    def checks_dnstream(self, cid: str, listener_mode: str | None = None) -> bool:
        mode = listener_mode or self.settings.message_format_checking
        return self.registry is not None and mode in ("all", "dnstream_only") and cid not in self.lenient

    def wants_event(self, name: str) -> bool:
        """Whether anything subscribes to `$events/<name>`: events nobody reads are not built."""
        cached = self._wanted.get(name)
        if cached is None or cached[0] != self.bus.version:
            cached = self._wanted[name] = (self.bus.version, self.bus.has_subscribers(f"$events/{name}"))
        return cached[1]

    def publish_event(self, name: str, fields: dict[str, Any]) -> None:
        now = time.time_ns() // 1_000_000
        fields["event"] = EVENT_NAMES[name]
        fields.setdefault("node", self.node)
        fields.setdefault("timestamp", now)
        self.bus.publish(Message(f"$events/{name}", orjson.dumps(fields), origin="event", timestamp=now, decoded=fields))
