"""Login lockout per source address (EMQX's `dashboard.unsuccessful_login_*`, keyed by address).

`unsuccessful_login_max_attempts` failed logins from one address within
`unsuccessful_login_interval` lock that address out for
`unsuccessful_login_lock_duration`: its requests are answered 429 before any
credential is looked at, so a locked guesser costs a dictionary lookup. EMQX
locks a username; locking the address instead means a guesser cannot lock the
operator out from elsewhere. The tables are bounded: the oldest entries go
first when a flood of addresses fills them.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.config.schema import DashboardSettings

log = logging.getLogger("ocppgw.admin")

MAX_SOURCES = 10_000


@dataclass
class AdminStats:
    """Read by the metrics collector."""

    login_failures: int = 0
    lockouts: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # reason → requests refused

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1


class LoginGuard:
    def __init__(self, clock: Callable[[], float] = time.monotonic, max_sources: int = MAX_SOURCES) -> None:
        self.clock = clock
        self.max_sources = max_sources
        self.stats = AdminStats()
        self._failures: dict[str, deque[float]] = {}
        self._locked: dict[str, float] = {}  # source → locked until

    def locked_for(self, source: str) -> float:
        """Seconds this source stays locked out (0: not locked)."""
        until = self._locked.get(source)
        if until is None:
            return 0.0
        left = until - self.clock()
        if left <= 0:
            del self._locked[source]
            return 0.0
        return left

    def failed(self, source: str, settings: DashboardSettings) -> None:
        """A login from `source` failed (`settings`: the dashboard's, read now so a reload applies)."""
        self.stats.login_failures += 1
        limit = settings.unsuccessful_login_max_attempts
        if limit <= 0:
            return
        now = self.clock()
        window = self._failures.pop(source, None) or deque()
        self._failures[source] = window  # re-inserted: the dict's order is least recently failed first
        window.append(now)
        while window and window[0] <= now - settings.unsuccessful_login_interval:
            window.popleft()
        while len(window) > limit:
            window.popleft()
        if len(window) >= limit:
            del self._failures[source]
            self._locked.pop(source, None)
            self._locked[source] = now + settings.unsuccessful_login_lock_duration
            self.stats.lockouts += 1
            log.warning("admin API: %d failed logins from %s within %s: locked out for %s", limit, source,
                        settings.unsuccessful_login_interval, settings.unsuccessful_login_lock_duration)
        self._bound(self._failures)
        self._bound(self._locked)

    def succeeded(self, source: str) -> None:
        self._failures.pop(source, None)

    def _bound(self, table: dict[str, Any]) -> None:
        while len(table) > self.max_sources:
            del table[next(iter(table))]
