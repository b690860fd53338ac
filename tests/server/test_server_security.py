"""Security findings of issue 10: signed webhooks, email recipients parsed properly, logins that cost the same
for unknown users and wrong passwords, and password hashes raised to today's cost at the next login."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import web
from receivers import Receiver, SmtpSink
from server_fixtures import LiveServer

from taskreport._store._outbox import list_firings
from taskreport.server import SmtpSettings


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """A receiver's check, written from the Standard Webhooks specification alone."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(expected, sig.removeprefix("v1,")) for sig in headers["webhook-signature"].split()
    )


def _secret(live: LiveServer) -> str:
    with live.app.store.transaction() as tx:
        scope = tx.get_scope(live.organization, live.project)
        assert scope is not None
        return tx.webhook_secret(scope.project_id)


def test_webhook_deliveries_are_signed_with_the_projects_secret(
    server_factory: Any, receiver_factory: Callable[[list[int]], Receiver]
) -> None:
    live = server_factory(delivery_attempts=3, delivery_backoff=0.05, allow_private_webhooks=True)
    receiver = receiver_factory([500, 200])
    hook = {"trigger": "success", "integration": "webhook:ci", "config": {"url": receiver.url}}
    web.post(live.tasks_url, json={"name": "t", "status": "success", "actions": [hook]}, headers=live.headers())
    assert wait_for(lambda: len(receiver.requests) == 2)
    secret = _secret(live)
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    (first, _), (second, _) = receiver.requests
    headers = [{k.lower(): v for k, v in h.items()} for h in (first, second)]
    for sent, body in zip(headers, receiver.bodies, strict=True):
        assert verify(secret, sent, body)
        assert abs(int(sent["webhook-timestamp"]) - time.time()) < 60
        assert not verify(secret, sent, body.replace(b'"success"', b'"error"'))  # a changed body fails
        assert not verify(_other_secret(), sent, body)
    # a retry carries the same id, so a receiver can drop a repeat
    assert headers[0]["webhook-id"] == headers[1]["webhook-id"]


def _other_secret() -> str:
    return "whsec_" + base64.b64encode(b"x" * 32).decode()


def test_each_project_signs_with_its_own_secret(sqlite_server: LiveServer) -> None:
    with sqlite_server.app.store.transaction() as tx:
        one = tx.ensure_project("acme", "one")
        two = tx.ensure_project("acme", "two")
        first, second = tx.webhook_secret(one.project_id), tx.webhook_secret(two.project_id)
        rotated = tx.webhook_secret(one.project_id, rotate=True)
    assert len({first, second, rotated}) == 3


@pytest.mark.parametrize(
    "to",
    [
        "x@evil.example; ops@example.com",
        "x@evil.example\nBcc: ops@example.com",
        "not an address",
        "a@b@example.com",
        ["ops@example.com", 7],
        [],
    ],
)
def test_email_recipients_that_do_not_parse_are_refused_when_written(sqlite_server: LiveServer, to: Any) -> None:
    action = {"trigger": "success", "integration": "email", "config": {"to": to}}
    body = {"name": "t", "actions": [action]}
    response = web.post(sqlite_server.tasks_url, json=body, headers=sqlite_server.headers())
    assert response.status_code == 400 and response.json()["errors"][0]["attr"] == "actions.0.config"


def test_every_recipient_is_checked_and_only_they_are_mailed(server_factory: Any, smtp_sink: SmtpSink) -> None:
    live = server_factory(smtp=SmtpSettings("127.0.0.1", smtp_sink.port), email_domains=frozenset({"example.com"}))
    ok = {"trigger": "pending", "integration": "email", "config": {"to": '"x@evil.example" <ops@example.com>'}}
    listed = {"trigger": "pending", "integration": "email", "config": {"to": "a@example.com, b@evil.example"}}
    task = web.post(live.tasks_url, json={"name": "t", "actions": [ok, listed]}, headers=live.headers()).json()
    # what an embedded writer could store without the server's checks: the allowlist bypass of issue 10
    with live.app.store.transaction() as tx:
        scope = tx.get_scope("acme", "web")
        assert scope is not None
        sneaky = {"trigger": "success", "integration": "email", "config": {"to": "x@evil.example; ops@example.com"}}
        tx.update_task(scope, task["id"], {"status": "success", "actions": [sneaky]})

    def states() -> list[str]:
        with live.app.store.transaction(write=False) as tx:
            return [f["state"] for f in list_firings(tx.cur)]

    assert wait_for(lambda: sorted(states()) == ["delivered", "failed", "failed"])
    # the display name looked like an address; only the address itself was mailed
    assert [m["rcpt"] for m in smtp_sink.messages] == [["to:<ops@example.com>"]]
    statuses = sorted(a["status"] for a in web.get(f"{task['url']}actions/", headers=live.headers()).json())
    assert statuses[0] == "active"
    assert "b@evil.example refused" in statuses[1]
    assert "invalid recipients" in statuses[2]


def _login(live: LiveServer, username: str, password: str) -> httpx.Response:
    return web.post(f"{live.url}/api/authenticate/", json={"username": username, "password": password}, timeout=30)


def test_unknown_users_and_wrong_passwords_cost_one_scrypt_each(sqlite_server: LiveServer, scrypts: list[Any]) -> None:
    sqlite_server.create_user("ada", "correct horse battery")
    scrypts.clear()
    assert _login(sqlite_server, "ada", "wrong password").status_code == 401
    wrong, scrypts[:] = list(scrypts), []
    assert _login(sqlite_server, "nobody", "wrong password").status_code == 401
    unknown = list(scrypts)
    assert wrong == unknown == [(2**17, 8, 1)]


def test_an_older_hash_is_replaced_at_the_next_login(sqlite_server: LiveServer, scrypts: list[Any]) -> None:
    user_id = sqlite_server.create_user("ada", "correct horse battery")
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(b"correct horse battery", salt=salt, n=2**14, r=8, p=1, dklen=32)
    legacy = f"scrypt$16384$8$1${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    with sqlite_server.app.store.transaction() as tx:
        tx.set_password(user_id, legacy)

    def stored() -> str:
        with sqlite_server.app.store.transaction(write=False) as tx:
            return str(tx.cur.scalar("SELECT password_hash FROM users WHERE id = ?", (user_id,)))

    scrypts.clear()
    assert _login(sqlite_server, "ada", "correct horse battery").status_code == 200
    assert scrypts == [(2**14, 8, 1), (2**17, 8, 1)]  # checked as stored, then hashed anew
    assert stored().startswith("scrypt$131072$8$1$")
    scrypts.clear()
    assert _login(sqlite_server, "ada", "correct horse battery").status_code == 200
    assert scrypts == [(2**17, 8, 1)]  # no rehash the second time
