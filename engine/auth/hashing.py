"""How passwords are hashed, the way EMQX's built-in database hashes them: the
salt is a 32-character hex string used as bytes, digests are stored as hex,
`prefix` means hash(salt + password) and `suffix` hash(password + salt),
pbkdf2's key length is the digest size.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import bcrypt

from engine.config.schema import PasswordHashSettings

BCRYPT_MAX_BYTES = 72  # bcrypt ignores the rest; bcrypt>=5 refuses longer input


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
    fields: dict[str, Any] = {k: raw.get(k) for k in _PARAM_FIELDS[raw["name"]]}
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
