"""Hostile input (issue 10): each of these answered 500, poisoned later reads, hung, or logged a traceback.
Every one gets the seed's error body naming what is wrong, and nothing stored can break a read."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
from typing import Any

import httpx
import pytest
import requests
import web
from server_fixtures import LiveServer

SURROGATE = "\udfff"


def send(method: str, url: str, body: Any, live: LiveServer) -> httpx.Response:
    # json.dumps writes a lone surrogate as the escape "\udfff", as a hostile client would send it
    headers = {**live.headers(), "Content-Type": "application/json"}
    return web.request(method, url, content=json.dumps(body), headers=headers)


def raw(live: LiveServer, request: bytes, *, wait: float = 5.0) -> bytes:
    """Send bytes as they are; read until the server closes or ``wait`` passes."""
    host, port = live.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.settimeout(wait)
        # the server may answer and close before taking it all (a request line too long)
        with contextlib.suppress(OSError):
            sock.sendall(request)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except TimeoutError:
            pass
        except ConnectionResetError:
            pass  # what it sent before resetting (with our bytes unread) was read first
        return out


def body_of(response: bytes) -> tuple[bytes, dict[bytes, bytes], Any]:
    """The status line, the headers (lower-case names) and the JSON body of a raw response."""
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {name.lower(): value for name, _, value in (line.partition(b": ") for line in lines)}
    return status, headers, json.loads(body)


@pytest.mark.parametrize(
    ("fields", "attr"),
    [
        ({"name": SURROGATE}, "name"),
        ({"name": "ok", "queue": f"q{SURROGATE}"}, "queue"),
        ({"name": "ok", "external_id": SURROGATE}, "external_id"),
        ({"name": "ok", "data": {"note": f"a{SURROGATE}b"}}, "data"),
        ({"name": "ok", "data": {SURROGATE: 1}}, "data"),
        ({"name": "ok", "tags": {"env": f"x{SURROGATE}"}}, "tags.env"),
        ({"name": "ok", "parent": SURROGATE}, "parent"),
        (
            {"name": "ok", "actions": [{"trigger": "success", "integration": "webhook:x",
                                        "config": {"url": "https://x.example", "note": SURROGATE}}]},
            "actions.0.config",
        ),
    ],
)
def test_a_lone_surrogate_is_refused_naming_the_field(live_server: LiveServer, fields: Any, attr: str) -> None:
    created = send("POST", live_server.tasks_url, fields, live_server)
    assert created.status_code == 400, created.text
    assert created.json()["errors"][0]["attr"] == attr
    task = web.post(live_server.tasks_url, json={"name": "t"}, headers=live_server.headers()).json()
    patched = send("PATCH", task["url"], {k: v for k, v in fields.items() if k != "name"} or fields, live_server)
    assert patched.status_code == 400 and patched.json()["errors"][0]["attr"] == attr
    # nothing was stored, and every read still works
    listed = web.get(live_server.tasks_url, headers=live_server.headers())
    assert listed.status_code == 200 and [t["id"] for t in listed.json()["results"]] == [task["id"]]


def test_a_lone_surrogate_in_an_action_or_a_login_is_refused(sqlite_server: LiveServer) -> None:
    task = web.post(sqlite_server.tasks_url, json={"name": "t"}, headers=sqlite_server.headers()).json()
    action = {"trigger": "success", "integration": "email", "config": {"to": "a@example.com", "x": SURROGATE}}
    made = send("POST", f"{task['url']}actions/", action, sqlite_server)
    assert made.status_code == 400 and made.json()["errors"][0]["attr"] == "config"
    login = web.post(
        f"{sqlite_server.url}/api/authenticate/",
        content=json.dumps({"username": SURROGATE, "password": "whatever"}),
        headers={"Content-Type": "application/json"},
    )
    assert login.status_code == 400 and login.json()["errors"][0]["attr"] == "username"


def test_nothing_already_stored_can_break_a_read(live_server: LiveServer) -> None:
    headers = live_server.headers()
    task = web.post(live_server.tasks_url, json={"name": "t"}, headers=headers).json()
    email = {"trigger": "success", "integration": "email", "config": {"to": "a@example.com"}}
    action = web.post(f"{task['url']}actions/", json=email, headers=headers).json()
    # what an older server stored from {"data": {"note": "\udfff"}}: the escape, in the JSON text
    poison = '{"note":"a\\udfffb","\\udfff":1}'
    with live_server.app.store.transaction() as tx:
        tx.cur.execute("UPDATE tasks SET data = ? WHERE public_id = ?", (poison, task["id"]))
        tx.cur.execute("UPDATE actions SET config = ? WHERE id = ?", (poison, action["id"]))
    fetched = web.get(task["url"], headers=headers)
    assert fetched.status_code == 200 and fetched.json()["data"] == {"note": "a\ufffdb", "\ufffd": 1}
    listed = web.get(live_server.tasks_url, headers=headers)
    assert listed.status_code == 200 and listed.json()["results"][0]["data"]["note"] == "a\ufffdb"
    actions = web.get(f"{task['url']}actions/", headers=headers)
    assert actions.status_code == 200 and actions.json()[0]["config"]["note"] == "a\ufffdb"
    # and the task can still be written
    assert web.patch(task["url"], json={"value": 1}, headers=headers).status_code == 200


def test_numbers_beyond_64_bits_are_refused(live_server: LiveServer) -> None:
    headers = live_server.headers()
    task = web.post(live_server.tasks_url, json={"name": "t"}, headers=headers).json()
    for action_id in ("9" * 30, str(2**63), "-1", "0"):
        url = f"{task['url']}actions/{action_id}/"
        for method in ("GET", "PATCH", "DELETE"):
            response = web.request(method, url, json={}, headers=headers)
            assert response.status_code == 404 and response.json()["errors"][0]["code"] == "not_found"
    import base64

    for key in (2**63, 10**30, -5):
        cursor = base64.urlsafe_b64encode(f"n:{key}".encode()).decode().rstrip("=")
        listed = web.get(live_server.tasks_url, params={"cursor": cursor}, headers=headers)
        assert listed.status_code == 400 and listed.json()["errors"][0]["attr"] == "cursor"
    for page_size in ("9" * 400, "1" + "0" * 19, "\u0663"):
        listed = web.get(live_server.tasks_url, params={"page_size": page_size}, headers=headers)
        assert listed.status_code == 400 and listed.json()["errors"][0]["attr"] == "page_size"
    assert web.get(f"{live_server.url}/api/users/{'9' * 40}/", headers=headers).status_code == 404


@pytest.mark.parametrize("field", ["start_time", "end_time", "time_to_start"])
def test_a_400_digit_time_is_refused(sqlite_server: LiveServer, field: str) -> None:
    body = b'{"name": "t", "' + field.encode() + b'": ' + b"9" * 400 + b"}"
    headers = {**sqlite_server.headers(), "Content-Type": "application/json"}
    response = web.post(sqlite_server.tasks_url, content=body, headers=headers)
    assert response.status_code == 400 and response.json()["errors"][0]["attr"] == field


def test_too_many_tag_filters_are_refused(sqlite_server: LiveServer) -> None:
    headers = sqlite_server.headers()
    tags = [f"k{i}:v" for i in range(994)]
    # requests: httpx refuses a query this long before sending it
    response = requests.get(sqlite_server.tasks_url, params={"tag": tags}, headers=headers, timeout=10)
    assert response.status_code == 400 and response.json()["errors"][0]["attr"] == "tag"
    # a long list of statuses is a list of at most eight
    many = requests.get(
        sqlite_server.tasks_url, params={"status": ",".join(["pending"] * 2000)}, headers=headers, timeout=10
    )
    assert many.status_code == 200


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /api/acme/web/tasks/ HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"GET /api/\xff/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /" + b"a" * 240_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /api/ping/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
)
@pytest.mark.parametrize("parser", ["httptools", "h11"])  # the server extra brings httptools; h11 without it
def test_malformed_framing_gets_the_seed_body(server_factory: Any, parser: str, request_bytes: bytes) -> None:
    status, headers, body = body_of(raw(server_factory(parser=parser), request_bytes))
    assert status == b"HTTP/1.1 400 Bad Request"
    assert headers[b"content-type"] == b"application/json" and headers[b"x-taskreport-features"] == b"batch, refs"
    assert body == {
        "type": "client_error",
        "errors": [{"code": "parse_error", "detail": "Invalid HTTP request received.", "attr": None}],
    }


def test_a_body_shorter_than_its_length_gets_a_read_timeout(server_factory: Any) -> None:
    live = server_factory(read_timeout=0.5)
    started = time.monotonic()
    answer = raw(
        live,
        f"POST /api/acme/web/tasks/ HTTP/1.1\r\nHost: x\r\nAuthorization: Token {live.token}\r\n"
        'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"name"'.encode(),
    )
    assert time.monotonic() - started < 4  # answered, and the connection closed: raw() did not wait it out
    status, headers, body = body_of(answer)
    assert status.startswith(b"HTTP/1.1 408")
    assert headers[b"connection"] == b"close"
    assert body["errors"][0]["code"] == "request_timeout"
    assert web.get(live.tasks_url, headers=live.headers()).json()["results"] == []


def test_a_slow_body_whose_every_part_comes_in_time_is_read_whole(server_factory: Any) -> None:
    # the timeout is per part, not for the whole body: three parts 0.3 s apart take longer than 0.5 s in all
    live = server_factory(read_timeout=0.5)
    host, port = live.url.removeprefix("http://").split(":")
    body = b'{"name": "slow but steady"}'
    parts = [body[:8], body[8:16], body[16:]]
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            f"POST /api/acme/web/tasks/ HTTP/1.1\r\nHost: x\r\nAuthorization: Token {live.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        for part in parts:
            time.sleep(0.3)
            sock.sendall(part)
        sock.settimeout(10)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 201")
    assert [t["name"] for t in web.get(live.tasks_url, headers=live.headers()).json()["results"]] == ["slow but steady"]


def test_a_client_gone_mid_body_is_one_debug_line(sqlite_server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="taskreport.server")
    host, port = sqlite_server.url.removeprefix("http://").split(":")
    for _ in range(3):
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                f"POST /api/acme/web/tasks/ HTTP/1.1\r\nHost: x\r\nAuthorization: Token {sqlite_server.token}\r\n"
                'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"na'.encode()
            )
            time.sleep(0.2)  # let the server start reading the body
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        mine = [r for r in caplog.records if r.name == "taskreport.server"]
        if len(mine) >= 3:
            break
        time.sleep(0.05)
    assert [(r.levelno, r.exc_info) for r in mine] == [(logging.DEBUG, None)] * 3
    assert all("disconnected" in r.getMessage() for r in mine)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_huge_content_length_is_refused_not_a_500(sqlite_server: LiveServer) -> None:
    answer = raw(
        sqlite_server,
        f"POST /api/acme/web/tasks/ HTTP/1.1\r\nHost: x\r\nAuthorization: Token {sqlite_server.token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {'9' * 5000}\r\n\r\n".encode(),
        wait=3,
    )
    assert answer.split(b" ", 2)[1] in (b"400", b"413")
