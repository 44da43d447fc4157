"""A stored user (its hash, salt and the parameters that made them) and what
the admin API and CLI may see of one."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from engine.auth.hashing import _hash, _new_salt, _params_from_json, _params_to_json
from engine.config.schema import PasswordHashSettings


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
