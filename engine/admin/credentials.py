"""The dashboard user and the API keys: constant-time checks, pbkdf2 off the event loop, verified keys cached.

An API key's secret is stored as a pbkdf2 hash (tens of milliseconds to
check, on purpose). That work runs on one thread of its own, never on the
event loop, so a stream of wrong guesses queues behind itself and costs the
guesser time, not the charge points; a key once verified is remembered (as an
HMAC of its secret under a per-process pepper), so a script using a good key
pays the hash once. An empty password never logs anyone in.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import hmac
import logging
import secrets

log = logging.getLogger("ocppgw.admin")

PBKDF2_ITERATIONS = 100_000
MAX_PENDING_HASHES = 16  # secrets waiting for the hashing thread; beyond, a new one is refused (429)

_hasher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="admin-hash")
_pending = 0


class HashingBusy(Exception):
    """Too many secrets are waiting to be hashed: refuse this one without queueing it."""


def hash_secret(secret: str, iterations: int = PBKDF2_ITERATIONS) -> str:
    salt = secrets.token_hex(16)
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt.encode(), iterations).hex()
    return f"pbkdf2_sha256${iterations}${salt}${digest}"


def secret_matches(secret: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, digest = stored.split("$")
        rounds = int(iterations)
    except ValueError:
        return False
    if scheme != "pbkdf2_sha256" or not 1 <= rounds <= 10_000_000:
        return False
    candidate = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt.encode(), rounds).hex()
    return hmac.compare_digest(candidate, digest)


class Credentials:
    def __init__(self, username: str, password: str, api_keys: dict[str, str]) -> None:
        self.username = username
        self.password = password
        self.api_keys = dict(api_keys)
        self._verified: dict[str, str] = {}  # key → HMAC of the secret last verified for it
        self._pepper = secrets.token_bytes(16)
        if not password:
            log.warning("dashboard.default_password is empty: the dashboard user cannot log in (API keys only)")

    def _user_matches(self, user: str, password: str) -> bool:
        user_ok = hmac.compare_digest(user.encode(), self.username.encode())
        password_ok = hmac.compare_digest(password.encode(), self.password.encode())
        return bool(self.password) and user_ok and password_ok

    def _tag(self, password: str) -> str:
        return hmac.new(self._pepper, password.encode(), "sha256").hexdigest()

    def _cached(self, user: str, password: str) -> bool:
        known = self._verified.get(user)
        return known is not None and hmac.compare_digest(known, self._tag(password))

    def check(self, user: str, password: str) -> bool:
        """On the calling thread (tools and tests); the admin app uses `verify`."""
        if not password:
            return False
        if self._user_matches(user, password) or self._cached(user, password):
            return True
        stored = self.api_keys.get(user)
        if stored is None or not secret_matches(password, stored):
            return False
        self._verified[user] = self._tag(password)
        return True

    async def verify(self, user: str, password: str) -> bool:
        """`check`, with the pbkdf2 of an API key on the hashing thread; raises HashingBusy when
        MAX_PENDING_HASHES secrets already wait for it."""
        global _pending
        if not password:
            return False
        if self._user_matches(user, password) or self._cached(user, password):
            return True
        stored = self.api_keys.get(user)
        if stored is None:
            return False
        if _pending >= MAX_PENDING_HASHES:
            raise HashingBusy()
        _pending += 1
        try:
            ok = await asyncio.get_running_loop().run_in_executor(_hasher, secret_matches, password, stored)
        finally:
            _pending -= 1
        if ok:
            self._verified[user] = self._tag(password)
        return ok
