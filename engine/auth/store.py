"""The user store: charge point users in one JSON file under the data dir
(EMQX's `built_in_database`), read once, rewritten whole on every change."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

from engine.auth.hashing import _check_password
from engine.auth.records import UserInfo, UserPage, _Record, check_security_profile
from engine.config.schema import PasswordHashSettings

MAX_USER_ID = 256
FORMAT_VERSION = 1


class _Keep:
    """`UserStore.update`'s "leave it as it is" for a field where None means something."""


KEEP = _Keep()


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


def _check_user_id(user_id: str) -> None:
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("user_id must be a non-empty string")
    if len(user_id) > MAX_USER_ID:
        raise ValueError(f"user_id longer than {MAX_USER_ID} characters")


def _parse(text: str, label: str) -> dict[str, _Record]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AuthStoreError(f"{label}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("users"), dict):
        raise AuthStoreError(f"{label}: expected an object with a 'users' object")
    if doc.get("version") != FORMAT_VERSION:
        raise AuthStoreError(f"{label}: unsupported version {doc.get('version')!r}")
    users: dict[str, _Record] = {}
    for user_id, raw in doc["users"].items():
        try:
            _check_user_id(user_id)
            users[user_id] = _Record.from_json(raw)
        except ValueError as exc:
            raise AuthStoreError(f"{label}: user {user_id!r}: {exc}") from None
    return users


def _render(users: dict[str, _Record]) -> bytes:
    doc = {"version": FORMAT_VERSION, "users": {u: r.to_json() for u, r in sorted(users.items())}}
    return json.dumps(doc, indent=1).encode()


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
        return _parse(text, f"user file {self.path}")

    def export(self) -> str:
        """The whole store as its file's text: hashed records only (a cluster shares it)."""
        return _render(self._users).decode()

    def replace_all(self, text: str, label: str = "the cluster's user store") -> None:
        """Every user from `text` (as `export` gives it), instead of the ones here; or AuthStoreError."""
        users = _parse(text, label)
        with self._lock:
            self._save(users)
            self._users = users

    def _save(self, users: dict[str, _Record]) -> None:
        data = _render(users)
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

    def add(self, user_id: str, password: str | None, is_superuser: bool = False,
            security_profile: int | None = None) -> UserInfo:
        """A new user; `password` None only with security_profile 3 (the certificate is the login)."""
        _check_user_id(user_id)
        check_security_profile(security_profile)
        params = self.hashing
        if password is not None:
            _check_password(params, password)
        elif security_profile != 3:
            raise ValueError("password must be a non-empty string (only a security_profile 3 user may have none)")
        if user_id in self._users:  # fail before the slow hash
            raise UserExists(user_id)
        record = _Record.create(params, password, bool(is_superuser), security_profile)
        with self._lock:
            if user_id in self._users:
                raise UserExists(user_id)
            self._commit(user_id, record)
        return record.info(user_id)

    def update(self, user_id: str, password: str | None = None, is_superuser: bool | None = None,
               security_profile: int | None | _Keep = KEEP) -> UserInfo:
        """Change what is given; `security_profile` None removes the requirement (KEEP: unchanged)."""
        _check_user_id(user_id)
        if not isinstance(security_profile, _Keep):
            check_security_profile(security_profile)
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
            profile = current.security_profile if isinstance(security_profile, _Keep) else security_profile
            record = replace(fresh or current, is_superuser=superuser, security_profile=profile)
            if not record.has_password and profile != 3:
                raise ValueError("a user without a password must keep security_profile 3 (or be given a password)")
            if record != current:
                self._commit(user_id, record)
        return record.info(user_id)

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
        return record.info(user_id)

    def list(self, page: int = 1, limit: int = 100, like_user_id: str | None = None) -> UserPage:
        if page < 1 or limit < 1:
            raise ValueError("page and limit must be at least 1")
        users = self._users
        matching = sorted((u, r) for u, r in users.items() if not like_user_id or like_user_id in u)
        start = (page - 1) * limit
        items = [r.info(u) for u, r in matching[start : start + limit]]
        return UserPage(items, len(matching), page, limit)

    def __len__(self) -> int:
        return len(self._users)

    def _record(self, user_id: str) -> _Record | None:
        return self._users.get(user_id)
