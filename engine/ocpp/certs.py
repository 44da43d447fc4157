"""What the gateway knows of a charge point's TLS client certificate, and when to warn of its expiry.

A wss connection's peer certificate (Python's `getpeercert()` form: only a certificate the
handshake verified against `cacertfile` is there) becomes a `ClientCertificate`: subject,
issuer (RFC 4514 strings), serial (hex) and `not_after`. The admin API shows it with the client,
the metrics read the soonest expiry per listener (`CertificateWatch.soonest`), and
`$events/certificate_expiring` is published when `not_after` is within the listener's
`ssl_options.cert_expiry_warning`: at connect, then once a day while connected, and never twice
within a day for one charge point, whatever its reconnects (`ExpiryWarnings`).
"""

from __future__ import annotations

import asyncio
import ssl
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

DAY = 86_400.0
_SLACK = 60.0  # a daily re-check that wakes a little early still counts as a day later

# the attribute names getpeercert() uses, as RFC 4514 / OpenSSL abbreviate them
_SHORT = {
    "commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
    "stateOrProvinceName": "ST", "localityName": "L", "streetAddress": "STREET", "domainComponent": "DC",
    "userId": "UID",
}
_SPECIAL = ',+"\\<>;='


def _escape(value: str) -> str:
    text = "".join("\\" + ch if ch in _SPECIAL else ch for ch in value)
    if text.startswith(("#", " ")):
        text = "\\" + text
    if text.endswith(" "):
        text = text[:-1] + "\\ "
    return text


def distinguished_name(rdns: Any) -> str:
    """An X.509 name in getpeercert()'s form as an RFC 4514 string (most specific first: "CN=cp1,O=Acme")."""
    parts = []
    for rdn in reversed(tuple(rdns or ())):
        parts.append("+".join(f"{_SHORT.get(str(key), str(key))}={_escape(str(value))}" for key, value in rdn))
    return ",".join(parts)


def iso8601(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat()


@dataclass(frozen=True)
class ClientCertificate:
    subject: str
    issuer: str
    serial: str  # hexadecimal, as OpenSSL prints it
    not_after: float  # unix seconds
    common_name: str | None

    @classmethod
    def from_peercert(cls, peercert: dict[str, Any] | None) -> ClientCertificate | None:
        """The verified client certificate of a connection, or None (none presented, or not asked for)."""
        if not peercert or "notAfter" not in peercert:
            return None
        try:
            not_after = float(ssl.cert_time_to_seconds(str(peercert["notAfter"])))
        except ValueError:
            return None
        common_name = next((str(v) for rdn in peercert.get("subject", ()) for k, v in rdn if k == "commonName"), None)
        return cls(distinguished_name(peercert.get("subject")), distinguished_name(peercert.get("issuer")),
                   str(peercert.get("serialNumber", "")), not_after, common_name)

    def as_dict(self) -> dict[str, Any]:
        """The clients API's `certificate` object."""
        return {"subject": self.subject, "issuer": self.issuer, "serial": self.serial,
                "not_after": iso8601(self.not_after)}

    def days_left(self, now: float) -> int:
        """Whole days until `not_after` (0 on its last day, negative once expired)."""
        return int((self.not_after - now) // DAY)


class ExpiryWarnings:
    """When a charge point's certificate warning is due: within its window, at most once a day per
    charge point. Remembers the charge points warned within the last day only."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._last: dict[str, float] = {}
        self._prune_at = 1024

    def due(self, cid: str, cert: ClientCertificate, window: float) -> bool:
        now = self.clock()
        if cert.not_after - now > window:
            return False
        last = self._last.get(cid)
        if last is not None and now - last < DAY - _SLACK:
            return False
        self._last[cid] = now
        if len(self._last) >= self._prune_at:
            self._last = {c: t for c, t in self._last.items() if now - t < DAY}
            self._prune_at = max(1024, 2 * len(self._last))
        return True

    def __len__(self) -> int:
        return len(self._last)


_SHARED: weakref.WeakKeyDictionary[object, ExpiryWarnings] = weakref.WeakKeyDictionary()


def shared_warnings(owner: object) -> ExpiryWarnings:
    """The `ExpiryWarnings` of `owner` (a gateway context: every listener of one node shares them, so
    a charge point moving between listeners is not warned twice a day either)."""
    warnings = _SHARED.get(owner)
    if warnings is None:
        warnings = _SHARED[owner] = ExpiryWarnings()
    return warnings


class CertificateWatch:
    """A listener's connections with a client certificate: what the API and the metrics read, and
    the daily expiry check of each (a timer, cancelled when the connection ends)."""

    def __init__(self, warnings: ExpiryWarnings | None = None) -> None:
        self.warnings = warnings if warnings is not None else ExpiryWarnings()
        self.certificates: dict[object, ClientCertificate] = {}  # by session
        self._timers: dict[object, asyncio.TimerHandle] = {}

    def connected(self, session: object, cid: str, cert: ClientCertificate, window: Callable[[], float],
                  warn: Callable[[ClientCertificate], None]) -> None:
        """Keep `cert` for `session`; `warn` now and every day after while the warning is due."""
        self.certificates[session] = cert
        loop = asyncio.get_running_loop()

        def check() -> None:
            if session not in self.certificates:
                return
            if self.warnings.due(cid, cert, window()):
                warn(cert)
            self._timers[session] = loop.call_later(DAY, check)

        check()

    def disconnected(self, session: object) -> None:
        self.certificates.pop(session, None)
        timer = self._timers.pop(session, None)
        if timer is not None:
            timer.cancel()

    def of(self, session: object) -> ClientCertificate | None:
        return self.certificates.get(session)

    def soonest(self) -> float | None:
        """The earliest `not_after` of the connected certificates (unix seconds), or None."""
        return min((c.not_after for c in self.certificates.values()), default=None)
