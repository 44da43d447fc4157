from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

import engine.auth.records as auth_records
import engine.auth.store as auth_store
from engine.auth import (
    Authenticator,
    AuthStoreError,
    UserExists,
    UserInfo,
    UserNotFound,
    UserStore,
)
from engine.config.schema import AuthenticationSettings, PasswordHashSettings

# Cheap parameters: the tests check behaviour, not strength.
ALGORITHMS = {
    "sha256-prefix": PasswordHashSettings(name="sha256", salt_position="prefix"),
    "sha256-suffix": PasswordHashSettings(name="sha256", salt_position="suffix"),
    "sha512-prefix": PasswordHashSettings(name="sha512", salt_position="prefix"),
    "sha512-suffix": PasswordHashSettings(name="sha512", salt_position="suffix"),
    "pbkdf2-sha256": PasswordHashSettings(name="pbkdf2", mac_fun="sha256", iterations=1000),
    "pbkdf2-sha512": PasswordHashSettings(name="pbkdf2", mac_fun="sha512", iterations=1000),
    "bcrypt": PasswordHashSettings(name="bcrypt", salt_rounds=4),
}
PBKDF2 = ALGORITHMS["pbkdf2-sha256"]
BCRYPT = ALGORITHMS["bcrypt"]


def settings(params: PasswordHashSettings) -> AuthenticationSettings:
    return AuthenticationSettings(enable=True, password_hash_algorithm=params)


def make(tmp_path: Path, params: PasswordHashSettings = ALGORITHMS["sha256-suffix"]) -> tuple[UserStore, Authenticator]:
    store = UserStore.in_data_dir(tmp_path)
    authn = Authenticator(settings(params), store)
    return store, authn


def stored(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "authn" / "users.json").read_text())


@pytest.mark.parametrize("algo", ALGORITHMS)
async def test_every_algorithm_verifies(tmp_path: Path, algo: str) -> None:
    store, authn = make(tmp_path, ALGORITHMS[algo])
    store.add("CP1", "s3cret")
    assert authn.verify("CP1", "s3cret")
    assert not authn.verify("CP1", "s3creT")
    assert await authn.authenticate("CP1", "s3cret")
    assert not await authn.authenticate("CP1", "wrong")
    # fresh store from disk: the record alone is enough to verify
    assert Authenticator(settings(ALGORITHMS[algo]), UserStore.in_data_dir(tmp_path)).verify("CP1", "s3cret")
    authn.close()


@pytest.mark.parametrize("algo", ["sha256-prefix", "sha256-suffix", "sha512-prefix", "sha512-suffix"])
def test_salt_position_as_emqx(tmp_path: Path, algo: str) -> None:
    params = ALGORITHMS[algo]
    store, _ = make(tmp_path, params)
    store.add("CP1", "pw")
    rec = stored(tmp_path)["users"]["CP1"]
    salt = rec["salt"].encode()
    data = salt + b"pw" if params.salt_position == "prefix" else b"pw" + salt
    assert rec["password_hash"] == hashlib.new(params.name, data).hexdigest()
    assert rec["algorithm"] == {"name": params.name, "salt_position": params.salt_position}


def test_pbkdf2_record_as_emqx(tmp_path: Path) -> None:
    store, _ = make(tmp_path, ALGORITHMS["pbkdf2-sha512"])
    store.add("CP1", "pw")
    rec = stored(tmp_path)["users"]["CP1"]
    assert rec["algorithm"] == {"name": "pbkdf2", "mac_fun": "sha512", "iterations": 1000}
    assert rec["password_hash"] == hashlib.pbkdf2_hmac("sha512", b"pw", rec["salt"].encode(), 1000).hex()


def test_salts_are_random(tmp_path: Path) -> None:
    store, _ = make(tmp_path)
    store.add("a", "same")
    store.add("b", "same")
    users = stored(tmp_path)["users"]
    assert users["a"]["salt"] != users["b"]["salt"]
    assert users["a"]["password_hash"] != users["b"]["password_hash"]


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_file_has_no_plaintext_and_mode_0600(tmp_path: Path, algo: str) -> None:
    store, _ = make(tmp_path, ALGORITHMS[algo])
    store.add("CP1", "PlainTextPassword-42")
    store.update("CP1", password="AnotherPlainText-43")
    path = tmp_path / "authn" / "users.json"
    text = path.read_text()
    assert "PlainTextPassword" not in text and "AnotherPlainText" not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(path.parent) == ["users.json"]  # no temp files left behind


def test_persists_across_instances(tmp_path: Path) -> None:
    store, _ = make(tmp_path)
    store.add("CP1", "one", is_superuser=True)
    store.add("CP2", "two")
    store.delete("CP2")
    again = UserStore.in_data_dir(tmp_path)
    assert again.get("CP1") == UserInfo("CP1", True)
    with pytest.raises(UserNotFound):
        again.get("CP2")
    assert Authenticator(settings(ALGORITHMS["sha256-suffix"]), again).verify("CP1", "one")


def test_missing_file_is_an_empty_store(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "nowhere" / "users.json")
    assert len(store) == 0
    assert not (tmp_path / "nowhere").exists()  # nothing written until a change


async def test_changing_algorithm_keeps_old_users(tmp_path: Path) -> None:
    store, old = make(tmp_path, ALGORITHMS["sha256-prefix"])
    store.add("old", "old-pw")
    # restart with another algorithm
    store2 = UserStore.in_data_dir(tmp_path)
    authn = Authenticator(settings(PBKDF2), store2)
    store2.add("new", "new-pw")
    users = stored(tmp_path)["users"]
    assert users["old"]["algorithm"]["name"] == "sha256"
    assert users["new"]["algorithm"]["name"] == "pbkdf2"
    assert await authn.authenticate("old", "old-pw")
    assert await authn.authenticate("new", "new-pw")
    assert not await authn.authenticate("old", "new-pw")
    # a changed password takes the current algorithm
    store2.update("old", password="fresh")
    assert stored(tmp_path)["users"]["old"]["algorithm"]["name"] == "pbkdf2"
    assert await authn.authenticate("old", "fresh")
    # apply() (reload) switches how new passwords are hashed
    authn.apply(settings(BCRYPT))
    store2.add("newest", "pw")
    assert stored(tmp_path)["users"]["newest"]["algorithm"] == {"name": "bcrypt", "salt_rounds": 4}
    assert await authn.authenticate("newest", "pw") and await authn.authenticate("new", "new-pw")
    authn.close()


async def test_unknown_user_is_false_and_still_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, authn = make(tmp_path, PBKDF2)
    store.add("CP1", "pw")
    calls: list[str] = []
    real = auth_records._hash
    monkeypatch.setattr(auth_records, "_hash", lambda p, s, pw: calls.append(p.name) or real(p, s, pw))
    assert not await authn.authenticate("nobody", "pw")
    assert not authn.verify("nobody", "pw")
    assert calls == ["pbkdf2", "pbkdf2"]  # same work as a wrong password
    authn.close()


@pytest.mark.parametrize("username, password", [(None, "pw"), ("CP1", None), ("", "pw"), ("CP1", ""), (None, None)])
async def test_missing_credentials_are_false(tmp_path: Path, username, password) -> None:
    store, authn = make(tmp_path)
    store.add("CP1", "pw")
    assert not await authn.authenticate(username, password)
    assert not authn.verify(username, password)


def test_store_errors(tmp_path: Path) -> None:
    store, _ = make(tmp_path)
    store.add("CP1", "pw")
    with pytest.raises(UserExists, match="CP1"):
        store.add("CP1", "other")
    with pytest.raises(UserNotFound, match="CP9"):
        store.delete("CP9")
    with pytest.raises(UserNotFound):
        store.update("CP9", password="x")
    with pytest.raises(UserNotFound):
        store.get("CP9")
    for bad in ("", "x" * 257):
        with pytest.raises(ValueError, match="user_id"):
            store.add(bad, "pw")
    store.add("x" * 256, "pw")
    with pytest.raises(ValueError, match="password"):
        store.add("CP2", "")
    with pytest.raises(ValueError, match="password"):
        store.update("CP1", password="")


def test_bcrypt_refuses_long_password(tmp_path: Path) -> None:
    store, authn = make(tmp_path, BCRYPT)
    with pytest.raises(ValueError, match="72 bytes"):
        store.add("CP1", "x" * 73)
    store.add("CP1", "x" * 72)
    assert authn.verify("CP1", "x" * 72)
    assert not authn.verify("CP1", "x" * 73)


def test_update_superuser_keeps_password(tmp_path: Path) -> None:
    store, authn = make(tmp_path)
    store.add("CP1", "pw")
    assert store.update("CP1", is_superuser=True) == UserInfo("CP1", True)
    assert UserStore.in_data_dir(tmp_path).get("CP1").is_superuser
    assert authn.verify("CP1", "pw")


def test_paging_and_like(tmp_path: Path) -> None:
    store, _ = make(tmp_path)
    for i in (3, 1, 10, 2, 5):
        store.add(f"CP{i:02d}", "pw")
    store.add("other", "pw")
    page = store.list(page=1, limit=2)
    assert [u.user_id for u in page.items] == ["CP01", "CP02"] and page.total == 6
    assert [u.user_id for u in store.list(page=3, limit=2).items] == ["CP10", "other"]
    assert store.list(page=4, limit=2).items == [] and store.list(page=4, limit=2).total == 6
    like = store.list(like_user_id="CP0", limit=3, page=2)
    assert [u.user_id for u in like.items] == ["CP05"] and like.total == 4
    assert store.list(like_user_id="nope").total == 0
    assert all(set(u.as_dict()) == {"user_id", "is_superuser"} for u in store.list().items)
    with pytest.raises(ValueError):
        store.list(page=0)


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "not valid JSON"),
        ("[]", "'users'"),
        ('{"version": 99, "users": {}}', "version"),
        ('{"version": 1, "users": {"CP1": {"salt": "s", "password_hash": "h", "algorithm": {"name": "md5"}}}}', "CP1"),
        ('{"version": 1, "users": {"CP1": {"salt": "s", "password_hash": "h", '
         '"algorithm": {"name": "pbkdf2", "mac_fun": "sha256", "iterations": 0}}}}', "iterations"),
    ],
)
def test_corrupt_file_names_the_file(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "authn" / "users.json"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(AuthStoreError) as err:
        UserStore(path)
    assert str(path) in str(err.value) and problem in str(err.value)


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    path.mkdir()  # a directory where the file should be
    with pytest.raises(AuthStoreError, match="cannot read") as err:
        UserStore(path)
    assert str(path) in str(err.value)


def test_failed_write_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, authn = make(tmp_path)
    store.add("CP1", "pw")

    def refuse(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(auth_store.os, "replace", refuse)
    with pytest.raises(AuthStoreError, match="No space left"):
        store.add("CP2", "pw")
    with pytest.raises(AuthStoreError):
        store.update("CP1", password="new")
    with pytest.raises(AuthStoreError):
        store.delete("CP1")
    monkeypatch.undo()
    assert [u.user_id for u in store.list().items] == ["CP1"]
    assert authn.verify("CP1", "pw") and not authn.verify("CP1", "new")
    assert os.listdir(tmp_path / "authn") == ["users.json"]


async def test_cache_invalidated_on_change(tmp_path: Path) -> None:
    store, authn = make(tmp_path, PBKDF2)
    store.add("CP1", "old")
    assert await authn.authenticate("CP1", "old")
    assert len(authn.cache) == 1
    assert await authn.authenticate("CP1", "old")  # from the cache
    store.update("CP1", password="new")
    assert not await authn.authenticate("CP1", "old")
    assert await authn.authenticate("CP1", "new")
    store.delete("CP1")
    assert not await authn.authenticate("CP1", "new")
    # re-created with the same password: a new record, so no stale hit either way
    store.add("CP1", "other")
    assert not await authn.authenticate("CP1", "new")
    assert await authn.authenticate("CP1", "other")
    authn.close()


async def test_cache_holds_no_password_and_is_bounded(tmp_path: Path) -> None:
    store = UserStore.in_data_dir(tmp_path)
    authn = Authenticator(settings(ALGORITHMS["sha256-suffix"]), store, cache_size=3)
    for i in range(5):
        store.add(f"CP{i}", f"password-{i}")
        assert await authn.authenticate(f"CP{i}", f"password-{i}")
    assert len(authn.cache) == 3
    assert not any(b"password-" in digest for _, digest in authn.cache._entries)
    assert not await authn.authenticate("CP4", "wrong")
    assert len(authn.cache) == 3  # failures are never cached


async def test_change_during_verification_wins(tmp_path: Path) -> None:
    store, authn = make(tmp_path, BCRYPT)
    store.add("CP1", "old")
    pending = asyncio.create_task(authn.authenticate("CP1", "old"))
    await asyncio.sleep(0)  # the task is now hashing in a worker thread
    store.update("CP1", password="new")
    assert not await pending
    assert not await authn.authenticate("CP1", "old")
    assert len(authn.cache) == 0
    authn.close()


@pytest.mark.parametrize("params", [BCRYPT, PBKDF2], ids=["bcrypt", "pbkdf2"])
async def test_slow_hashes_do_not_block_the_loop(tmp_path: Path, params: PasswordHashSettings) -> None:
    store, authn = make(tmp_path, params)
    for i in range(10):
        store.add(f"CP{i}", "pw")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    try:
        for i in range(20):  # 10 right (uncached: first time), 10 wrong
            before = ticks
            ok = await authn.authenticate(f"CP{i % 10}", "pw" if i < 10 else "nope")
            assert ok == (i < 10)
            assert ticks > before, "the loop did not run while hashing"
    finally:
        task.cancel()
        authn.close()


async def test_failed_verifications_are_cached_and_do_not_hash_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A charge point retrying a wrong password (or an unknown user) is refused again without another
    slow hash; a different password is still checked, and a password change is seen at once."""
    store, authn = make(tmp_path, PBKDF2)
    store.add("CP1", "right")
    hashes = 0
    real = auth_records._Record.matches

    def counting(self, password):
        nonlocal hashes
        hashes += 1
        return real(self, password)

    monkeypatch.setattr(auth_records._Record, "matches", counting)
    for _ in range(5):
        assert not await authn.authenticate("CP1", "wrong")
        assert not await authn.authenticate("NOBODY", "wrong")
    assert hashes == 2
    assert await authn.authenticate("CP1", "right")
    assert hashes == 3
    store.update("CP1", password="wrong")  # the refused password becomes the right one
    assert await authn.authenticate("CP1", "wrong")
    store.add("NOBODY", "wrong")  # the unknown user is created with the refused password
    assert await authn.authenticate("NOBODY", "wrong")
    assert not any(b"wrong" in digest for _, digest in authn.failures._entries)
    authn.close()


def test_authentication_block_is_on_unless_it_says_enable_false(tmp_path: Path) -> None:
    """EMQX: an authenticator written in the config is on unless `enable = false`; no block at all
    means no authenticator. user_id_type is EMQX's key too."""
    from engine.config import load_settings

    def authn(text: str) -> AuthenticationSettings:
        path = tmp_path / "gateway.conf"
        path.write_text(text)
        return load_settings(path, {}, overlay=False).gateway.ocpp.authentication

    assert authn("").enable is False
    written = authn("gateway.ocpp.authentication { backend = built_in_database, mechanism = password_based, "
                    "password_hash_algorithm { name = sha256 } }")
    assert written.enable is True and written.user_id_type == "username"
    assert authn("gateway.ocpp.authentication { enable = false }").enable is False
    assert authn("gateway.ocpp.authentication.user_id_type = clientid").user_id_type == "clientid"
    from engine.config import ConfigError

    with pytest.raises(ConfigError, match="user_id_type"):
        authn("gateway.ocpp.authentication.user_id_type = cert")
