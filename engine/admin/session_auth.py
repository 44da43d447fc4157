"""Dashboard sessions: `POST /api/v5/login` (EMQX's path) hands out a token, also set as a cookie.

The token is random (never derived from the credentials) and lives in memory only: a restart logs
everyone out. It is accepted as `Authorization: Bearer <token>` (EMQX's way, for scripts) or as the
`ocppgw_session` cookie (HttpOnly, SameSite=Strict; the page never sees it). A session ends after
`dashboard.token_expired_time` without a request from it, on logout, or when the credentials it
was opened with change (a reload that changes the password or removes the API key ends it).

A request authenticated by the cookie that changes anything (any method but GET/HEAD/OPTIONS) must
also carry `x-requested-with` (which a page of another origin cannot set without a CORS preflight,
which is never answered) and, when the browser sends one, an `Origin` whose host and port are
the request's `Host`; otherwise it is refused 403 before it reaches an endpoint.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request

from engine.admin.credentials import Credentials

COOKIE = "ocppgw_session"
CSRF_HEADER = "x-requested-with"
MAX_SESSIONS = 10_000  # the oldest session goes first beyond this
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def fingerprint(credentials: Credentials, user: str) -> str | None:
    """What a session remembers of the credentials it was opened with (None: the user is gone)."""
    if user == credentials.username and credentials.password:
        return hashlib.sha256(f"user\0{user}\0{credentials.password}".encode()).hexdigest()
    stored = credentials.api_keys.get(user)
    return None if stored is None else hashlib.sha256(f"key\0{user}\0{stored}".encode()).hexdigest()


@dataclass
class _Session:
    user: str
    fingerprint: str
    last_seen: float


class SessionStore:
    def __init__(self, clock: Callable[[], float] = time.monotonic, max_sessions: int = MAX_SESSIONS) -> None:
        self.clock = clock
        self.max_sessions = max_sessions
        self._sessions: dict[str, _Session] = {}  # token → session, least recently used first

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, user: str, credentials: Credentials) -> str:
        mark = fingerprint(credentials, user)
        assert mark is not None  # just verified
        token = secrets.token_urlsafe(32)
        self._sessions[token] = _Session(user, mark, self.clock())
        while len(self._sessions) > self.max_sessions:
            del self._sessions[next(iter(self._sessions))]
        return token

    def user(self, token: str, credentials: Credentials, idle: float) -> str | None:
        """The session's user, its expiry pushed on; None when the token is unknown, expired, or
        its credentials changed (the session is then forgotten)."""
        session = self._sessions.pop(token, None)
        if session is None:
            return None
        now = self.clock()
        mark = fingerprint(credentials, session.user)
        if now - session.last_seen > idle or mark is None or not hmac.compare_digest(mark, session.fingerprint):
            return None
        session.last_seen = now
        self._sessions[token] = session  # re-inserted: most recently used last
        return session.user

    def close(self, token: str) -> bool:
        return self._sessions.pop(token, None) is not None


def session_token(request: Request) -> tuple[str, bool] | None:
    """(token, from the cookie?) of the request, Bearer first."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip(), False
    cookie = request.cookies.get(COOKIE)
    return (cookie, True) if cookie else None


def csrf_refusal(request: Request) -> str | None:
    """Why a cookie-authenticated request may not change anything (None: it may)."""
    if request.method in SAFE_METHODS:
        return None
    if not request.headers.get(CSRF_HEADER):
        return f"a request authenticated by the session cookie must carry the {CSRF_HEADER} header"
    origin = request.headers.get("origin")
    if origin is not None:
        # host and port only: behind a proxy that ends TLS the scheme differs, the host does not
        if urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower():
            return f"the request comes from another origin ({origin[:100]})"
    return None


def cookie_header(token: str, secure: bool) -> str:
    """A browser-session cookie: the server ends the session itself (token_expired_time)."""
    flags = "; Secure" if secure else ""
    return f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{flags}"


def clear_cookie_header(secure: bool) -> str:
    flags = "; Secure" if secure else ""
    return f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{flags}"
