"""What a session is handed, as Protocols: the gateway it belongs to (`SessionContext`), the
listener that accepted it (`ListenerView`) and its socket (`Transport`).

The session depends on no concrete class of the rooms around it (`GatewayContext`, the listener,
the websocket transport), and they never import it: they hand it objects of these shapes.
"""

from __future__ import annotations

from typing import Any, Protocol

from engine.bus import Bus
from engine.config.schema import OcppSettings
from engine.ocpp.context import GatewayMetrics, TopicTemplate
from engine.ocpp.registry import SessionRegistry
from engine.ocpp.schemas import SchemaRegistry
from engine.ocpp.trace import Tracer


class Transport(Protocol):
    def send_text(self, text: str) -> None: ...
    def close(self, code: int, reason: str) -> None: ...


class SessionContext(Protocol):
    """What a session reads of the gateway it belongs to (`GatewayContext`), live: a reload
    replaces the settings, the schemas and the topic templates under it."""

    bus: Bus
    node: str
    metrics: GatewayMetrics
    settings: OcppSettings
    registry: SchemaRegistry | None
    sessions: SessionRegistry[Any]  # a session removes itself when it closes
    generation: int
    call_topic: TopicTemplate
    reply_topic: TopicTemplate
    error_topic: TopicTemplate
    override_topics: dict[str, TopicTemplate]
    dnstream_topic: TopicTemplate
    tracer: Tracer  # frame traces: sets `tap` on the sessions of the ids it traces

    def checks_upstream(self, cid: str, listener_mode: str | None = None) -> bool: ...
    def checks_dnstream(self, cid: str, listener_mode: str | None = None) -> bool: ...
    def wants_event(self, name: str) -> bool: ...
    def publish_event(self, name: str, fields: dict[str, Any]) -> None: ...


class ListenerView(Protocol):
    """What a session reads of the listener that accepted it (live, so reloads apply).
    `settings` (its ListenerSettings) is read if present, for `websocket.max_frame_size`."""

    @property
    def full_name(self) -> str: ...

    @property
    def checking(self) -> str | None: ...

