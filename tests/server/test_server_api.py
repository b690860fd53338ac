"""The task and action endpoints over HTTP against a real server, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import web
from server_fixtures import LiveServer


def _client(live: LiveServer) -> httpx.Client:
    return web.client(base_url=live.url, headers=live.headers(), timeout=10)


def test_task_lifecycle(live_server: LiveServer) -> None:
    with _client(live_server) as http:
        created = http.post(live_server.tasks_url, json={"name": "import", "value_max": 200, "tags": {"env": "prod"}})
        assert created.status_code == 201
        task = created.json()
        assert task["status"] == "pending"
        assert task["organization"] == "acme" and task["project"] == "web"
        assert task["url"] == f"{live_server.tasks_url}{task['id']}/"
        assert task["public_url"].startswith("http://127.0.0.1:")
        assert task["created"].endswith("Z")

        patched = http.patch(task["url"], json={"value": 50, "status": "processing"}).json()
        assert patched["value"] == 50 and patched["value_percent"] == 25
        assert patched["start_time"].endswith("Z")
        assert float(patched["time_to_start"]) >= 0

        # a stock client's PUT echoes read-only fields back: they are ignored, as DRF does
        put = http.put(task["url"], json={**patched, "name": "import v2", "value_percent": 99, "bogus": 1})
        assert put.status_code == 200
        assert put.json()["name"] == "import v2" and put.json()["value_percent"] == 25

        fetched = http.get(task["url"]).json()
        assert fetched["name"] == "import v2" and fetched["tags"] == {"env": "prod"}

        assert http.delete(task["url"]).status_code == 204
        cancelled = http.get(task["url"]).json()
        assert cancelled["status"] == "cancelled" and cancelled["end_time"] is not None


def test_links_follow_the_host_header_without_a_base_url(server_factory: Any) -> None:
    live = server_factory(base_url=None)
    headers = {**live.headers(), "Host": "tasks.example.com"}
    task = web.post(live.tasks_url, json={"name": "t"}, headers=headers).json()
    assert task["url"] == f"http://tasks.example.com/api/acme/web/tasks/{task['id']}/"
    web.post(live.tasks_url, json={"name": "u"}, headers=headers)
    page = web.get(live.tasks_url, params={"page_size": 1}, headers=headers).json()
    assert page["next"].startswith("http://tasks.example.com/api/acme/web/tasks/?page_size=1&cursor=")
    # each request's own Host, however many hosts came before it (the server remembers a few base URLs)
    task_url = f"{live.tasks_url}{task['id']}/"
    for n in [*range(80), 3]:
        host = f"h{n}.example.com:8{n:03d}"
        got = web.get(task_url, headers={**live.headers(), "Host": host}).json()
        assert got["url"] == f"http://{host}/api/acme/web/tasks/{task['id']}/"


def test_paths_work_with_and_without_trailing_slash(sqlite_server: LiveServer) -> None:
    base = f"/api/{sqlite_server.organization}/{sqlite_server.project}/tasks"
    with _client(sqlite_server) as http:
        task = http.post(base, json={"name": "a"}).json()
        assert http.get(f"{base}/{task['id']}").json()["id"] == task["id"]
        assert http.patch(f"{base}/{task['id']}", json={"value": 3}).json()["value"] == 3
        assert http.get(base).json()["results"][0]["id"] == task["id"]
        action = {"trigger": "success", "integration": "email", "config": {"to": "a@example.com"}}
        made = http.post(f"{base}/{task['id']}/actions", json=action)
        assert made.status_code == 201
        assert http.get(f"{base}/{task['id']}/actions/{made.json()['id']}").status_code == 200


def test_pagination_walks_forward_and_back(live_server: LiveServer) -> None:
    with _client(live_server) as http:
        ids = [http.post(live_server.tasks_url, json={"name": f"t{i}"}).json()["id"] for i in range(7)]
        newest_first = list(reversed(ids))
        pages = []
        url: str | None = f"{live_server.tasks_url}?page_size=3"
        first = None
        while url:
            body = http.get(url).json()
            first = first or body
            pages.append([t["id"] for t in body["results"]])
            url = body["next"]
        assert pages == [newest_first[0:3], newest_first[3:6], newest_first[6:7]]
        assert first is not None and first["previous"] is None
        # next/previous are full URLs that keep page_size and filters
        second = http.get(first["next"]).json()
        assert first["next"].startswith(live_server.url) and "page_size=3" in first["next"]
        back = http.get(second["previous"]).json()
        assert [t["id"] for t in back["results"]] == newest_first[0:3]
        assert http.get(live_server.tasks_url, params={"page_size": 0}).status_code == 400


def test_list_filters(live_server: LiveServer) -> None:
    with _client(live_server) as http:
        parent = http.post(live_server.tasks_url, json={"name": "parent", "status": "processing"}).json()
        child = http.post(
            live_server.tasks_url,
            json={"name": "child", "parent": parent["id"], "tags": {"env": "prod", "team": "data"}},
        ).json()
        done = http.post(
            live_server.tasks_url, json={"name": "other", "status": "success", "external_id": "celery-1"}
        ).json()

        def ids(**params: object) -> set[str]:
            response = http.get(live_server.tasks_url, params=params)  # type: ignore[arg-type]
            assert response.status_code == 200, response.text
            return {t["id"] for t in response.json()["results"]}

        assert ids(status="processing,success") == {parent["id"], done["id"]}
        assert ids(name="child") == {child["id"]}
        assert ids(parent=parent["id"]) == {child["id"]}
        assert ids(external_id="celery-1") == {done["id"]}
        assert ids(tag="env:prod") == {child["id"]}
        assert ids(tag=["env:prod", "team:data"]) == {child["id"]}
        assert ids(tag=["env:prod", "team:ops"]) == set()
        bad = http.get(live_server.tasks_url, params={"status": "running"})
        assert bad.status_code == 400 and bad.json()["errors"][0]["attr"] == "status"
        assert bad.json()["errors"][0]["code"] == "invalid_choice"
        bad = http.get(live_server.tasks_url, params={"status": ["processing", "success,running"]})
        assert bad.status_code == 400 and bad.json()["errors"][0]["attr"] == "status"
        for tags in ("env", ":prod", ["env:prod", "team"]):
            bad = http.get(live_server.tasks_url, params={"tag": tags})
            assert bad.status_code == 400 and bad.json()["errors"][0]["attr"] == "tag"
        assert ids(status="") == {parent["id"], child["id"], done["id"]}


def test_actions_crud_and_in_task_bodies(live_server: LiveServer) -> None:
    with _client(live_server) as http:
        webhook = {"trigger": "*/25%", "integration": "webhook:ci", "config": {"url": "http://127.0.0.1:9/x"}}
        task = http.post(live_server.tasks_url, json={"name": "t", "actions": [webhook]}).json()
        actions_url = f"{task['url']}actions/"
        listed = http.get(actions_url).json()
        assert [(a["trigger"], a["integration"], a["status"]) for a in listed] == [("*/25%", "webhook:ci", "active")]
        assert listed[0]["task"] == task["id"] and listed[0]["created"].endswith("Z")

        email = {"trigger": "success,error", "integration": "email", "config": {"to": "ops@example.com"}}
        http.patch(task["url"], json={"actions": [email]})
        assert len(http.get(actions_url).json()) == 2

        made = http.post(actions_url, json={**email, "trigger": "90%"}).json()
        one = f"{actions_url}{made['id']}/"
        assert http.patch(one, json={"trigger": "95%"}).json()["trigger"] == "95%"
        replaced = http.put(one, json={"trigger": "stale", "integration": "email", "config": {"to": "x@example.com"}})
        assert replaced.json()["config"] == {"to": "x@example.com"}
        assert http.delete(one).status_code == 204
        assert http.get(one).json()["status"] == "cancelled"

        invalid = http.post(actions_url, json={"trigger": "soon", "integration": "email", "config": {"to": "a@b.c"}})
        assert invalid.status_code == 400 and invalid.json()["errors"][0]["attr"] == "trigger"
        # a PATCH is checked against the action as it will be: an email action can't lose its address
        no_to = http.patch(f"{actions_url}{listed[0]['id']}/", json={"integration": "email"})
        assert no_to.status_code == 400 and no_to.json()["errors"][0]["attr"] == "config"
        in_task = http.post(
            live_server.tasks_url, json={"name": "t", "actions": [{"trigger": "1", "integration": "x"}]}
        )
        assert in_task.status_code == 400 and in_task.json()["errors"][0]["attr"] == "actions.0.integration"
        assert http.get(f"{actions_url}999999/").status_code == 404
        assert http.get(f"{actions_url}abc/").status_code == 404


def test_validation_errors_name_the_field(live_server: LiveServer) -> None:
    with _client(live_server) as http:
        missing = http.post(live_server.tasks_url, json={"value": 1})
        assert missing.status_code == 400
        assert missing.json() == {
            "type": "client_error",
            "errors": [{"code": "required", "detail": "This field is required.", "attr": "name"}],
        }
        task = http.post(live_server.tasks_url, json={"name": "t"}).json()
        for body, attr in [
            ({"value": -1}, "value"),
            ({"status": "running"}, "status"),
            ({"max_runtime": 0}, "max_runtime"),
            ({"name": "x" * 256}, "name"),
            ({"parent": "nope"}, "parent"),
        ]:
            response = http.patch(task["url"], json=body)
            assert response.status_code == 400, body
            assert response.json()["type"] == "client_error"
            assert response.json()["errors"][0]["attr"] == attr
        assert http.get(f"{live_server.tasks_url}does-not-exist/").status_code == 404


def test_schema_is_served_as_yaml_and_json(sqlite_server: LiveServer) -> None:
    yaml_text = web.get(f"{sqlite_server.url}/api/schema/").text
    assert yaml_text.startswith("openapi: 3.0.3")
    as_json = web.get(f"{sqlite_server.url}/api/schema/", params={"format": "json"})
    assert as_json.headers["content-type"].startswith("application/vnd.oai.openapi+json")
    schema = as_json.json()
    assert "/api/{organization_slug}/{project_slug}/tasks/" in schema["paths"]
    assert web.get(f"{sqlite_server.url}/api/schema/", headers={"Accept": "application/json"}).json() == schema


def test_shipped_schema_is_the_reference_with_our_extensions() -> None:
    import taskreport.server
    from taskreport.server._schema import build

    package = Path(taskreport.server.__file__).parent
    reference = Path(__file__).resolve().parents[3] / "shared" / "spec" / "taskbadger-openapi.yaml"
    if not reference.exists():
        pytest.skip("../shared/spec is not beside this checkout")
    yaml = pytest.importorskip("yaml")
    expected = build(yaml.safe_load(reference.read_text()))
    assert json.loads((package / "openapi.json").read_text()) == expected
    assert yaml.safe_load((package / "openapi.yaml").read_text()) == expected
    # what the extensions add, and nothing of the reference is lost
    task = expected["components"]["schemas"]["Task"]["properties"]
    assert task["ref"]["nullable"] and task["queue"]["nullable"] and task["external_id"]["nullable"]
    original = yaml.safe_load(reference.read_text())
    assert set(original["paths"]) < set(expected["paths"])
    assert set(original["components"]["schemas"]) < set(expected["components"]["schemas"])


def test_idempotency_key_header_makes_a_repeated_create_return_the_same_task(live_server: LiveServer) -> None:
    headers = {**live_server.headers(), "Idempotency-Key": "create-1"}
    first = requests.post(live_server.tasks_url, json={"name": "once"}, headers=headers, timeout=10)
    again = requests.post(live_server.tasks_url, json={"name": "once", "value": 3}, headers=headers, timeout=10)
    # the key is the task's ref; the repeat is a replay: 200, and the task as the first create left it
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"] and again.json()["value"] is None
    assert first.json()["ref"] == again.json()["ref"] == "create-1"
    found = requests.get(live_server.tasks_url, params={"ref": "create-1"}, headers=live_server.headers(), timeout=10)
    assert [t["id"] for t in found.json()["results"]] == [first.json()["id"]]
    listed = requests.get(live_server.tasks_url, headers=live_server.headers(), timeout=10).json()["results"]
    assert len(listed) == 1
    too_long = {**live_server.headers(), "Idempotency-Key": "k" * 256}
    bad = requests.post(live_server.tasks_url, json={"name": "x"}, headers=too_long, timeout=10)
    assert bad.status_code == 400 and bad.json()["errors"][0]["attr"] == "Idempotency-Key"


def test_idempotency_key_header_makes_a_repeated_action_post_add_one_action(live_server: LiveServer) -> None:
    with _client(live_server) as http:
        task = http.post(live_server.tasks_url, json={"name": "t"}).json()
        other = http.post(live_server.tasks_url, json={"name": "u"}).json()
        url = f"{task['url']}actions/"
        action = {"trigger": "success", "integration": "email", "config": {"to": "ops@example.com"}}
        first = http.post(url, json=action, headers={"Idempotency-Key": "a-1"})
        again = http.post(url, json={**action, "trigger": "error"}, headers={"Idempotency-Key": "a-1"})
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json() and again.json()["trigger"] == "success"
        second = http.post(url, json=action, headers={"Idempotency-Key": "a-2"})
        unkeyed = [http.post(url, json=action).json()["id"] for _ in range(2)]
        # keys are per task
        elsewhere = http.post(f"{other['url']}actions/", json=action, headers={"Idempotency-Key": "a-1"})
        assert elsewhere.status_code == 201 and elsewhere.json()["task"] == other["id"]
        ids = [a["id"] for a in http.get(url).json()]
        assert ids == [first.json()["id"], second.json()["id"], *unkeyed]
        too_long = http.post(url, json=action, headers={"Idempotency-Key": "k" * 256})
        assert too_long.status_code == 400 and too_long.json()["errors"][0]["attr"] == "Idempotency-Key"


def test_a_scope_that_gives_its_server_as_a_list_is_served(sqlite_url: str) -> None:
    # the ASGI spec allows "server" as a two-item list (Starlette's test client sends one): links follow Host
    from taskreport.server import ServerSettings, create_app

    app = create_app(ServerSettings(store_url=sqlite_url, sweep_interval=0))
    with app.store.transaction() as tx:
        tx.ensure_project("acme", "web")
        token = tx.create_token("acme", name="in process")

    async def call(method: str, path: str, host: bytes, body: bytes = b"") -> tuple[int, Any]:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": [(b"host", host), (b"authorization", f"Token {token}".encode()),
                             (b"content-type", b"application/json")],
                 "client": ["127.0.0.1", 5000], "server": ["127.0.0.1", 8000]}  # fmt: skip
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return sent[0]["status"], json.loads(sent[1]["body"])

    async def scenario() -> None:
        try:
            status, made = await call("POST", "/api/acme/web/tasks/", b"testserver", b'{"name": "t"}')
            assert status == 201, made
            assert made["url"] == f"http://testserver/api/acme/web/tasks/{made['id']}/"
            status, again = await call("GET", f"/api/acme/web/tasks/{made['id']}/", b"tasks.example.com")
            assert (status, again["url"]) == (200, f"http://tasks.example.com/api/acme/web/tasks/{made['id']}/")
        finally:
            await app.shutdown()

    asyncio.run(scenario())
