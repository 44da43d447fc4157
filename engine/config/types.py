"""Value types of the config language: durations, sizes, bind addresses.

Each type parses the forms an operator writes in HOCON (or in an environment
override) and prints back the canonical form, so `check-config` shows values
the way they would be written.
"""

from __future__ import annotations

import datetime
import re
from typing import NamedTuple


class ConfigValueError(ValueError):
    """A value that does not fit its key; the message says what was expected."""


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$", re.IGNORECASE)


class Duration(float):
    """A duration in seconds; written `500ms`, `30s`, `5m`, `1h`, `1d`."""

    @classmethod
    def parse(cls, value: object) -> Duration:
        # pyhocon turns unquoted `30s` into a timedelta; quoted ones stay strings.
        if isinstance(value, datetime.timedelta):
            return cls(value.total_seconds())
        if isinstance(value, str):
            match = _DURATION_RE.match(value)
            if match:
                return cls(float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()])
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ConfigValueError(f'a duration needs a unit, e.g. "{value}s" or "{value}ms"')
        raise ConfigValueError('expected a duration such as "500ms", "30s", "5m", "1h"')

    def __str__(self) -> str:
        ms = round(self * 1000)
        for unit, factor in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
            if ms and ms % factor == 0:
                return f"{ms // factor}{unit}"
        return f"{ms}ms"


_SIZE_UNITS = {"": 1, "b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*(b|kb|mb|gb)?\s*$", re.IGNORECASE)


class Size(int):
    """A size in bytes; written `512`, `64KB`, `1MB`, `1GB` (powers of 1024, as EMQX)."""

    @classmethod
    def parse(cls, value: object) -> Size:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return cls(value)
        if isinstance(value, str):
            match = _SIZE_RE.match(value)
            if match:
                return cls(int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()])
        raise ConfigValueError('expected a size such as 1024, "64KB" or "1MB"')

    def __str__(self) -> str:
        for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
            if self and self % factor == 0:
                return f"{self // factor}{unit}"
        return str(int(self))


class Bind(NamedTuple):
    """A listening address: `"0.0.0.0:33033"`, `"[::1]:1883"`, or a bare port `33033`."""

    host: str
    port: int

    @classmethod
    def parse(cls, value: object) -> Bind:
        host, port_text = "0.0.0.0", None
        if isinstance(value, int) and not isinstance(value, bool):
            port_text = str(value)
        elif isinstance(value, str):
            text = value.strip()
            if text.isdigit():
                port_text = text
            elif text.startswith("["):
                end = text.find("]:")
                if end > 0:
                    host, port_text = text[1:end], text[end + 2 :]
            elif text.count(":") == 1:
                host, port_text = text.split(":")
        if not port_text or not port_text.isdigit() or not host:
            raise ConfigValueError('expected "host:port" or a port number, e.g. "0.0.0.0:33033"')
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise ConfigValueError(f"port {port} is out of range 1..65535")
        return cls(host, port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


INFINITY = "infinity"
# What `max_frame_size = infinity` means: a frame is held whole in memory and parsed, so "no limit"
# is this ceiling (docs/gateway.md); a larger size written out is taken as written.
INFINITE_FRAME_SIZE = 16 * 1024 * 1024
UNLIMITED_COUNT = 2**62  # what `max_connections = infinity` means: no count of its own


class FrameSize(Size):
    """A size, or EMQX's `infinity` (read as `INFINITE_FRAME_SIZE`, printed back as `infinity`)."""

    @classmethod
    def parse(cls, value: object) -> FrameSize:
        if isinstance(value, str) and value.strip().lower() == INFINITY:
            return cls(INFINITE_FRAME_SIZE)
        try:
            return cls(Size.parse(value))
        except ConfigValueError:
            raise ConfigValueError('expected a size such as 1024, "64KB" or "1MB", or infinity') from None

    def __str__(self) -> str:
        return INFINITY if self == INFINITE_FRAME_SIZE else super().__str__()


class Count(int):
    """A whole number, or EMQX's `infinity` (no limit: read as `UNLIMITED_COUNT`)."""

    @classmethod
    def parse(cls, value: object) -> Count:
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value)
        if isinstance(value, str):
            text = value.strip().lower()
            if text == INFINITY:
                return cls(UNLIMITED_COUNT)
            if text.lstrip("-").isdigit():
                return cls(int(text))
        raise ConfigValueError("expected an integer or infinity")

    def __str__(self) -> str:
        return INFINITY if self >= UNLIMITED_COUNT else str(int(self))


# value types with a `parse` classmethod the loader calls (beside Duration, Size and Bind)
PARSED_TYPES: tuple[type, ...] = (FrameSize, Count)


class CommaSeparated(NamedTuple):
    """Marks a list key that also takes EMQX's comma-separated string form ("ocpp1.6, ocpp2.0"):
    `Annotated[list[...], CommaSeparated()]`. `aliases` rename items as they are read."""

    aliases: tuple[tuple[str, str], ...] = ()

    def split(self, value: object) -> object:
        """The items of a comma-separated string; any other value (a list, HOCON list text) as it is."""
        if isinstance(value, str) and not value.lstrip().startswith("["):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list) and self.aliases:
            names = dict(self.aliases)
            value = [names.get(item, item) if isinstance(item, str) else item for item in value]
        return value
