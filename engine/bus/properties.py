"""The MQTT 5 PUBLISH properties a message may carry (`Message.properties`), under EMQX's names.

A message's properties are a dict from these names to checked values: ints for
`Payload-Format-Indicator` and `Message-Expiry-Interval`, str for `Content-Type`
and `Response-Topic`, bytes for `Correlation-Data`, and a list of (name, value)
str pairs for `User-Property`. `coerce` and `user_properties` turn what a rule
rendered into those values, or raise `PropertyError` saying what is wrong;
whatever they return an MQTT 5 broker takes (a broker such as mosquitto drops
the connection of a client that sends a malformed property, and with it every
message queued behind it). The MQTT bridge encodes them (connectors/mqtt/properties.py);
over MQTT 3.1.1 they cannot travel and are left out.
"""

from __future__ import annotations

from typing import Any

import orjson

from engine.bus.topic import TopicError, unsendable_character, validate_name
from engine.undefined import UNDEFINED

PAYLOAD_FORMAT_INDICATOR = "Payload-Format-Indicator"
MESSAGE_EXPIRY_INTERVAL = "Message-Expiry-Interval"
CONTENT_TYPE = "Content-Type"
RESPONSE_TOPIC = "Response-Topic"
CORRELATION_DATA = "Correlation-Data"
USER_PROPERTY = "User-Property"
SUBSCRIPTION_IDENTIFIER = "Subscription-Identifier"  # only on what the broker sends (one or more)

# what republish's `mqtt_properties` may set (EMQX 5's republish_mqtt_properties), in the order
# they are encoded
SETTABLE = (PAYLOAD_FORMAT_INDICATOR, MESSAGE_EXPIRY_INTERVAL, CONTENT_TYPE, RESPONSE_TOPIC, CORRELATION_DATA)

MAX_BINARY = 65535  # a two-byte length prefix
MAX_EXPIRY = 2**32 - 1  # a four-byte integer


class PropertyError(ValueError):
    """A value an MQTT 5 property cannot take; the message names the property."""


def coerce(name: str, value: Any) -> int | str | bytes:
    """`value` (an int, or the text a template rendered) as property `name` takes it."""
    if name == PAYLOAD_FORMAT_INDICATOR:
        number = _integer(name, value)
        if number not in (0, 1):
            raise PropertyError(f"{name} must be 0 (bytes) or 1 (UTF-8 text), not {number}")
        return number
    if name == MESSAGE_EXPIRY_INTERVAL:
        number = _integer(name, value)
        if not 0 <= number <= MAX_EXPIRY:
            raise PropertyError(f"{name} must be 0 to {MAX_EXPIRY} seconds, not {number}")
        return number
    if name in (CONTENT_TYPE, RESPONSE_TOPIC):
        text = _string(name, value)
        if name == RESPONSE_TOPIC:
            try:
                validate_name(text)
            except TopicError as exc:
                raise PropertyError(f"{name} {_short(text)}: {exc}") from None
        return text
    if name == CORRELATION_DATA:
        data = value if isinstance(value, bytes) else _text(value).encode("utf-8", "surrogatepass")
        if len(data) > MAX_BINARY:
            raise PropertyError(f"{name} is at most {MAX_BINARY} bytes, not {len(data)}")
        return data
    raise PropertyError(f"unknown MQTT property {name!r} (one of {', '.join(SETTABLE)})")


def user_properties(value: Any) -> list[tuple[str, str]]:
    """A rendered `user_properties` value: a map (or the JSON text of one) → its pairs; nothing
    (undefined, null, "", {}) → none. Values that are not strings go in as JSON."""
    if value is UNDEFINED or value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise PropertyError(f"{USER_PROPERTY}: expected a map, not the text {_short(value)}") from None
    if not isinstance(value, dict):
        raise PropertyError(f"{USER_PROPERTY}: expected a map, not {_short(value)}")
    return [(_string(f"{USER_PROPERTY} name", key), _string(f"{USER_PROPERTY} {key!r}", _text(item)))
            for key, item in value.items()]


def _integer(name: str, value: Any) -> int:
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit() and text.isascii():
            return int(text)
    raise PropertyError(f"{name} must be an integer, not {_short(value)}")


def _string(name: str, value: Any) -> str:
    text = _text(value)
    code = unsendable_character(text)
    if code is not None:
        raise PropertyError(f"{name} {_short(text)}: MQTT strings cannot hold the character U+{code:04X}")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BINARY:
        raise PropertyError(f"{name} is at most {MAX_BINARY} bytes of UTF-8")
    return text


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return orjson.dumps(value, default=str).decode()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
