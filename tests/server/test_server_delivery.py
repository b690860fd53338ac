"""Action delivery (webhooks to a local HTTP receiver, email to a local SMTP server) and the sweeper."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import web
from receivers import SmtpSink
from server_fixtures import LiveServer

from taskreport._store import open_store
from taskreport._store._outbox import list_firings
from taskreport.server import SmtpSettings
from taskreport.server._delivery import DeliveryError, post_webhook, refused_address, resolve_webhook


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def hook_server(request: pytest.FixtureRequest, server_factory: Callable[..., LiveServer]) -> LiveServer:
    """``live_server`` that may deliver to this machine: the receivers listen on 127.0.0.1."""
    return server_factory(request.param, allow_private_webhooks=True)


def _action(live: LiveServer, task_url: str, action_id: int) -> dict[str, Any]:
    return dict(web.get(f"{task_url}actions/{action_id}/", headers=live.headers()).json())


def test_webhook_fires_once_with_the_task(hook_server: LiveServer, receiver_factory: Any) -> None:
    receiver = receiver_factory([200])
    hook = {"trigger": "*/25%,success", "integration": "webhook:ci", "config": {"url": receiver.url}}
    with web.client(headers=hook_server.headers()) as http:
        task = http.post(hook_server.tasks_url, json={"name": "build", "value": 10, "actions": [hook]}).json()
        assert wait_for(lambda: len(receiver.requests) == 1)  # 0% was reached at creation
        http.patch(task["url"], json={"value": 80})  # passes 25%, 50% and 75%: fires 75% only
        assert wait_for(lambda: len(receiver.requests) == 2)
        http.patch(task["url"], json={"value": 90})  # passes nothing
        http.patch(task["url"], json={"value": 100, "status": "success"})
        assert wait_for(lambda: len(receiver.requests) == 3)
    time.sleep(0.2)
    assert len(receiver.requests) == 3
    points = [headers["X-Taskreport-Trigger"] for headers, _ in receiver.requests]
    assert points == ["0%", "75%", "success"]
    _headers, body = receiver.requests[1]
    assert body["id"] == task["id"] and body["value"] == 80 and body["url"] == task["url"]
    assert body["updated"].endswith("Z")
    action = web.get(f"{task['url']}actions/", headers=hook_server.headers()).json()[0]
    assert action["status"] == "active"


def test_failing_webhook_is_retried_then_recorded(server_factory: Any, receiver_factory: Any) -> None:
    live = server_factory(delivery_attempts=3, delivery_backoff=0.05, allow_private_webhooks=True)
    receiver = receiver_factory([500])
    hook = {"trigger": "success", "integration": "webhook:ci", "config": {"url": receiver.url}}
    task = web.post(live.tasks_url, json={"name": "t", "actions": [hook]}, headers=live.headers()).json()
    action_id = web.get(f"{task['url']}actions/", headers=live.headers()).json()[0]["id"]
    web.patch(task["url"], json={"status": "success"}, headers=live.headers())
    assert wait_for(lambda: _action(live, task["url"], action_id)["status"].startswith("failed"))
    assert len(receiver.requests) == 3
    assert _action(live, task["url"], action_id)["status"] == "failed: webhook answered HTTP 500 (after 3 attempts)"
    with live.app.store.transaction(write=False) as tx:
        (firing,) = list_firings(tx.cur)
    assert firing["state"] == "failed" and firing["attempts"] == 3


def test_webhook_recovers_after_a_failure(server_factory: Any, receiver_factory: Any) -> None:
    live = server_factory(delivery_attempts=5, delivery_backoff=0.05, allow_private_webhooks=True)
    receiver = receiver_factory([503, 200])
    hook = {"trigger": "50", "integration": "webhook:ci", "config": {"url": receiver.url}}
    task = web.post(live.tasks_url, json={"name": "t", "actions": [hook]}, headers=live.headers()).json()
    web.patch(task["url"], json={"value": 50}, headers=live.headers())
    assert wait_for(lambda: len(receiver.requests) == 2)

    def delivered() -> bool:
        with live.app.store.transaction(write=False) as tx:
            return [f["state"] for f in list_firings(tx.cur)] == ["delivered"]

    assert wait_for(delivered)


def test_unreachable_webhook_is_recorded(server_factory: Any) -> None:
    live = server_factory(delivery_attempts=2, delivery_backoff=0.01, webhook_timeout=1, allow_private_webhooks=True)
    hook = {"trigger": "pending", "integration": "webhook:gone", "config": {"url": "http://127.0.0.1:9/"}}
    task = web.post(live.tasks_url, json={"name": "t", "actions": [hook]}, headers=live.headers()).json()
    action_id = web.get(f"{task['url']}actions/", headers=live.headers()).json()[0]["id"]
    assert wait_for(lambda: _action(live, task["url"], action_id)["status"] != "active")
    assert _action(live, task["url"], action_id)["status"].startswith("failed: webhook unreachable")


def test_embedded_writes_are_delivered_by_the_server(hook_server: LiveServer, receiver_factory: Any) -> None:
    receiver = receiver_factory([204])
    store = open_store(hook_server.store_url)
    try:
        with store.transaction() as tx:
            scope = tx.ensure_project("acme", "web")
            hook = {"trigger": "error", "integration": "webhook:x", "config": {"url": receiver.url}}
            task = tx.create_task(scope, {"name": "embedded", "actions": [hook]})
            tx.update_task(scope, task["id"], {"status": "error"})
    finally:
        store.close()
    assert wait_for(lambda: receiver.requests)
    assert receiver.requests[0][1]["name"] == "embedded"
    assert receiver.requests[0][1]["url"] == f"{hook_server.tasks_url}{task['id']}/"


def test_email_is_sent_through_smtp(server_factory: Any, smtp_sink: SmtpSink) -> None:
    live = server_factory(smtp=SmtpSettings("127.0.0.1", smtp_sink.port, sender="tr@example.com"))
    mail = {"trigger": "error", "integration": "email", "config": {"to": ["a@example.com", "b@example.com"]}}
    task = web.post(live.tasks_url, json={"name": "nightly", "actions": [mail]}, headers=live.headers()).json()
    web.patch(task["url"], json={"status": "error"}, headers=live.headers())
    assert wait_for(lambda: smtp_sink.messages)
    (message,) = smtp_sink.messages
    assert message["rcpt"] == ["to:<a@example.com>", "to:<b@example.com>"]
    assert message["from"].startswith("from:<tr@example.com>")
    assert "Subject: [taskreport] nightly: error" in message["data"]
    assert task["url"] in message["data"]


def test_email_without_smtp_is_recorded_as_not_configured(sqlite_server: LiveServer) -> None:
    mail = {"trigger": "pending", "integration": "email", "config": {"to": "a@example.com"}}
    task = web.post(sqlite_server.tasks_url, json={"name": "t", "actions": [mail]}, headers=sqlite_server.headers())
    url = task.json()["url"]
    action_id = web.get(f"{url}actions/", headers=sqlite_server.headers()).json()[0]["id"]
    assert wait_for(lambda: _action(sqlite_server, url, action_id)["status"] != "active")
    assert _action(sqlite_server, url, action_id)["status"] == (
        "failed: email is not configured on this server (taskreport serve --smtp-host)"
    )


def test_sweeper_marks_stale_and_overrunning_tasks(server_factory: Any) -> None:
    live = server_factory(sweep_interval=0.05)
    long_ago = time.time() - 100
    with live.app.store.transaction() as tx:
        scope = tx.ensure_project("acme", "web")
        stale = tx.create_task(scope, {"name": "quiet", "status": "processing", "stale_timeout": 10}, now=long_ago)
        slow = tx.create_task(scope, {"name": "slow", "status": "processing", "max_runtime": 50}, now=long_ago)
        fresh = tx.create_task(scope, {"name": "fresh", "status": "processing", "stale_timeout": 1000})
        done = tx.create_task(scope, {"name": "done", "status": "success", "stale_timeout": 1}, now=long_ago)

    def status(task: dict[str, Any]) -> str:
        url = f"{live.tasks_url}{task['id']}/"
        return str(web.get(url, headers=live.headers()).json()["status"])

    assert wait_for(lambda: status(stale) == "stale" and status(slow) == "error")
    slow_now = web.get(f"{live.tasks_url}{slow['id']}/", headers=live.headers()).json()
    assert "max_runtime" in slow_now["data"]["error"]
    assert status(fresh) == "processing" and status(done) == "success"


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_two_servers_on_one_database_deliver_each_firing_once(
    backend: str, server_factory: Any, receiver_factory: Any
) -> None:
    first = server_factory(backend, allow_private_webhooks=True)
    second = server_factory(backend, allow_private_webhooks=True)  # same database: the store fixtures are per test
    assert first.store_url == second.store_url
    receiver = receiver_factory([200])
    hook = {"trigger": "processing", "integration": "webhook:ci", "config": {"url": receiver.url}}
    ids = []
    for i in range(20):
        live = (first, second)[i % 2]
        task = web.post(live.tasks_url, json={"name": f"t{i}", "actions": [hook]}, headers=live.headers()).json()
        web.patch(task["url"], json={"status": "processing"}, headers=live.headers())
        ids.append(task["id"])
    assert wait_for(lambda: len(receiver.requests) >= 20)
    time.sleep(0.3)
    delivered = [body["id"] for _, body in receiver.requests]
    assert sorted(delivered) == sorted(ids)


def test_a_delivered_firing_is_recorded_and_never_sent_again(hook_server: LiveServer, receiver_factory: Any) -> None:
    # a short lease: a firing whose delivery was not recorded is claimed (and sent) again after it
    hook_server.app.deliverer.lease = 0.3
    receiver = receiver_factory([200])
    hook = {"trigger": "success", "integration": "webhook:ci", "config": {"url": receiver.url}}
    task = web.post(hook_server.tasks_url, json={"name": "t", "actions": [hook]}, headers=hook_server.headers())
    web.patch(task.json()["url"], json={"status": "success"}, headers=hook_server.headers())
    assert wait_for(lambda: receiver.requests)

    def states() -> list[str]:
        with hook_server.app.store.transaction(write=False) as tx:
            return [f["state"] for f in list_firings(tx.cur)]

    assert wait_for(lambda: states() == ["delivered"], timeout=2)
    time.sleep(1.0)  # several leases
    assert len(receiver.requests) == 1
    assert states() == ["delivered"]


def test_request_host_headers_never_reach_delivered_links(server_factory: Any, receiver_factory: Any) -> None:
    live = server_factory(base_url=None, allow_private_webhooks=True)
    receiver = receiver_factory([200])
    hook = {"trigger": "success", "integration": "webhook:ci", "config": {"url": receiver.url}}
    task = web.post(live.tasks_url, json={"name": "t", "actions": [hook]}, headers=live.headers()).json()
    # anyone, unauthenticated, with a forged Host
    assert web.get(f"{live.url}/api/ping/", headers={"Host": "evil.example"}).status_code == 200
    forged = {"Host": "evil.example", "Authorization": "Token nope"}
    assert web.get(live.tasks_url, headers=forged).status_code == 401
    # the firing is written without a request in between, as an embedded writer would
    with live.app.store.transaction() as tx:
        tx.update_task(tx.ensure_project("acme", "web"), task["id"], {"status": "success"})
    assert wait_for(lambda: receiver.requests)
    body = receiver.requests[0][1]
    assert body["url"] == f"{live.tasks_url}{task['id']}/"
    # public_url: the task's public dashboard page, on the bound address too
    assert body["public_url"] == task["public_url"] and body["public_url"].startswith(f"{live.url}/public/")


def test_webhooks_to_private_addresses_are_refused_by_default(sqlite_server: LiveServer, receiver_factory: Any) -> None:
    receiver = receiver_factory([200])
    port = receiver.server.server_address[1]
    hooks = [
        {"trigger": "pending", "integration": "webhook:a", "config": {"url": receiver.url}},
        {"trigger": "pending", "integration": "webhook:b", "config": {"url": f"http://localhost:{port}/"}},
        {"trigger": "pending", "integration": "webhook:c", "config": {"url": "http://169.254.169.254/latest/"}},
    ]
    live = sqlite_server
    task = web.post(live.tasks_url, json={"name": "t", "actions": hooks}, headers=live.headers()).json()
    actions_url = f"{task['url']}actions/"
    assert wait_for(lambda: all(a["status"] != "active" for a in web.get(actions_url, headers=live.headers()).json()))
    statuses = sorted(a["status"] for a in web.get(actions_url, headers=live.headers()).json())
    hint = "(taskreport serve --allow-private-webhooks allows it)"
    assert statuses[0] == f"failed: webhook refused: 127.0.0.1 is a loopback address {hint}"
    assert statuses[1] == f"failed: webhook refused: 169.254.169.254 is a link-local address {hint}"
    assert statuses[2].startswith("failed: webhook refused: localhost (") and "is a loopback address" in statuses[2]
    assert receiver.requests == []
    with live.app.store.transaction(write=False) as tx:
        # refused for good at the first attempt: retrying can not make the address public
        assert [(f["state"], f["attempts"]) for f in list_firings(tx.cur)] == [("failed", 1)] * 3


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "non-public"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback"),
        ("64:ff9b::a9fe:a9fe", "link-local"),
        ("93.184.216.34", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_refused_addresses(address: str, kind: str | None) -> None:
    assert refused_address(ipaddress.ip_address(address)) == kind


def test_every_address_of_a_webhook_name_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 443)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", 443)),
    ]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: answers)
    with pytest.raises(DeliveryError, match=r"hooks\.test \(10\.0\.0\.5\) is a private address") as raised:
        resolve_webhook("hooks.test", 443, allow_private=False)
    assert raised.value.retry is False
    assert len(resolve_webhook("hooks.test", 443, allow_private=True)) == 2


def test_a_webhook_connects_to_the_address_that_was_checked(
    monkeypatch: pytest.MonkeyPatch, receiver_factory: Any
) -> None:
    receiver = receiver_factory([200])
    port = receiver.server.server_address[1]
    resolved: list[str] = []

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        # the name resolves once; a second lookup (a rebinding attacker's next answer) would fail
        resolved.append(host)
        if len(resolved) > 1:
            raise socket.gaierror("resolved twice")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    post_webhook(f"http://hooks.test:{port}/hook", b"{}", {}, 5, allow_private=True)
    assert resolved == ["hooks.test"]
    (headers, _body) = receiver.requests[0]
    assert headers["Host"] == f"hooks.test:{port}"  # the name, not the address


def test_email_domains_limit_the_recipients(server_factory: Any, smtp_sink: SmtpSink) -> None:
    live = server_factory(smtp=SmtpSettings("127.0.0.1", smtp_sink.port), email_domains=frozenset({"Example.com"}))
    ok = {"trigger": "pending", "integration": "email", "config": {"to": "ops@EXAMPLE.com"}}
    mixed = {"trigger": "pending", "integration": "email", "config": {"to": ["a@example.com", "x@evil.example"]}}
    task = web.post(live.tasks_url, json={"name": "t", "actions": [ok, mixed]}, headers=live.headers()).json()
    actions_url = f"{task['url']}actions/"

    def states() -> list[str]:
        with live.app.store.transaction(write=False) as tx:
            return sorted(f["state"] for f in list_firings(tx.cur))

    assert wait_for(lambda: states() == ["delivered", "failed"])
    assert [m["rcpt"] for m in smtp_sink.messages] == [["to:<ops@EXAMPLE.com>"]]
    statuses = sorted(a["status"] for a in web.get(actions_url, headers=live.headers()).json())
    assert statuses == [
        "active",
        "failed: email to x@evil.example refused: not in the server's email domains (taskreport serve --email-domains)",
    ]
