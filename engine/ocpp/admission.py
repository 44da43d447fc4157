"""Who may knock, and how often: the checks a handshake passes before the listener-wide limits.

The listener-wide `max_conn_rate` bucket is shared by every charge point, so one client that
connects without pause would drain it and lock everyone out. These checks run first, each keyed
by what the client is, and refuse it (HTTP 429 with Retry-After) before it touches the shared
bucket:

- `banned`: its charge point id logged in more than `flapping_detect.max_count` times within
  `window_time` (EMQX's flapping detection), for `ban_time`;
- `too_many_failed_logins`: its source address failed more than
  `authentication.max_failed_logins_per_source` logins within `failed_login_window_time`, for
  `failed_login_ban_time` (listeners that ask for a login only);
- `source_rate_exceeded` / `clientid_rate_exceeded`: more than the listener's
  `max_conn_rate_per_source` / `max_conn_rate_per_clientid` new connections per second.

A source address is the peer's IP address, or its /64 for IPv6 (one host usually has a whole
/64). The listener's `per_source_exempt` networks (default: loopback, where a local reverse proxy
or the simulator connects from) have no per-source limits: behind a proxy every charge point
would share one address, and one client's failed logins would ban them all. Every table is bounded (`MAX_KEYS` entries, least recently used forgotten first): a client
spraying addresses or ids cannot grow memory, and what is forgotten is forgotten leniently (a
fresh bucket, no ban), never against a client.

The state is per gateway context (all listeners of a node share the bans and the failed-login
counts): `GatewayContext.guards`.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import OrderedDict
from typing import Any, NamedTuple

from engine.config.schema import AuthenticationSettings, FlappingDetectSettings, ListenerSettings
from engine.log import Throttle

log = logging.getLogger("ocppgw.admission")

MAX_KEYS = 65_536  # per table
LOG_INTERVAL = 10.0  # seconds between two warnings about new bans (a spray must not flood the log)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def source_key(host: str, exempt: tuple[Network, ...] = ()) -> str | None:
    """The address the per-source limits count: the IP, or its /64 for IPv6; None for a peer
    in one of the `exempt` networks."""
    try:
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if any(addr in network for network in exempt):
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def networks(texts: list[str]) -> tuple[Network, ...]:
    """The parsed networks of a list the config check has already validated (bad ones skipped)."""
    found = []
    for text in texts:
        try:
            found.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            pass
    return tuple(found)


class KeyedBuckets:
    """A token bucket per key: `rate` per second, bursts up to `rate`."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # key -> [tokens, stamp]

    def take(self, key: str, rate: float, now: float) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = [rate - 1, now]
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return True
        self._buckets.move_to_end(key)
        tokens = min(rate, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if tokens >= 1:
            bucket[0] = tokens - 1
            return True
        bucket[0] = tokens
        return False

    def __len__(self) -> int:
        return len(self._buckets)


class WindowBan:
    """Events counted per key in a window that opens with the key's first event; more than
    `max_count` in one window bans the key for `ban_time`."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self.max_keys = max_keys
        self._counts: OrderedDict[str, list[float]] = OrderedDict()  # key -> [window start, count]
        self._bans: OrderedDict[str, float] = OrderedDict()  # key -> until (monotonic)
        self.bans_total = 0

    def banned(self, key: str, now: float) -> float:
        """Seconds the key stays banned (0: not banned)."""
        until = self._bans.get(key)
        if until is None:
            return 0.0
        if until <= now:
            del self._bans[key]
            return 0.0
        return until - now

    def record(self, key: str, now: float, max_count: int, window: float, ban_time: float) -> bool:
        """Count one event; True if it bans the key."""
        entry = self._counts.get(key)
        if entry is None or now - entry[0] >= window:
            entry = self._counts[key] = [now, 0]
        self._counts.move_to_end(key)
        entry[1] += 1
        if len(self._counts) > self.max_keys:
            self._counts.popitem(last=False)
        if entry[1] <= max_count:
            return False
        self._counts.pop(key, None)
        self._bans.pop(key, None)
        self._bans[key] = now + ban_time
        while self._bans and (len(self._bans) > self.max_keys or next(iter(self._bans.values())) <= now):
            self._bans.popitem(last=False)  # the oldest first: expired, or the table is full
        self.bans_total += 1
        return True

    def active(self, now: float) -> int:
        return sum(1 for until in self._bans.values() if until > now)

    def __len__(self) -> int:
        return len(self._counts) + len(self._bans)


class Denial(NamedTuple):
    status: int
    message: str
    reason: str  # the refusal's reason code: $events/client_connack and the refusals metric
    retry_after: float

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", b"%d" % max(1, round(self.retry_after)))]


class Guards:
    """The per-client admission state of one gateway context."""

    def __init__(self) -> None:
        self.flapping_settings = FlappingDetectSettings()
        self.flapping = WindowBan()  # by charge point id
        self.login_failures = WindowBan()  # by source address
        self.by_source: dict[str, KeyedBuckets] = {}  # per listener
        self.by_cid: dict[str, KeyedBuckets] = {}
        self._exempt: dict[tuple[str, ...], tuple[Network, ...]] = {}
        self._ban_lines = Throttle(LOG_INTERVAL)

    def source(self, client: Any, settings: ListenerSettings) -> str | None:
        """The per-source key of a peer on this listener; None: no per-source limits for it."""
        host = client[0] if client else ""
        if not host:
            return None
        texts = tuple(settings.per_source_exempt)
        exempt = self._exempt.get(texts)
        if exempt is None:
            exempt = self._exempt[texts] = networks(list(texts))
        return source_key(host, exempt)

    def apply(self, flapping: FlappingDetectSettings) -> None:
        self.flapping_settings = flapping

    def admit(self, listener: str, settings: ListenerSettings, auth: AuthenticationSettings | None,
              cid: str, client: Any) -> Denial | None:
        """The refusal for a new handshake of `cid` from `client` (host, port), or None. `auth`:
        the authentication settings when this listener asks for a login."""
        now = time.monotonic()
        if self.flapping_settings.enable:
            left = self.flapping.banned(cid, now)
            if left:
                return self._flapping_denial(left)
        source = self.source(client, settings)
        if source and auth is not None and auth.max_failed_logins_per_source:
            left = self.login_failures.banned(source, now)
            if left:
                return Denial(429, f"too many failed logins from this address; retry in {left:.0f}s",
                              "too_many_failed_logins", left)
        rate = settings.max_conn_rate_per_source
        if source and rate and not self.by_source.setdefault(listener, KeyedBuckets()).take(source, rate, now):
            return Denial(429, "too many new connections per second from this address (max_conn_rate_per_source)",
                          "source_rate_exceeded", 1.0)
        rate = settings.max_conn_rate_per_clientid
        if rate and not self.by_cid.setdefault(listener, KeyedBuckets()).take(cid, rate, now):
            return Denial(429, "too many new connections per second for this charge point id "
                          "(max_conn_rate_per_clientid)", "clientid_rate_exceeded", 1.0)
        return None

    def login_failed(self, client: Any, settings: ListenerSettings, auth: AuthenticationSettings) -> None:
        source = self.source(client, settings)
        if source is None or not auth.max_failed_logins_per_source:
            return
        if self.login_failures.record(source, time.monotonic(), auth.max_failed_logins_per_source,
                                      auth.failed_login_window_time, auth.failed_login_ban_time):
            self._warn("charge point logins from %s refused for %gs: more than %d failed within %gs",
                       source, auth.failed_login_ban_time, auth.max_failed_logins_per_source,
                       auth.failed_login_window_time)

    def logged_in(self, cid: str) -> Denial | None:
        """Count a login of `cid` for flapping detection: the refusal if this one is one too many
        (it starts a ban of `flapping_settings.ban_time`)."""
        s = self.flapping_settings
        if not s.enable or not self.flapping.record(cid, time.monotonic(), s.max_count, s.window_time, s.ban_time):
            return None
        self._warn("charge point %s banned for %gs: it logged in more than %d times within %gs (flapping_detect)",
                   cid, s.ban_time, s.max_count, s.window_time)
        return self._flapping_denial(s.ban_time)

    def _flapping_denial(self, left: float) -> Denial:
        s = self.flapping_settings
        return Denial(429, f"the charge point id is banned for {left:.0f}s more: it logged in more than "
                      f"{s.max_count} times within {s.window_time:g}s (flapping_detect)", "banned", left)

    def _warn(self, message: str, *args: Any) -> None:
        held = self._ban_lines.allow()
        if held is None:
            return
        if held:
            message += " (and %d more bans not logged)"
            args += (held,)
        log.warning(message, *args)
