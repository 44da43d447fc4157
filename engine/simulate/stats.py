"""The fleet's counters and a latency histogram with constant memory."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

_SCALE = 100  # buckets per e-fold of microseconds: about 1% resolution


class Histogram:
    """Latencies in log-spaced buckets: percentiles within ~1%, whatever the number of samples."""

    __slots__ = ("buckets", "count", "max", "total")

    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        us = seconds * 1e6
        self.buckets[int(math.log(us) * _SCALE) if us > 1.0 else 0] += 1
        self.count += 1
        self.total += seconds
        self.max = max(self.max, seconds)

    def merge(self, other: Histogram) -> None:
        self.buckets.update(other.buckets)
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)

    def percentile(self, p: float) -> float | None:
        """Seconds (the bucket's middle), or None without samples."""
        if not self.count:
            return None
        rank = p * self.count
        seen = 0
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if seen >= rank:
                return min(math.exp((key + 0.5) / _SCALE) / 1e6, self.max)
        return self.max

    def summary_ms(self) -> dict[str, float | None]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 3)

        return {
            "p50": ms(self.percentile(0.50)),
            "p90": ms(self.percentile(0.90)),
            "p99": ms(self.percentile(0.99)),
            "max": ms(self.max if self.count else None),
            "mean": ms(self.total / self.count if self.count else None),
        }


class Stats:
    """Counters shared by every charge point of a fleet (one event loop: no locks)."""

    def __init__(self) -> None:
        self.connected = 0
        self.connected_peak = 0
        self.connects = 0
        self.connect_failures = 0
        self.connect_errors: Counter[str] = Counter()
        self.reconnects = 0
        self.unexpected_closes = 0
        self.boots = 0
        self.frames_sent = 0
        self.frames_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.calls_sent = 0
        self.calls_answered = 0
        self.callerrors_received = 0
        self.callerror_codes: Counter[str] = Counter()
        self.timeouts = 0
        self.timeout_examples: list[dict[str, Any]] = []  # the first few, to tell where answers got lost
        self.protocol_errors: Counter[str] = Counter()  # callerror, bad_frame, unexpected_reply, unexpected_close, subprotocol
        self.server_calls: Counter[str] = Counter()
        self.server_calls_answered = 0
        self.server_callerrors_sent = 0
        self.sends_sent = 0  # 2.1 SENDs (unconfirmed)
        self.sends_received = 0
        self.callresulterrors_received = 0  # 2.1: the CSMS could not process a CALLRESULT of ours
        self.sent: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.errored: Counter[str] = Counter()
        self.tx_started = 0
        self.tx_stopped = 0
        self.energy_wh = 0
        self.latency = Histogram()  # until the stop; then `stop_latency` takes the answers of the wind-down
        self.stop_latency: Histogram | None = None
        self.window = Histogram()  # since the last progress line
        self.answered_at_stop: int | None = None

    def record_latency(self, seconds: float) -> None:
        (self.latency if self.stop_latency is None else self.stop_latency).add(seconds)
        self.window.add(seconds)

    def stopping(self) -> None:
        """From now on latencies are the wind-down's (every session stopping at once), reported apart."""
        if self.stop_latency is None:
            self.stop_latency = Histogram()
            self.answered_at_stop = self.calls_answered

    def protocol_error(self, kind: str) -> None:
        self.protocol_errors[kind] += 1

    @property
    def errors(self) -> int:
        """Everything that went wrong, for the progress line."""
        return sum(self.protocol_errors.values()) + self.timeouts + self.connect_failures

    def actions(self) -> dict[str, dict[str, int]]:
        names = sorted(set(self.sent) | set(self.answered) | set(self.errored))
        return {name: {"sent": self.sent[name], "answered": self.answered[name], "errors": self.errored[name]}
                for name in names}

    def summary(self) -> dict[str, Any]:
        latency = self.latency.summary_ms()
        return {
            "connected_peak": self.connected_peak,
            "connects": self.connects,
            "connect_failures": self.connect_failures,
            "connect_errors": dict(self.connect_errors),
            "reconnects": self.reconnects,
            "unexpected_closes": self.unexpected_closes,
            "boots": self.boots,
            "calls_sent": self.calls_sent,
            "calls_answered": self.calls_answered,
            "callerrors_received": self.callerrors_received,
            "callerror_codes": dict(self.callerror_codes),
            "timeouts": self.timeouts,
            "timeout_examples": self.timeout_examples,
            "protocol_errors": sum(self.protocol_errors.values()),
            "protocol_error_kinds": dict(self.protocol_errors),
            "server_calls_received": sum(self.server_calls.values()),
            "server_calls_answered": self.server_calls_answered,
            "server_callerrors_sent": self.server_callerrors_sent,
            "server_actions": dict(sorted(self.server_calls.items())),
            "sends_sent": self.sends_sent,
            "sends_received": self.sends_received,
            "callresulterrors_received": self.callresulterrors_received,
            "frames_sent": self.frames_sent,
            "frames_received": self.frames_received,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "transactions_started": self.tx_started,
            "transactions_stopped": self.tx_stopped,
            "energy_wh": self.energy_wh,
            "p50_ms": latency["p50"],
            "p99_ms": latency["p99"],
            "latency_ms": latency,
            "stop_latency_ms": (self.stop_latency or Histogram()).summary_ms(),
            "actions": self.actions(),
        }
