"""The Authenticator: checks a charge point's login against the user store,
with a cache of verdicts and its own threads for the slow hashes."""

from __future__ import annotations

import asyncio
import hmac
import os
import secrets
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from engine.auth.hashing import _bytes, _is_slow, _new_salt
from engine.auth.records import _Record
from engine.auth.store import UserStore
from engine.config.schema import AuthenticationSettings

CACHE_SIZE = 10_000


class _Cache:
    """Successful verifications, LRU, bounded.

    After an outage the whole fleet reconnects at once; without this every
    charge point would cost a pbkdf2/bcrypt run (tens of ms of CPU each). The
    key holds an HMAC of the password under a per-process random key, never the
    password, and is useless outside this process. Each entry remembers the
    stored hash it was checked against (fresh salt on every password change),
    so once a user's password changes or the user is deleted the entry is a
    miss: the old password stops working at once.
    """

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[tuple[str, bytes], str] = OrderedDict()

    def key(self, user_id: str, password: str) -> tuple[str, bytes]:
        return user_id, hmac.digest(self._key, _bytes(password), "sha256")

    def hit(self, key: tuple[str, bytes], current: _Record) -> bool:
        seen = self._entries.get(key)
        if seen is None:
            return False
        if seen != current.password_hash:
            del self._entries[key]
            return False
        self._entries.move_to_end(key)
        return True

    def put(self, key: tuple[str, bytes], record: _Record) -> None:
        self._entries[key] = record.password_hash
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class Authenticator:
    """Checks a charge point's HTTP Basic login against the user store.

    Whether to ask it at all (authentication.enable, the listener's
    enable_authn) and whether the username must equal the cid is the
    listener's decision, not this class's.
    """

    def __init__(self, settings: AuthenticationSettings, store: UserStore, cache_size: int = CACHE_SIZE) -> None:
        self.store = store
        self.cache = _Cache(cache_size)
        # Failed verifications, the same way: a charge point retrying a wrong password (or someone
        # replaying one) is refused again without another hash. Brute force (a new password each
        # time) is what the per-source failed-login limit (engine/ocpp/admission.py) is for.
        self.failures = _Cache(cache_size)
        # Our own threads, not the default executor: a connect storm queueing
        # thousands of hashes there would also delay getaddrinfo and other
        # to_thread users. hashlib and bcrypt release the GIL while hashing.
        self._executor: ThreadPoolExecutor | None = None
        self.apply(settings)

    def apply(self, settings: AuthenticationSettings) -> None:
        """Take new settings (also on reload); they decide how passwords set from
        now on are hashed, so the store is told too."""
        self.settings = settings
        params = settings.password_hash_algorithm
        self.store.hashing = params
        # Checked for unknown users so their answer takes as long as a wrong password's.
        self._dummy = _Record(params, _new_salt(params), "-")

    def _lookup(self, user_id: str) -> _Record:
        record = self.store._record(user_id)
        # a user without a password (security profile 3) logs in by certificate only; checking a
        # password against the dummy keeps its answer as slow as anybody's
        return record if record is not None and record.has_password else self._dummy

    def security_profile(self, *user_ids: str) -> int | None:
        """The highest security profile the records of `user_ids` require (None: none does)."""
        found = [r.security_profile for r in map(self.store._record, user_ids) if r is not None]
        return max((p for p in found if p is not None), default=None)

    def verify(self, user_id: str, password: str) -> bool:
        """Synchronous, uncached check, for tests and tools."""
        if not user_id or not password:
            return False
        record = self._lookup(user_id)
        return record.matches(password) and record is not self._dummy

    async def authenticate(self, username: str | None, password: str | None) -> bool:
        if not username or not password:
            return False
        record = self._lookup(username)
        known = record is not self._dummy
        key = self.cache.key(username, password)
        if known and self.cache.hit(key, record):
            return True
        if self.failures.hit(key, record):
            return False
        if _is_slow(record.params):
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="authn")
            loop = asyncio.get_running_loop()
            ok = await loop.run_in_executor(self._executor, record.matches, password)
        else:
            ok = record.matches(password)
        if not (ok and known):
            self.failures.put(key, record)
            return False
        # The password may have changed or the user gone while we hashed: the change wins.
        current = self.store._record(username)
        if current is None or current.password_hash != record.password_hash:
            return False
        self.cache.put(key, current)
        return True

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
