"""The handshake's policy: who may connect, as which charge point, speaking what.

Plain functions and values, no sockets: the path names the charge point (`check_path`), the
offered subprotocols pick the version (`pick_subprotocol`), a TLS client certificate and an
HTTP Basic login prove who it is (`check_certificate`, `check_login`), the connection's OCPP
security profile must be at least the one its user record asks for (`check_security_profile`), and the listener's
capacity lets it in (`admit`, which hands back the `Admission` the handshake holds until its
session exists). A refusal is a `Refusal`: the HTTP answer and the reason code that
`$events/client_connack` reports. The per-client limits (bans, per-source and per-cid rates)
are `engine.ocpp.admission`'s.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any, Protocol

from engine.config.schema import AuthenticationSettings, ListenerSettings, WebsocketSettings, WssListenerSettings

# highest first: the gateway picks the highest version both sides speak
PROTOCOL_PREFERENCE = ("ocpp2.1", "ocpp2.0.1", "ocpp1.6")
MAX_CID_LENGTH = 256
BASIC_CHALLENGE = [(b"www-authenticate", b'Basic realm="ocpp-gateway"')]


class Refusal(Exception):
    def __init__(self, status: int, message: str, reason_code: str | None, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason_code = reason_code  # for $events/client_connack; None: not an OCPP client at all
        self.headers = headers or []

    @property
    def body(self) -> bytes:
        return self.message.encode() + b"\n"

    def http_response(self) -> bytes:
        """The whole HTTP answer, for a refusal made before uvicorn's WebSocket protocol exists."""
        body = self.body
        head = [f"HTTP/1.1 {self.status} {HTTPStatus(self.status).phrase}".encode(),
                b"content-type: text/plain; charset=utf-8", b"content-length: %d" % len(body), b"connection: close"]
        head += [name + b": " + value for name, value in self.headers]
        return b"\r\n".join(head) + b"\r\n\r\n" + body


class Authenticator(Protocol):
    async def authenticate(self, username: str | None, password: str | None) -> bool: ...

    def security_profile(self, *user_ids: str) -> int | None: ...


class RateLimit:
    """Token bucket: `rate` new connections per second, bursts up to `rate`. A token is reserved when
    a handshake is let through and taken when the handshake runs (or given back if it never does),
    so that the bucket counts connections at the moment they are made, whatever the loop's backlog
    between the two; reserved tokens are not offered to anyone else."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.reserved = 0  # never more than tokens
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def reserve(self) -> bool:
        self._refill()
        if self.tokens - self.reserved >= 1:
            self.reserved += 1
            return True
        return False

    def take_reserved(self) -> None:
        self._refill()
        self.tokens -= 1
        self.reserved -= 1

    def release(self) -> None:
        self.reserved -= 1


class AdmittingListener(Protocol):
    """What admission reads and counts of a listener (`OcppApp`)."""

    settings: ListenerSettings
    rate: RateLimit
    connections: int  # sessions open
    admitting: int  # handshakes let through whose session does not exist yet


class Admission:
    """One handshake let through: a place under max_connections and a token of max_conn_rate, held
    from `admit` until its session exists or the handshake ends (`end`, idempotent)."""

    __slots__ = ("app", "bucket", "token", "held")

    def __init__(self, app: AdmittingListener) -> None:
        self.app = app
        self.bucket = app.rate  # a reload may replace the app's bucket meanwhile
        self.token = True
        self.held = True
        app.admitting += 1

    def take_token(self) -> None:
        if self.token:
            self.token = False
            self.bucket.take_reserved()

    def end(self) -> None:
        if self.held:
            self.held = False
            self.app.admitting -= 1
        if self.token:
            self.token = False
            self.bucket.release()


def admit(listener: AdmittingListener) -> Admission:
    """A place under the listener's max_connections and a token of its max_conn_rate, or a `Refusal` (503)."""
    if listener.connections + listener.admitting >= listener.settings.max_connections:
        raise Refusal(503, "the listener is at max_connections", "server_unavailable")
    if not listener.rate.reserve():
        raise Refusal(503, "too many new connections per second (max_conn_rate)", "server_unavailable")
    return Admission(listener)


def endpoint_prefix(settings: ListenerSettings) -> str:
    return settings.websocket.path.rstrip("/") + "/"


def cid_of(prefix: str, path: str) -> str:
    """The charge point id a path names ("" for a path outside the endpoint)."""
    return path[len(prefix):] if path.startswith(prefix) else ""


def check_path(prefix: str, path: str) -> str:
    """The charge point id of a request's path, or a `Refusal` (404, 400)."""
    if not path.startswith(prefix):
        raise Refusal(404, f"no OCPP endpoint at {path!r}; connect to {prefix}<charge point id>", None)
    cid = path[len(prefix):]
    if not cid:
        raise Refusal(400, "the charge point id (the last part of the path) is empty", "client_identifier_not_valid")
    if any(ch in cid for ch in "/+#") or len(cid) > MAX_CID_LENGTH or not cid.isprintable():
        raise Refusal(400, f"the charge point id must be printable, at most {MAX_CID_LENGTH} characters, "
                      "without '/', '+' or '#'", "client_identifier_not_valid")
    if "\ufffd" in cid:  # what a lenient percent-decoding makes of bytes that are not UTF-8
        raise Refusal(400, "the charge point id is not valid UTF-8 once percent-decoded",
                      "client_identifier_not_valid")
    return cid


def pick_subprotocol(websocket: WebsocketSettings, offered: list[str]) -> tuple[str, bool]:
    """(the OCPP version, echo it in the answer?) or a `Refusal` (400)."""
    supported = websocket.supported_subprotocols
    if not offered:
        if websocket.fail_if_no_subprotocol:
            raise Refusal(400, "no Sec-WebSocket-Protocol offered; supported: " + ", ".join(supported),
                          "unsupported_protocol_version")
        return "ocpp1.6", False  # echoing one the client did not offer breaks strict clients
    for proto in PROTOCOL_PREFERENCE:
        if proto in supported and proto in offered:
            return proto, True
    raise Refusal(400, f"none of the offered subprotocols ({', '.join(offered)[:200]}) is supported; "
                  "supported: " + ", ".join(supported), "unsupported_protocol_version")


def check_origin(websocket: WebsocketSettings, headers: Iterable[tuple[bytes, bytes]]) -> None:
    """A `Refusal` (403, origin_not_allowed) if the listener checks the Origin header (EMQX's
    check_origin_enable) and it is not one of check_origins, or absent and allow_origin_absence is false."""
    if not websocket.check_origin_enable:
        return
    origin = next((value for name, value in headers if name == b"origin"), None)
    if origin is None:
        if websocket.allow_origin_absence:
            return
        raise Refusal(403, "an Origin header is required", "origin_not_allowed")
    text = origin.decode("latin-1").strip().rstrip("/").lower()
    if text not in (allowed.strip().rstrip("/").lower() for allowed in websocket.check_origins):
        raise Refusal(403, f"origin {text[:100]!r} is not allowed (check_origins)", "origin_not_allowed")


def check_certificate(settings: ListenerSettings, peercert: dict[str, Any] | None, cid: str) -> None:
    """A `Refusal` (403) if the listener wants the client certificate's CN to be the charge point id and it is not."""
    if isinstance(settings, WssListenerSettings) and settings.ssl_options.cn_must_match_cid:
        cn = common_name(peercert)
        if cn is None:
            raise Refusal(403, "a client certificate is required", "not_authorized")
        if cn != cid:
            raise Refusal(403, "the client certificate's CN does not match the charge point id", "not_authorized")


def listener_profile(settings: ListenerSettings) -> int:
    """The OCPP security profile a listener offers: ws 1 (Basic auth, no TLS), wss 2 (TLS + Basic auth),
    wss that requires a verified client certificate (verify_peer + fail_if_no_peer_cert) 3."""
    if not isinstance(settings, WssListenerSettings):
        return 1
    s = settings.ssl_options
    return 3 if s.verify == "verify_peer" and s.fail_if_no_peer_cert else 2


def connection_profile(settings: ListenerSettings, has_certificate: bool) -> int:
    """The security profile of one connection: its listener's, and 3 on any wss listener for a
    connection that presented a client certificate the TLS handshake verified."""
    if isinstance(settings, WssListenerSettings) and has_certificate:
        return 3
    return listener_profile(settings)


def check_security_profile(cid: str, required: int | None, actual: int) -> None:
    """A `Refusal` (401, security_profile_too_low) if the charge point's user record asks for a higher
    security profile than this connection has: OCPP 2.0.1 forbids falling back to a lower one."""
    if required is not None and actual < required:
        raise Refusal(401, f"charge point {cid[:100]!r} must connect with security profile {required}; "
                      f"this connection is security profile {actual}", "security_profile_too_low")


def authn_required(auth: AuthenticationSettings, settings: ListenerSettings, authenticator: Authenticator | None) -> bool:
    return auth.enable and settings.enable_authn and authenticator is not None


async def check_login(cid: str, username: str | None, password: str | None, auth: AuthenticationSettings,
                      authenticator: Authenticator, login_failed: Callable[[], None]) -> None:
    """A `Refusal` (401, with the Basic challenge) unless the HTTP Basic login is good for `cid`;
    `login_failed` is told of a wrong one (not of a missing one)."""
    if username is None:
        raise Refusal(401, "HTTP Basic credentials are required", "not_authorized", BASIC_CHALLENGE)
    # user_id_type = clientid: the charge point id is the login, whatever the Basic username says
    login = cid if auth.user_id_type == "clientid" else username
    if login != cid and not auth.allow_username_mismatch:
        login_failed()
        raise Refusal(401, "the username must be the charge point id", "bad_username_or_password", BASIC_CHALLENGE)
    if not await authenticator.authenticate(login, password):
        login_failed()
        raise Refusal(401, "bad username or password", "bad_username_or_password", BASIC_CHALLENGE)


def basic_credentials(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """(username, password) of an HTTP Basic `authorization` header, or (None, None)."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() != b"basic":
                return None, None
            try:
                decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None, None
            user, sep, password = decoded.partition(":")
            return (user, password) if sep else (None, None)
    return None, None


def common_name(peercert: dict[str, Any] | None) -> str | None:
    if not peercert:
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
