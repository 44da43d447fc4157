"""The built-in authenticator for charge points (EMQX's `built_in_database` +
`password_based`): salted password hashes in one JSON file under the data dir.

hashing: how a password becomes a stored hash (EMQX's algorithms and parameters)
records: a stored user, and what of it the admin API may see
store: the JSON user file and its changes
authenticator: the login check, with its cache and threads
"""

from engine.auth.authenticator import CACHE_SIZE, Authenticator
from engine.auth.hashing import BCRYPT_MAX_BYTES
from engine.auth.records import SECURITY_PROFILES, UserInfo, UserPage, check_security_profile
from engine.auth.store import (
    FORMAT_VERSION,
    KEEP,
    MAX_USER_ID,
    AuthStoreError,
    UserExists,
    UserNotFound,
    UserStore,
)

__all__ = [
    "BCRYPT_MAX_BYTES",
    "CACHE_SIZE",
    "FORMAT_VERSION",
    "KEEP",
    "SECURITY_PROFILES",
    "MAX_USER_ID",
    "AuthStoreError",
    "Authenticator",
    "UserExists",
    "UserInfo",
    "UserNotFound",
    "UserPage",
    "UserStore",
    "check_security_profile",
]
