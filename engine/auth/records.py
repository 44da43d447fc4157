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
    security_profile: int | None = None  # OCPP 2.0.1 security profile 1-3 the charge point must use; None: any

    def as_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"user_id": self.user_id, "is_superuser": self.is_superuser}
        if self.security_profile is not None:
            shown["security_profile"] = self.security_profile
        return shown


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
    password_hash: str  # "": no password (a security profile 3 charge point: its certificate is its login)
    is_superuser: bool = False
    security_profile: int | None = None

    @classmethod
    def create(cls, params: PasswordHashSettings, password: str | None, is_superuser: bool,
               security_profile: int | None = None) -> _Record:
        if password is None:
            return cls(params, "", "", is_superuser, security_profile)
        salt = _new_salt(params)
        return cls(params, salt, _hash(params, salt, password), is_superuser, security_profile)

    @property
    def has_password(self) -> bool:
        return bool(self.password_hash)

    def info(self, user_id: str) -> UserInfo:
        return UserInfo(user_id, self.is_superuser, self.security_profile)

    def matches(self, password: str) -> bool:
        if not self.password_hash:
            return False
        try:
            computed = _hash(self.params, self.salt, password)
        except ValueError:  # bcrypt: too long, so it cannot be the stored one
            return False
        return hmac.compare_digest(computed.encode(), self.password_hash.encode())

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"is_superuser": self.is_superuser}
        if self.password_hash:
            doc.update(algorithm=_params_to_json(self.params), salt=self.salt, password_hash=self.password_hash)
        if self.security_profile is not None:
            doc["security_profile"] = self.security_profile
        return doc

    @classmethod
    def from_json(cls, raw: Any) -> _Record:
        if not isinstance(raw, dict):
            raise ValueError("not an object")
        salt, digest, superuser = raw.get("salt"), raw.get("password_hash"), raw.get("is_superuser", False)
        profile = raw.get("security_profile")
        check_security_profile(profile)
        if not isinstance(superuser, bool):
            raise ValueError("is_superuser must be true or false")
        if digest is None and salt is None and "algorithm" not in raw:
            if profile != 3:
                raise ValueError("a user without a password must have security_profile 3")
            return cls(PasswordHashSettings(), "", "", superuser, profile)
        if not isinstance(salt, str) or not isinstance(digest, str) or not digest:
            raise ValueError("salt and password_hash must be strings")
        return cls(_params_from_json(raw.get("algorithm")), salt, digest, superuser, profile)


SECURITY_PROFILES = (1, 2, 3)


def check_security_profile(profile: Any) -> None:
    """A `ValueError` unless `profile` is None or one of OCPP's security profiles 1, 2, 3."""
    if profile is not None and (type(profile) is not int or profile not in SECURITY_PROFILES):
        raise ValueError(f"security_profile must be 1, 2 or 3, not {profile!r}")
