"""Logging: one line per event, text or JSON, no tracebacks for expected errors."""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Hashable

import orjson

NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": NOTICE,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = f"{stamp}.{int(record.msecs):03d}Z [{record.levelname.lower()}] {record.name}: {record.getMessage()}"
        if record.exc_info:
            # unexpected errors only: expected ones are logged without exc_info
            line += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


# third-party loggers setup_logging keeps at warning unless the level is debug
QUIETED_LOGGERS = ("amqtt", "transitions", "uvicorn", "uvicorn.error", "uvicorn.access", "websockets", "asyncio")


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    # third-party chatter stays out unless asked for
    quiet = logging.DEBUG if level == "debug" else logging.WARNING
    for name in QUIETED_LOGGERS:
        logging.getLogger(name).setLevel(max(quiet, LEVELS[level]))


class Throttle:
    """At most one log line per `every` seconds for each key (a flood of the same trouble is one
    line now and then); the line let through learns how many were held back since the last one.
    What happened is counted elsewhere (metrics): this only decides what is said."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._last: dict[Hashable, float] = {}
        self._held: Counter[Hashable] = Counter()

    def allow(self, key: Hashable = None, weight: int = 1) -> int | None:
        """None: hold this line back (`weight` more held); else how many were held back before it."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            self._held[key] += weight
            return None
        self._last[key] = now
        return self._held.pop(key, 0)
