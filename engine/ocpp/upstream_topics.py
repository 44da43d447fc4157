"""Where one charge point's frames go on the bus: each upstream message's topic and payload, or why not.

The topic comes from the template the config names for the frame (`upstream.topic`, `reply_topic`,
`error_topic`, `topic_override_mapping`), under the session's mountpoint. A template without
`${id}` gives one topic per (template, action, type): it is rendered and validated once and kept
(at most `MAX_CACHED_TOPICS` per charge point, whose actions are few unless it is hostile); a
reload (a new `generation`) forgets them. A frame whose topic is not a valid name, or whose JSON
the bus cannot carry, raises `Unpublishable` with the CALLERROR code and the drop reason; the
session answers it (engine/ocpp/session.py). The downstream counterpart is `outbound`.
"""

from __future__ import annotations

from typing import Any, Protocol

from engine.bus import TopicError, validate_name
from engine.ocpp import frames
from engine.ocpp.context import TopicTemplate

MAX_CACHED_TOPICS = 64  # per session: the actions a charge point sends are few, unless it is hostile


class Unpublishable(Exception):
    """An upstream frame with no topic or payload the bus can carry: (CALLERROR code, drop reason)."""

    def __init__(self, code: str, reason: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.reason = reason
        self.description = description


class Generation(Protocol):
    """The gateway's config generation: it changes when a reload replaces the templates."""

    generation: int


class UpstreamTopics:
    __slots__ = ("_ctx", "_cid", "_proto_ver", "_cache", "_generation")

    def __init__(self, ctx: Generation, cid: str, proto_ver: str) -> None:
        self._ctx = ctx
        self._cid = cid
        self._proto_ver = proto_ver
        self._cache: dict[tuple[int, str, str], str] = {}
        self._generation = ctx.generation

    def prepare(self, mountpoint: str, template: TopicTemplate, action: str, type_: str, unique_id: str,
                body: dict[str, Any]) -> tuple[str, bytes]:
        """The topic and payload of an upstream message, or `Unpublishable` saying why not."""
        try:
            topic = self.topic(mountpoint, template, action, type_, unique_id)
        except TopicError as exc:
            raise Unpublishable("InternalError", "invalid_topic",
                                f"the frame cannot be published: its topic is not valid ({exc})") from None
        try:
            payload = frames.dumps(body)
        except frames.EncodeError as exc:
            raise Unpublishable(frames.format_violation(self._proto_ver), "invalid_frame",
                                f"the frame {exc}") from None
        return topic, payload

    def topic(self, mountpoint: str, template: TopicTemplate, action: str, type_: str, unique_id: str) -> str:
        """The topic (validated: raises TopicError). Cached per (template, action, type): a CALL and a
        SEND of one action share a template."""
        if self._generation != self._ctx.generation:
            self._cache.clear()
            self._generation = self._ctx.generation
        if template.per_message:
            topic = mountpoint + template.render(self._vars(action, type_, unique_id))
            validate_name(topic)
            return topic
        key = (id(template), action, type_)
        cached = self._cache.get(key)
        if cached is None:
            topic = mountpoint + template.render(self._vars(action, type_))
            validate_name(topic)  # checked once, when cached; raises TopicError
            if len(self._cache) < MAX_CACHED_TOPICS:
                self._cache[key] = topic
            return topic
        return cached

    def _vars(self, action: str, type_: str = "", unique_id: str = "") -> dict[str, str]:
        return {"cid": self._cid, "action": action, "type": type_, "id": unique_id, "proto_ver": self._proto_ver}
