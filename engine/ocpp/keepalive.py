"""A charge point's liveness as a value, like EMQX's `emqx_ocpp_keepalive`: no timers inside.

The session keeps the timer: every `interval` seconds it asks `check` how long the charge point
has been silent, and gets the next state back, or None when the charge point missed too many
checks in a row. A frame within a check window (the interval plus `GRACE`, for clock and
network jitter) starts the count again.
"""

from __future__ import annotations

from dataclasses import dataclass

GRACE = 0.1  # a check window is the interval plus 10%


@dataclass(frozen=True, slots=True)
class Keepalive:
    interval: float  # seconds; 0: no keepalive
    missed: int = 0  # checks in a row without a frame

    @property
    def window(self) -> float:
        return self.interval * (1 + GRACE)

    def check(self, silent_for: float, max_missed: int) -> Keepalive | None:
        """The state after a check, `silent_for` seconds after the last frame; None: timed out
        (`max_missed` checks in a row without a frame)."""
        if silent_for <= self.window:
            return self if self.missed == 0 else Keepalive(self.interval)
        missed = self.missed + 1
        if missed >= max_missed:
            return None
        return Keepalive(self.interval, missed)
