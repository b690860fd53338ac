"""Organizations, users, tokens and passwords in the store, on SQLite and on PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskreport._errors import ConfigurationError, NotFound, ValidationError
from taskreport._store import Store, hash_token, open_store
from taskreport._store import _passwords as passwords


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    with s.transaction() as tx:
        tx.ensure_project("acme", "web")
        tx.ensure_project("globex", "default")
    yield s
    s.close()


def _stored_text(store: Store, store_url: str, table: str) -> str:
    with store.transaction(write=False) as tx:
        text = repr(tx.cur.all(f"SELECT * FROM {table}"))
    if store.dialect == "sqlite":
        for path in Path(store_url).parent.glob(Path(store_url).name + "*"):
            text += path.read_bytes().decode("latin-1")
    return text


def test_tokens_are_stored_hashed(store: Store, store_url: str) -> None:
    with store.transaction() as tx:
        key = tx.create_token("acme", name="ci")
        other_key = tx.create_token("globex")
    assert key != other_key
    assert len(key) >= 32
    secret = key[10:]  # past the displayed prefix
    stored = _stored_text(store, store_url, "tokens")
    assert key not in stored
    assert secret not in stored
    assert hash_token(key) in stored
    with store.transaction(write=False) as tx:
        info = tx.token_info(key)
        assert info is not None
        assert info.organization == "acme"
        assert info.user_id is None
        assert key.startswith(info.prefix)
        other = tx.token_info(other_key)
        assert other is not None
        assert other.organization == "globex"
        assert tx.token_info(key + "x") is None
        assert tx.token_info("") is None
        listed = tx.list_tokens("acme")
    assert [(t["name"], t["organization"], t["revoked"]) for t in listed] == [("ci", "acme", None)]
    assert key not in repr(listed)
    assert hash_token(key) not in repr(listed)


def test_revoke_and_rotate(store: Store) -> None:
    with store.transaction() as tx:
        key = tx.create_token("acme", name="deploy")
        info = tx.token_info(key)
        assert info is not None
        new_key = tx.rotate_token(info.id)
    assert new_key != key
    with store.transaction() as tx:
        assert tx.token_info(key) is None
        new_info = tx.token_info(new_key)
        assert new_info is not None
        assert new_info.organization == "acme"
        listed = {t["id"]: t for t in tx.list_tokens()}
        assert listed[info.id]["revoked"] is not None
        assert listed[new_info.id]["revoked"] is None
        assert listed[new_info.id]["name"] == "deploy"
        # a revoked token can't be rotated again
        with pytest.raises(NotFound):
            tx.rotate_token(info.id)
        tx.revoke_token(new_info.id)
        assert tx.token_info(new_key) is None


def test_users_passwords_hashed(store: Store, store_url: str) -> None:
    password = "correct horse battery"
    with store.transaction() as tx:
        uid = tx.create_user("alice", password, "acme")
        bob = tx.create_user("bob", password, "acme")
        key = tx.create_token("acme", user_id=uid)
        with pytest.raises(ValidationError) as info:
            tx.create_user("alice", "another password", "acme")
        assert info.value.attr == "username"
        with pytest.raises(ValidationError) as info:
            tx.create_user("carol", "short", "acme")
        assert info.value.attr == "password"
        with pytest.raises(ValidationError) as info:
            tx.create_user("", "long enough password", "acme")
        assert info.value.attr == "username"
    stored = _stored_text(store, store_url, "users")
    assert password not in stored
    with store.transaction(write=False) as tx:
        hashes = [r["password_hash"] for r in tx.cur.all("SELECT password_hash FROM users ORDER BY id")]
        assert len(set(hashes)) == 2  # salted: the same password hashes differently
        row = tx.authenticate_user("alice", password)
        assert row is not None
        assert row["id"] == uid
        assert tx.authenticate_user("alice", password + "!") is None
        assert tx.authenticate_user("nobody", password) is None
        token = tx.token_info(key)
        assert token is not None
        assert token.user_id == uid
        assert tx.organization_slugs(uid) == ["acme"]
    with store.transaction() as tx:
        tx.add_member("bob", "globex")
        tx.add_member("bob", "globex")  # twice is fine
        assert tx.organization_slugs(bob) == ["acme", "globex"]
        with pytest.raises(NotFound):
            tx.add_member("nobody", "acme")



def test_tokens_users_and_members_need_an_existing_organization(store: Store) -> None:
    with store.transaction() as tx:
        uid = tx.create_user("alice", "long enough password", "acme")
        for make in (
            lambda: tx.create_token("nosuchorg"),
            lambda: tx.create_user("bob", "long enough password", "nosuchorg"),
            lambda: tx.add_member("alice", "nosuchorg"),
        ):
            with pytest.raises(NotFound, match="no organization 'nosuchorg'"):
                make()
        assert tx.organization_slugs(uid) == ["acme"]
        assert [p["organization"] for p in tx.list_projects()] == ["acme", "globex"]


def test_revoking_an_unknown_or_revoked_token_fails(store: Store) -> None:
    with store.transaction() as tx:
        key = tx.create_token("acme")
        info = tx.token_info(key)
        assert info is not None
        tx.revoke_token(info.id)
        for token_id in (info.id, 9999, 2**70, -1):
            with pytest.raises(NotFound, match="no active token"):
                tx.revoke_token(token_id)
            with pytest.raises(NotFound, match="no active token"):
                tx.rotate_token(token_id)


def test_login_tokens_beyond_the_newest_are_revoked(store: Store) -> None:
    with store.transaction() as tx:
        uid = tx.create_user("alice", "long enough password", "acme")
        keys = [tx.create_token("acme", user_id=uid, name="authenticate") for _ in range(4)]
        kept = tx.create_token("acme", user_id=uid, name="ci")
        dropped = tx.keep_newest_tokens(uid, "authenticate", 2)
        assert dropped == [hash_token(k) for k in reversed(keys[:2])]
        assert [tx.token_info(k) is not None for k in keys] == [False, False, True, True]
        assert tx.token_info(kept) is not None


# -- passwords ----------------------------------------------------------------------------------------------
def test_an_unknown_user_costs_what_a_wrong_password_costs(store: Store, scrypts: list[Any]) -> None:
    with store.transaction() as tx:
        tx.create_user("alice", "long enough password", "acme")
    scrypts.clear()
    with store.transaction(write=False) as tx:
        assert tx.authenticate_user("alice", "wrong password") is None
        wrong = list(scrypts)
        scrypts.clear()
        assert tx.authenticate_user("nobody", "wrong password") is None
        unknown = list(scrypts)
    # one scrypt each, at the same cost: timing can not tell which usernames exist
    assert wrong == unknown == [(passwords.SCRYPT_N, passwords.SCRYPT_R, passwords.SCRYPT_P)]


def test_passwords_are_hashed_at_owasps_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    # OWASP Password Storage Cheat Sheet: scrypt with N >= 2^17, r = 8, p = 1
    monkeypatch.delenv(passwords.COST_ENV, raising=False)
    assert (passwords.SCRYPT_N, passwords.SCRYPT_R, passwords.SCRYPT_P) == (2**17, 8, 1)
    stored = passwords.hash_password("long enough password")
    assert stored.startswith(f"scrypt${2**17}$8$1$")
    assert passwords.check_password("long enough password", stored)
    assert not passwords.needs_rehash(stored)


def test_a_lower_cost_from_the_environment_never_weakens_a_stored_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(passwords.COST_ENV, raising=False)
    strong = passwords.hash_password("long enough password")
    monkeypatch.setenv(passwords.COST_ENV, "1024")
    weak = passwords.hash_password("long enough password")
    assert weak.startswith("scrypt$1024$8$1$") and passwords.check_password("long enough password", weak)
    # a hash at a higher cost than the configured one is kept: no login rehashes it down
    assert not passwords.needs_rehash(strong)
    monkeypatch.delenv(passwords.COST_ENV)
    assert passwords.needs_rehash(weak)
    for bad in ("1000", "512", "lots"):
        monkeypatch.setenv(passwords.COST_ENV, bad)
        with pytest.raises(ConfigurationError, match=passwords.COST_ENV):
            passwords.hash_password("long enough password")


def test_an_older_hash_still_logs_in_and_asks_for_a_rehash(store: Store, scrypts: list[Any]) -> None:
    with store.transaction() as tx:
        uid = tx.create_user("alice", "long enough password", "acme")
        # as wave 1 hashed it: N=2^14
        salt = b"0123456789abcdef"
        digest = hashlib.scrypt(b"long enough password", salt=salt, n=2**14, r=8, p=1, dklen=32)
        legacy = f"scrypt$16384$8$1${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
        tx.set_password(uid, legacy)
    with store.transaction(write=False) as tx:
        user = tx.authenticate_user("alice", "long enough password")
    assert user is not None and user["rehash"] is True
    with store.transaction() as tx:
        tx.set_password(uid, passwords.hash_password("long enough password"))
        again = tx.authenticate_user("alice", "long enough password")
    assert again is not None and again["rehash"] is False
