"""The built-in authenticator for charge points (EMQX's `built_in_database` +
`password_based`): salted password hashes in one JSON file under the data dir.

Hashes follow EMQX's built-in database: the salt is a 32-character hex string
used as bytes, digests are stored as hex, `prefix` means hash(salt + password)
and `suffix` hash(password + salt), pbkdf2's key length is the digest size.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import bcrypt

from engine.config.schema import AuthenticationSettings, PasswordHashSettings

MAX_USER_ID = 256
CACHE_SIZE = 10_000
BCRYPT_MAX_BYTES = 72  # bcrypt ignores the rest; bcrypt>=5 refuses longer input
FORMAT_VERSION = 1


class AuthStoreError(Exception):
    """The user file cannot be read or written; the message names it and says why."""


class UserExists(Exception):
    def __init__(self, user_id: str) -> None:
        super().__init__(f"user {user_id!r} already exists")
        self.user_id = user_id


class UserNotFound(Exception):
    def __init__(self, user_id: str) -> None:
        super().__init__(f"user {user_id!r} not found")
        self.user_id = user_id


@dataclass(frozen=True)
class UserInfo:
    """What the admin API and CLI may see of a user: never the hash or salt."""

    user_id: str
    is_superuser: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "is_superuser": self.is_superuser}


@dataclass(frozen=True)
class UserPage:
    items: list[UserInfo]
    total: int  # matching users, all pages
    page: int
    limit: int


# --- hashing -------------------------------------------------------------------


def _is_slow(params: PasswordHashSettings) -> bool:
    return params.name in ("pbkdf2", "bcrypt")


# The fields that shaped each kind of hash: a record stores these, so the file says what it means.
_PARAM_FIELDS = {
    "sha256": ("salt_position",),
    "sha512": ("salt_position",),
    "pbkdf2": ("mac_fun", "iterations"),
    "bcrypt": ("salt_rounds",),
}
_PARAM_VALID = {
    "salt_position": lambda v: v in ("prefix", "suffix"),
    "mac_fun": lambda v: v in ("sha256", "sha512"),
    "iterations": lambda v: type(v) is int and v >= 1,
    "salt_rounds": lambda v: type(v) is int and 4 <= v <= 31,
}


def _params_to_json(params: PasswordHashSettings) -> dict[str, Any]:
    return {"name": params.name, **{k: getattr(params, k) for k in _PARAM_FIELDS[params.name]}}


def _params_from_json(raw: Any) -> PasswordHashSettings:
    if not isinstance(raw, dict) or raw.get("name") not in _PARAM_FIELDS:
        raise ValueError("algorithm: missing or unknown name")
    fields = {k: raw.get(k) for k in _PARAM_FIELDS[raw["name"]]}
    for k, v in fields.items():
        if not _PARAM_VALID[k](v):
            raise ValueError(f"algorithm: bad {k} {v!r}")
    return PasswordHashSettings(name=raw["name"], **fields)


def _bytes(text: str) -> bytes:
    # surrogatepass: a password decoded leniently upstream must not raise here.
    return text.encode("utf-8", "surrogatepass")


def _new_salt(params: PasswordHashSettings) -> str:
    if params.name == "bcrypt":
        return bcrypt.gensalt(params.salt_rounds).decode()
    return secrets.token_hex(16)


def _hash(params: PasswordHashSettings, salt: str, password: str) -> str:
    pw, sb = _bytes(password), salt.encode()
    if params.name == "bcrypt":
        return bcrypt.hashpw(pw, sb).decode()
    if params.name == "pbkdf2":
        return hashlib.pbkdf2_hmac(params.mac_fun, pw, sb, params.iterations).hex()
    data = sb + pw if params.salt_position == "prefix" else pw + sb
    return hashlib.new(params.name, data).hexdigest()


def _check_password(params: PasswordHashSettings, password: str) -> None:
    if not isinstance(password, str) or not password:
        raise ValueError("password must be a non-empty string")
    if params.name == "bcrypt" and len(_bytes(password)) > BCRYPT_MAX_BYTES:
        # Refused rather than silently truncated: two passwords sharing 72 bytes would both log in.
        raise ValueError(f"bcrypt cannot hash a password longer than {BCRYPT_MAX_BYTES} bytes")


@dataclass(frozen=True)
class _Record:
    """A stored user. Replaced, never mutated, so a verification in flight keeps
    a consistent view and the cache can tell whether an entry is still current."""

    params: PasswordHashSettings
    salt: str
    password_hash: str
    is_superuser: bool = False

    @classmethod
    def create(cls, params: PasswordHashSettings, password: str, is_superuser: bool) -> _Record:
        salt = _new_salt(params)
        return cls(params, salt, _hash(params, salt, password), is_superuser)

    def matches(self, password: str) -> bool:
        try:
            computed = _hash(self.params, self.salt, password)
        except ValueError:  # bcrypt: too long, so it cannot be the stored one
            return False
        return hmac.compare_digest(computed.encode(), self.password_hash.encode())

    def to_json(self) -> dict[str, Any]:
        return {
            "is_superuser": self.is_superuser,
            "algorithm": _params_to_json(self.params),
            "salt": self.salt,
            "password_hash": self.password_hash,
        }

    @classmethod
    def from_json(cls, raw: Any) -> _Record:
        if not isinstance(raw, dict):
            raise ValueError("not an object")
        salt, digest, superuser = raw.get("salt"), raw.get("password_hash"), raw.get("is_superuser", False)
        if not isinstance(salt, str) or not isinstance(digest, str) or not digest:
            raise ValueError("salt and password_hash must be strings")
        if not isinstance(superuser, bool):
            raise ValueError("is_superuser must be true or false")
        return cls(_params_from_json(raw.get("algorithm")), salt, digest, superuser)


# --- the store -----------------------------------------------------------------


def _check_user_id(user_id: str) -> None:
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("user_id must be a non-empty string")
    if len(user_id) > MAX_USER_ID:
        raise ValueError(f"user_id longer than {MAX_USER_ID} characters")


class UserStore:
    """Users in one JSON file, rewritten whole on every change.

    The gateway process is the only writer (the CLI goes through the admin
    API), so the file is read once here. Changes take a lock, so the admin API
    may call them from a worker thread; bcrypt/pbkdf2 make them slow.
    """

    def __init__(self, path: Path, hashing: PasswordHashSettings | None = None) -> None:
        self.path = Path(path)
        # How new and changed passwords are hashed; records keep their own.
        self.hashing = hashing or PasswordHashSettings()
        self._lock = threading.Lock()
        # Never mutated, only replaced (see _commit), so readers need no lock.
        self._users: dict[str, _Record] = self._load()

    @classmethod
    def in_data_dir(cls, data_dir: str | Path, hashing: PasswordHashSettings | None = None) -> UserStore:
        return cls(Path(data_dir) / "authn" / "users.json", hashing)

    def _load(self) -> dict[str, _Record]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise AuthStoreError(f"user file {self.path}: cannot read: {why}") from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AuthStoreError(f"user file {self.path}: not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("users"), dict):
            raise AuthStoreError(f"user file {self.path}: expected an object with a 'users' object")
        if doc.get("version") != FORMAT_VERSION:
            raise AuthStoreError(f"user file {self.path}: unsupported version {doc.get('version')!r}")
        users: dict[str, _Record] = {}
        for user_id, raw in doc["users"].items():
            try:
                _check_user_id(user_id)
                users[user_id] = _Record.from_json(raw)
            except ValueError as exc:
                raise AuthStoreError(f"user file {self.path}: user {user_id!r}: {exc}") from None
        return users

    def _save(self, users: dict[str, _Record]) -> None:
        doc = {"version": FORMAT_VERSION, "users": {u: r.to_json() for u, r in sorted(users.items())}}
        data = json.dumps(doc, indent=1).encode()
        tmp = None
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # mkstemp creates the file 0600, so the hashes are never readable by others, not even briefly.
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            tmp = None
            # The rename itself must survive a power cut too.
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise AuthStoreError(f"user file {self.path}: cannot write: {exc.strerror or exc}") from None
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def _commit(self, user_id: str, record: _Record | None) -> None:
        # Memory changes only once the disk has, so a failed write changes nothing.
        users = dict(self._users)
        if record is None:
            del users[user_id]
        else:
            users[user_id] = record
        self._save(users)
        self._users = users

    def add(self, user_id: str, password: str, is_superuser: bool = False) -> UserInfo:
        _check_user_id(user_id)
        params = self.hashing
        _check_password(params, password)
        if user_id in self._users:  # fail before the slow hash
            raise UserExists(user_id)
        record = _Record.create(params, password, bool(is_superuser))
        with self._lock:
            if user_id in self._users:
                raise UserExists(user_id)
            self._commit(user_id, record)
        return UserInfo(user_id, record.is_superuser)

    def update(self, user_id: str, password: str | None = None, is_superuser: bool | None = None) -> UserInfo:
        _check_user_id(user_id)
        params = self.hashing
        if password is not None:
            _check_password(params, password)
        if user_id not in self._users:
            raise UserNotFound(user_id)
        fresh = _Record.create(params, password, False) if password is not None else None
        with self._lock:
            current = self._users.get(user_id)
            if current is None:
                raise UserNotFound(user_id)
            superuser = current.is_superuser if is_superuser is None else bool(is_superuser)
            record = replace(fresh or current, is_superuser=superuser)
            if record != current:
                self._commit(user_id, record)
        return UserInfo(user_id, record.is_superuser)

    def delete(self, user_id: str) -> None:
        _check_user_id(user_id)
        with self._lock:
            if user_id not in self._users:
                raise UserNotFound(user_id)
            self._commit(user_id, None)

    def get(self, user_id: str) -> UserInfo:
        record = self._users.get(user_id)
        if record is None:
            raise UserNotFound(user_id)
        return UserInfo(user_id, record.is_superuser)

    def list(self, page: int = 1, limit: int = 100, like_user_id: str | None = None) -> UserPage:
        if page < 1 or limit < 1:
            raise ValueError("page and limit must be at least 1")
        users = self._users
        matching = sorted((u, r.is_superuser) for u, r in users.items() if not like_user_id or like_user_id in u)
        start = (page - 1) * limit
        items = [UserInfo(u, su) for u, su in matching[start : start + limit]]
        return UserPage(items, len(matching), page, limit)

    def __len__(self) -> int:
        return len(self._users)

    def _record(self, user_id: str) -> _Record | None:
        return self._users.get(user_id)


# --- the authenticator -----------------------------------------------------------


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
        return self.store._record(user_id) or self._dummy

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
