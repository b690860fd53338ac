"""Every error status the seed lists, with its exact body, from a real server."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import web
from server_fixtures import LiveServer

from taskreport._store import Tx
from taskreport.server import RateLimit


def _error(code: str, detail: str, attr: str | None = None, kind: str = "client_error") -> dict[str, Any]:
    return {"type": kind, "errors": [{"code": code, "detail": detail, "attr": attr}]}


@pytest.fixture
def task_url(sqlite_server: LiveServer) -> str:
    response = web.post(sqlite_server.tasks_url, json={"name": "t"}, headers=sqlite_server.headers())
    return str(response.json()["url"])


def test_405_names_the_method_in_lower_case(sqlite_server: LiveServer) -> None:
    response = web.patch(sqlite_server.tasks_url, json={}, headers=sqlite_server.headers())
    assert response.status_code == 405
    assert response.json() == _error("method_not_allowed", "Method \u201cpatch\u201d not allowed.")
    assert response.headers["allow"] == "GET, POST"


@pytest.mark.parametrize("accept", ["text/html", "application/xml", "text/*", "application/json;q=0"])
def test_406_when_accept_excludes_json(sqlite_server: LiveServer, accept: str) -> None:
    response = web.get(sqlite_server.tasks_url, headers={**sqlite_server.headers(), "Accept": accept})
    assert response.status_code == 406
    assert response.json() == _error("not_acceptable", "Could not satisfy the request Accept header.")


@pytest.mark.parametrize(
    "accept", ["application/json", "*/*", "application/*", "text/html, application/json;q=0.5", "", None]
)
def test_accept_headers_json_can_satisfy(sqlite_server: LiveServer, accept: str | None) -> None:
    headers = sqlite_server.headers()
    if accept is not None:
        headers["Accept"] = accept
    assert web.get(sqlite_server.tasks_url, headers=headers).status_code == 200


def test_415_for_a_body_that_is_not_json(sqlite_server: LiveServer, task_url: str) -> None:
    headers = {**sqlite_server.headers(), "Content-Type": "application/xml"}
    response = web.patch(task_url, content=b"<task/>", headers=headers)
    assert response.status_code == 415
    assert response.json() == _error("not_acceptable", "Unsupported media type \u201capplication/xml\u201d in request.")


@pytest.mark.parametrize("body", [b"{not json", b'{"value": NaN}', b"\xff\xfe", b'{"value": 1'])
def test_malformed_json_is_400(sqlite_server: LiveServer, task_url: str, body: bytes) -> None:
    headers = {**sqlite_server.headers(), "Content-Type": "application/json"}
    response = web.patch(task_url, content=body, headers=headers)
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert response.json()["type"] == "client_error"
    assert error["code"] == "parse_error" and error["detail"].startswith("JSON parse error")


def test_a_body_that_is_not_an_object_is_400(sqlite_server: LiveServer, task_url: str) -> None:
    response = web.patch(task_url, json=[1, 2], headers=sqlite_server.headers())
    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == "non_field_errors"


def test_413_for_a_declared_large_body(sqlite_server: LiveServer, task_url: str) -> None:
    body = b'{"data": "' + b"x" * (1024 * 1024) + b'"}'
    response = web.patch(
        task_url, content=body, headers={**sqlite_server.headers(), "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["type"] == "client_error"
    assert response.json()["errors"][0]["code"] == "payload_too_large"


def test_413_for_a_large_chunked_body(sqlite_server: LiveServer, task_url: str) -> None:
    def chunks() -> Any:
        yield b'{"data": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    headers = {**sqlite_server.headers(), "Content-Type": "application/json"}
    response = web.patch(task_url, content=chunks(), headers=headers)
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json()["errors"][0]["code"] == "payload_too_large"
    # a body just under the limit is fine
    fits = web.patch(task_url, json={"data": "x" * (1024 * 1000)}, headers=sqlite_server.headers())
    assert fits.status_code == 200


def test_404_for_unknown_paths_and_tasks(sqlite_server: LiveServer) -> None:
    for url in (f"{sqlite_server.url}/nowhere", f"{sqlite_server.tasks_url}missing/"):
        response = web.get(url, headers=sqlite_server.headers())
        assert response.status_code == 404
        assert response.json() == _error("not_found", "Not found.")


def test_429_with_retry_after_per_token(server_factory: Any) -> None:
    live = server_factory(rate_limit=RateLimit(3, 60.0))
    other = live.new_org_token("other")
    statuses = [web.get(live.tasks_url, headers=live.headers()).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    throttled = web.get(live.tasks_url, headers=live.headers())
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["retry-after"]) <= 20
    body = throttled.json()
    assert body["type"] == "client_error" and body["errors"][0]["code"] == "throttled"
    # the limit is per token: another token is not throttled by the first one's requests
    other_url = f"{live.url}/api/other/default/tasks/"
    assert web.get(other_url, headers=live.headers(other)).status_code == 200


def test_rate_limit_is_off_by_default(sqlite_server: LiveServer) -> None:
    with web.client(headers=sqlite_server.headers()) as http:
        assert {http.get(sqlite_server.tasks_url).status_code for _ in range(50)} == {200}


def test_500_is_generic_and_leaks_nothing(sqlite_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret-connection-string in a traceback")

    monkeypatch.setattr(Tx, "list_tasks", broken)
    response = web.get(sqlite_server.tasks_url, headers=sqlite_server.headers())
    assert response.status_code == 500
    assert response.json() == _error("error", "A server error occurred.", kind="server_error")
    assert "secret" not in response.text and "Traceback" not in response.text
    monkeypatch.undo()
    assert web.get(sqlite_server.tasks_url, headers=sqlite_server.headers()).status_code == 200


def test_server_keeps_serving_after_a_client_hangs_up_mid_body(sqlite_server: LiveServer, task_url: str) -> None:
    host, port = sqlite_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        path = task_url.removeprefix(sqlite_server.url)
        sock.sendall(
            f"PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Token {sqlite_server.token}\r\n"
            'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"val'.encode()
        )
    response = web.patch(task_url, json={"value": 7}, headers=sqlite_server.headers())
    assert response.status_code == 200 and response.json()["value"] == 7


@pytest.mark.parametrize(("body", "kind"), [(b"[]", "list"), (b"null", "NoneType"), (b"0", "int"), (b'""', "str")])
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_a_json_body_that_is_not_an_object_is_never_taken_as_empty(
    sqlite_server: LiveServer, task_url: str, body: bytes, kind: str, method: str
) -> None:
    headers = {**sqlite_server.headers(), "Content-Type": "application/json"}
    url = sqlite_server.tasks_url if method == "POST" else task_url
    response = web.request(method, url, content=body, headers=headers)
    assert response.status_code == 400
    assert response.json() == _error(
        "not_a_dict", f'Expected a dictionary of items but got type "{kind}".', "non_field_errors"
    )
    actions = web.post(f"{task_url}actions/", content=body, headers=headers)
    assert actions.status_code == 400 and actions.json()["errors"][0]["code"] == "not_a_dict"
    login = web.post(f"{sqlite_server.url}/api/authenticate/", content=body, headers=headers)
    assert login.status_code == 400 and login.json()["errors"][0]["code"] == "not_a_dict"


def test_an_empty_body_is_still_an_empty_object(sqlite_server: LiveServer, task_url: str) -> None:
    response = web.patch(task_url, headers=sqlite_server.headers())
    assert response.status_code == 200


@pytest.mark.parametrize("depth", [100_000, 5_000, 500, 101])
def test_deeply_nested_json_is_400_not_500(sqlite_server: LiveServer, task_url: str, depth: int) -> None:
    headers = {**sqlite_server.headers(), "Content-Type": "application/json"}
    for body in (b"[" * depth + b"]" * depth, b'{"data": {"a": ' + b"[" * depth + b"]" * depth + b"}}"):
        response = web.patch(task_url, content=body, headers=headers)
        assert response.status_code == 400
        error = response.json()["errors"][0]
        assert error["code"] == "parse_error" and "nested" in error["detail"]
