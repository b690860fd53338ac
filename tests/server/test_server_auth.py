"""Token authentication, POST /api/authenticate/, organization isolation and hashed secrets."""

from __future__ import annotations

from typing import Any

import pytest
import web
from server_fixtures import LiveServer

from taskreport._config import make_project_key
from taskreport._store import open_store
from taskreport.server import RateLimit

NOT_PROVIDED = {
    "type": "client_error",
    "errors": [{"code": "not_authenticated", "detail": "Authentication credentials were not provided.", "attr": None}],
}
#: seconds to wait for a login: it checks a password hash at OWASP's cost, slow on purpose
LOGIN = 60

FAILED = {
    "type": "client_error",
    "errors": [{"code": "authentication_failed", "detail": "Incorrect authentication credentials.", "attr": None}],
}


@pytest.mark.parametrize("scheme", ["Token", "Bearer", "token", "bearer"])
def test_both_header_forms_authenticate(live_server: LiveServer, scheme: str) -> None:
    response = web.get(live_server.tasks_url, headers=live_server.headers(scheme=scheme))
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({}, NOT_PROVIDED),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, NOT_PROVIDED),
        ({"Authorization": "Token trk_wrong"}, FAILED),
        ({"Authorization": "Bearer trk_wrong"}, FAILED),
    ],
)
def test_401_bodies_and_www_authenticate(live_server: LiveServer, headers: dict[str, str], body: Any) -> None:
    response = web.get(live_server.tasks_url, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Token"
    assert response.json() == body


@pytest.mark.parametrize("header", ["Token", "Token a b"])
def test_malformed_token_header_is_authentication_failed(sqlite_server: LiveServer, header: str) -> None:
    response = web.get(sqlite_server.tasks_url, headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "authentication_failed"


def test_revoked_token_is_refused(sqlite_server: LiveServer) -> None:
    assert web.get(sqlite_server.tasks_url, headers=sqlite_server.headers()).status_code == 200
    with sqlite_server.app.store.transaction() as tx:
        (token,) = [t for t in tx.list_tokens("acme") if t["name"] == "fixture"]
        tx.revoke_token(token["id"])
    # the fixture runs with the token cache off; with it on, revocation takes effect within its TTL
    response = web.get(sqlite_server.tasks_url, headers=sqlite_server.headers())
    assert response.status_code == 401 and response.json() == FAILED


def test_other_organizations_get_404_without_a_leak(live_server: LiveServer) -> None:
    other = live_server.new_org_token("intruder")
    task = web.post(live_server.tasks_url, json={"name": "secret"}, headers=live_server.headers()).json()
    theirs = live_server.headers(other)
    missing_project = f"{live_server.url}/api/acme/no-such-project/tasks/"
    responses = [
        web.get(task["url"], headers=theirs),
        web.patch(task["url"], json={"value": 1}, headers=theirs),
        web.delete(task["url"], headers=theirs),
        web.get(f"{task['url']}actions/", headers=theirs),
        web.get(live_server.tasks_url, headers=theirs),
        web.post(live_server.tasks_url, json={"name": "x"}, headers=theirs),
        web.get(f"{live_server.url}/api/nobody/web/tasks/", headers=theirs),
        web.get(missing_project, headers=live_server.headers()),
    ]
    # an organization that exists, one that does not and a missing project all look the same
    assert {r.status_code for r in responses} == {404}
    assert len({r.text for r in responses}) == 1
    unchanged = web.get(task["url"], headers=live_server.headers()).json()
    assert unchanged["status"] == "pending" and unchanged["value"] is None
    # and the intruder's own project works
    own = web.get(f"{live_server.url}/api/intruder/default/tasks/", headers=theirs)
    assert own.status_code == 200 and own.json()["results"] == []


@pytest.mark.parametrize("form", [False, True])
def test_authenticate_returns_a_working_token(live_server: LiveServer, form: bool) -> None:
    user_id = live_server.create_user("ada@example.com", "correct horse battery")
    url = f"{live_server.url}/api/authenticate/"
    credentials = {"username": "ada@example.com", "password": "correct horse battery"}
    # a login checks a password hash at OWASP's cost (half a second here; more on a loaded machine)
    payload: dict[str, Any] = {"data": credentials} if form else {"json": credentials}
    response = web.post(url, timeout=LOGIN, **payload)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"account", "token", "accounts", "user"}
    assert body["account"] == "acme" and body["accounts"] == ["acme"]
    assert body["user"] == f"{live_server.url}/api/users/{user_id}/"
    headers = live_server.headers(body["token"])
    assert web.get(live_server.tasks_url, headers=headers).status_code == 200
    me = web.get(body["user"], headers=headers).json()
    assert me == {"id": user_id, "username": "ada@example.com", "accounts": ["acme"]}
    assert web.get(body["user"], headers=live_server.headers()).status_code == 404


def test_authenticate_refuses_wrong_credentials(sqlite_server: LiveServer) -> None:
    sqlite_server.create_user("ada", "correct horse battery")
    url = f"{sqlite_server.url}/api/authenticate/"
    for credentials in ({"username": "ada", "password": "wrong password"}, {"username": "bob", "password": "x" * 9}):
        response = web.post(url, json=credentials, timeout=LOGIN)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Token"
        assert response.json() == FAILED
    missing = web.post(url, json={"username": "ada"})
    assert missing.status_code == 400 and missing.json()["errors"][0]["attr"] == "password"
    assert web.get(url).status_code == 405


def test_the_database_never_holds_a_key_or_password(live_server: LiveServer) -> None:
    live_server.create_user("ada", "correct horse battery")
    issued = web.post(
        f"{live_server.url}/api/authenticate/",
        json={"username": "ada", "password": "correct horse battery"},
        timeout=LOGIN,
    ).json()["token"]
    store = open_store(live_server.store_url)
    try:
        with store.transaction(write=False) as tx:
            dump = repr(tx.cur.all("SELECT * FROM tokens")) + repr(tx.cur.all("SELECT * FROM users"))
    finally:
        store.close()
    for secret in (live_server.token, issued, "correct horse battery"):
        assert secret not in dump
        assert secret[4:20] not in dump
    assert "scrypt$" in dump


def test_authenticate_is_rate_limited_per_client_address(server_factory: Any) -> None:
    live = server_factory(login_rate_limit=RateLimit(3, 60.0))
    live.create_user("ada", "correct horse battery")
    url = f"{live.url}/api/authenticate/"
    wrong = {"username": "ada", "password": "wrong password"}
    assert [web.post(url, json=wrong, timeout=LOGIN).status_code for _ in range(3)] == [401, 401, 401]
    # a guess with the right password is an attempt like any other once the limit is reached
    throttled = web.post(url, json={"username": "ada", "password": "correct horse battery"})
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["retry-after"]) <= 20
    body = throttled.json()
    assert body["type"] == "client_error" and body["errors"][0]["code"] == "throttled"
    assert body["errors"][0]["attr"] is None
    # tokens keep working: the limit is on logins only
    assert web.get(live.tasks_url, headers=live.headers()).status_code == 200


def test_each_user_keeps_a_bounded_number_of_login_tokens(server_factory: Any) -> None:
    live = server_factory(login_tokens_per_user=3)
    live.create_user("ada", "correct horse battery")
    fixed = live.new_org_token("acme", "web")  # not a login token: never revoked by logins
    credentials = {"username": "ada", "password": "correct horse battery"}
    url = f"{live.url}/api/authenticate/"
    issued = [web.post(url, json=credentials, timeout=LOGIN).json()["token"] for _ in range(5)]
    statuses = [web.get(live.tasks_url, headers=live.headers(token)).status_code for token in issued]
    # the oldest logins are revoked, so repeated logins do not pile up live tokens
    assert statuses == [401, 401, 200, 200, 200]
    assert web.get(live.tasks_url, headers=live.headers(fixed)).status_code == 200
    assert web.get(live.tasks_url, headers=live.headers()).status_code == 200


@pytest.mark.parametrize("scheme", ["Token", "Bearer"])
def test_a_project_key_authenticates_for_its_project_only(live_server: LiveServer, scheme: str) -> None:
    live = live_server
    live.new_org_token("acme", "second")  # a second project of the same organization
    key = make_project_key("acme", "web", live.token)
    assert web.get(live.tasks_url, headers=live.headers(key, scheme)).status_code == 200
    created = web.post(live.tasks_url, json={"name": "t"}, headers=live.headers(key, scheme))
    assert created.status_code == 201
    # the token inside works in its whole organization, but the key only where it says
    second = f"{live.url}/api/acme/second/tasks/"
    assert web.get(second, headers=live.headers()).status_code == 200
    assert web.get(second, headers=live.headers(key, scheme)).status_code == 404
    assert (
        web.get(second, headers=live.headers(make_project_key("acme", "second", live.token), scheme)).status_code
        == 200
    )
    # a key naming another organization gets what any other organization's path gets
    other = make_project_key("other-org", "default", live.token)
    assert web.get(live.tasks_url, headers=live.headers(other, scheme)).status_code == 404
    assert web.get(f"{live.url}/api/other-org/default/tasks/", headers=live.headers(other, scheme)).status_code == 404
    # a key whose token is wrong is as wrong as the token
    forged = web.get(live.tasks_url, headers=live.headers(make_project_key("acme", "web", "trk_nope"), scheme))
    assert forged.status_code == 401 and forged.json() == FAILED
