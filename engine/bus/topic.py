"""MQTT topic names and filters (MQTT 3.1.1 §4.7, MQTT 5 §4.7).

`matches` is the direct, obviously-correct matcher: the trie is tested
against it, and small one-off checks (forward filters, `=~`) may use it.
"""

from __future__ import annotations

import re

MAX_TOPIC_BYTES = 65535

# MQTT 5 §1.5.4: a string SHOULD NOT hold control characters or non-characters, and a receiver
# may treat them as malformed; mosquitto does, and drops the connection of whoever publishes one
# (the bridge: every charge point's messages would stop)
# a lone surrogate cannot be encoded as UTF-8 at all: the bridge could not send the topic
_NOT_IN_A_TOPIC = re.compile("[\x01-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]|[\U00010000-\U0010ffff]")


class TopicError(ValueError):
    """A topic name or filter that MQTT does not allow."""


def unsendable_character(text: str) -> int | None:
    """The first character an MQTT UTF-8 string must not hold (NUL, a control character, a surrogate,
    a non-character), or None. Topics and the string properties of a PUBLISH obey the same rule."""
    if "\0" in text:
        return 0
    if not text.isprintable():  # fast: no control character or non-character can be printable
        for m in _NOT_IN_A_TOPIC.finditer(text):
            code = ord(m.group())
            if code < 0x10000 or code & 0xFFFE == 0xFFFE:
                return code
    return None


def _validate_common(topic: str) -> None:
    if not topic:
        raise TopicError("a topic cannot be empty")
    code = unsendable_character(topic)
    if code == 0:
        raise TopicError("a topic cannot contain NUL")
    if code is not None:
        raise TopicError(f"a topic cannot contain the control character, surrogate or non-character U+{code:04X}")
    if len(topic.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
        raise TopicError(f"a topic is at most {MAX_TOPIC_BYTES} bytes")


def validate_name(topic: str) -> None:
    """A topic to publish to: no wildcards."""
    _validate_common(topic)
    if "+" in topic or "#" in topic:
        raise TopicError("a topic name cannot contain the wildcards + or #")


def validate_filter(topic_filter: str) -> None:
    """A topic filter to subscribe with: `+` fills a whole level, `#` only last."""
    _validate_common(topic_filter)
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise TopicError("# must be a whole level and the last one")
        if "+" in level and level != "+":
            raise TopicError("+ must be a whole level")


def is_wildcard(topic_filter: str) -> bool:
    return "+" in topic_filter or "#" in topic_filter


def matches(topic_filter: str, topic: str) -> bool:
    """Whether a topic name matches a filter, level by level."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False  # MQTT 4.7.2: top-level wildcards never match $-topics
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for i, level in enumerate(filter_levels):
        if level == "#":
            return True  # also matches the parent: "a/#" matches "a"
        if i >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[i]:
            return False
    return len(filter_levels) == len(topic_levels)
