"""File descriptors: the open-file limit, a reserve kept free, and accept errors counted.

Every socket is a file descriptor, and a process at its open-file limit can
accept nothing, open no file and reach no broker. Three things keep a node
out of that corner:

- `raise_nofile_limit`: `run` raises its soft limit to the hard one at start
  (a login shell's soft 1,024 would cap a node near 1,000 chargers), and
  `fd_headroom_warning` names the listeners whose max_connections add up past it.
- `near_limit`: a socket accepted into the last `reserve` descriptors is closed
  at once. Linux hands out the lowest free descriptor, so a socket's own number
  says how many are in use: the check costs nothing, and the descriptors left
  serve the admin API, the broker, the database and the log.
- `accept_error`: an accept that fails (EMFILE, ENFILE, ENOBUFS) is counted and
  logged at most once per `LOG_EVERY` seconds, with the count since the last
  line. asyncio's loop reports these through its exception handler; uvloop
  (libuv) drops the connection silently, which the reserve is there to avoid.
"""

from __future__ import annotations

import logging
import resource
from collections import Counter
from typing import Any

from engine.log import Throttle

log = logging.getLogger("ocppgw.fds")

LOG_EVERY = 10.0  # seconds between two log lines about the same kind of trouble
ACCEPT_RESERVE = 64  # descriptors an OCPP listener leaves free (see near_limit)
ADMIN_RESERVE = 16  # the admin API may dig deeper: it is how an operator sees the trouble


class FdStats:
    """Process-wide counters (every listener of every node in the process shares the descriptors)."""

    def __init__(self) -> None:
        self.accept_errors: Counter[str] = Counter()  # by reason: emfile, enfile, ..., fd_reserve
        self._lines = Throttle(LOG_EVERY)  # per reason

    def note(self, reason: str, message: str) -> None:
        """Count one accept error and log it, at most once per LOG_EVERY seconds per reason."""
        self.accept_errors[reason] += 1
        more = self._lines.allow(reason)
        if more is None:
            return
        log.error("%s%s", message, f" ({more} more since the last such line)" if more else "")


stats = FdStats()
_soft_limit: int | None = None


def soft_limit() -> int:
    """The soft open-file limit (read once, and again after `raise_nofile_limit`)."""
    global _soft_limit
    if _soft_limit is None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        _soft_limit = soft if soft != resource.RLIM_INFINITY else 1 << 30
    return _soft_limit


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft open-file limit to the hard one; (before, after)."""
    global _soft_limit
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # RLIM_INFINITY may be refused (macOS): keep what we have
            log.warning("cannot raise the open-file limit from %d to %s: %s", soft, hard, exc)
    _soft_limit = None
    return soft, soft_limit()


def fd_headroom_warning(listeners: dict[str, int], limit: int) -> str | None:
    """The warning to log when the listeners' max_connections (key → value) add up past the limit."""
    total = sum(listeners.values())
    if total <= limit:
        return None
    keys = ", ".join(f"{key}.max_connections = {value}" for key, value in listeners.items())
    return (f"the listeners accept up to {total} connections ({keys}) but the open-file limit is {limit}: "
            f"raise the limit (ulimit -n, LimitNOFILE= in systemd) or lower max_connections")


def transport_fd(transport: Any) -> int | None:
    try:
        sock = transport.get_extra_info("socket")
        return sock.fileno() if sock is not None else None
    except (AttributeError, OSError, ValueError):
        return None


def near_limit(transport: Any, reserve: int) -> bool:
    """True (counted and logged) if the transport's socket took one of the last `reserve` descriptors."""
    fd = transport_fd(transport)
    limit = soft_limit()
    if fd is None or fd < limit - min(reserve, limit // 8):
        return False
    stats.note("fd_reserve", f"connection closed at accept: descriptor {fd} of an open-file limit of {limit}; "
               "the last ones are kept for the admin API, the broker and the log (see docs/security.md)")
    return True


def accept_error(exc: BaseException) -> None:
    """An accept that failed for want of resources (the loop's exception handler calls this)."""
    import errno

    name = errno.errorcode.get(getattr(exc, "errno", None) or 0, "other").lower()
    stats.note(name, f"accepting a connection failed: {exc}; open-file limit {soft_limit()}")


def is_accept_error(context: dict[str, Any]) -> bool:
    """Is this loop exception-handler context asyncio's report of a failed accept?"""
    return "socket.accept()" in str(context.get("message", "")) and isinstance(context.get("exception"), OSError)
