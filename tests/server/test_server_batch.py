"""``POST .../tasks/batch/`` against a real server, on SQLite and on PostgreSQL: results in order, partial
failure, the same auth, tenancy and limits as every endpoint, replays, and the single endpoints' validation."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
import web
from server_fixtures import LiveServer

from taskreport.server import RateLimit


def ref(name: str) -> str:
    return f"{name}-".ljust(20, "x")


def batch_url(live: LiveServer) -> str:
    return f"{live.tasks_url}batch/"


def send(method: str, url: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    # json.dumps escapes what httpx's json= can not encode (a lone surrogate, sent as the escape "\udfff")
    headers = {**headers, "Content-Type": "application/json"}
    return web.request(method, url, content=json.dumps(body), headers=headers, timeout=20)


def post(live: LiveServer, operations: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return send("POST", batch_url(live), {"operations": operations}, {**live.headers(), **(headers or {})})


def get_task(live: LiveServer, task_id: str) -> dict[str, Any]:
    response = web.get(f"{live.tasks_url}{task_id}/", headers=live.headers())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_operations_are_applied_in_order_with_one_result_each(live_server: LiveServer) -> None:
    made = web.post(live_server.tasks_url, json={"name": "by id"}, headers=live_server.headers()).json()
    response = post(
        live_server,
        [
            {"op": "create", "ref": ref("parent"), "fields": {"name": "parent", "status": "processing"}},
            {"op": "create", "ref": ref("child"), "fields": {"name": "child"}, "parent_ref": ref("parent")},
            {"op": "update", "ref": ref("child"), "fields": {"value": 5}},
            {"op": "update", "ref": ref("early"), "fields": {"status": "success"}},
            {"op": "update", "id": made["id"], "fields": {"status": "success"}},
        ],
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 201, 200, 200, 200]
    assert [r["ref"] for r in results] == [ref("parent"), ref("child"), ref("child"), ref("early"), None]
    parent, child, _, early, by_id = (get_task(live_server, r["id"]) for r in results)
    assert results[1]["id"] == results[2]["id"]
    assert (child["parent"], child["value"], child["ref"]) == (parent["id"], 5, ref("child"))
    # an update by ref before its create: a placeholder named after the ref, which a create fills in later
    assert (early["name"], early["status"]) == (ref("early"), "success")
    assert by_id["status"] == "success"
    # without the trailing slash too
    plain = web.post(live_server.tasks_url + "batch", json={"operations": []}, headers=live_server.headers())
    assert plain.status_code == 200 and plain.json() == {"results": []}


def test_a_failing_operation_fails_alone(live_server: LiveServer) -> None:
    response = post(
        live_server,
        [
            {"op": "create", "ref": ref("one"), "fields": {"name": "one"}},
            {"op": "create", "ref": ref("two"), "fields": {"name": "two", "value": -1}},
            {"op": "update", "id": "no-such-task", "fields": {"value": 1}},
            {"op": "create", "ref": ref("three"), "fields": {"name": "three", "parent": "no-such-task"}},
            {"op": "create", "ref": ref("four"), "fields": {"name": "four"}},
        ],
    )
    assert response.status_code == 200
    one, two, missing, orphan, four = response.json()["results"]
    assert (one["status"], four["status"]) == (201, 201)
    assert two["status"] == 400 and two["type"] == "client_error"
    assert two["errors"] == [
        {"code": "min_value", "detail": "must be greater than or equal to 0.", "attr": "fields.value"}
    ]
    assert missing == {"status": 404, "type": "client_error",
                       "errors": [{"code": "not_found", "detail": "Not found.", "attr": None}]}  # fmt: skip
    assert orphan["status"] == 400 and orphan["errors"][0]["attr"] == "fields.parent"
    listed = web.get(live_server.tasks_url, headers=live_server.headers()).json()["results"]
    assert sorted(t["name"] for t in listed) == ["four", "one"]


@pytest.mark.parametrize(
    ("operation", "attr", "code"),
    [
        ("not an object", "op", "invalid"),
        ({"ref": ref("a"), "fields": {"name": "a"}}, "op", "required"),
        ({"op": "delete", "ref": ref("a")}, "op", "invalid_choice"),
        ({"op": "create", "fields": {"name": "a"}}, "ref", "required"),
        ({"op": "create", "ref": "short", "fields": {"name": "a"}}, "ref", "invalid"),
        ({"op": "create", "ref": ref("a") + "!", "fields": {"name": "a"}}, "ref", "invalid"),
        ({"op": "create", "ref": ref("a"), "id": "x", "fields": {"name": "a"}}, "id", "invalid"),
        ({"op": "update", "fields": {"value": 1}}, "ref", "required"),
        ({"op": "update", "ref": ref("a"), "id": "x", "fields": {}}, "id", "invalid"),
        ({"op": "update", "id": 7, "fields": {}}, "id", "invalid"),
        ({"op": "update", "ref": ref("a"), "parent_ref": "bad ref", "fields": {}}, "parent_ref", "invalid"),
        ({"op": "create", "ref": ref("a"), "parent_ref": ref("a"), "fields": {"name": "a"}}, "parent_ref", "invalid"),
        ({"op": "create", "ref": ref("a")}, "fields.name", "required"),
        ({"op": "create", "ref": ref("a"), "fields": []}, "fields", "not_a_dict"),
    ],
)
def test_a_malformed_operation_names_its_part(
    sqlite_server: LiveServer, operation: Any, attr: str, code: str
) -> None:
    response = post(sqlite_server, [operation, {"op": "create", "ref": ref("fine"), "fields": {"name": "ok"}}])
    assert response.status_code == 200
    bad, fine = response.json()["results"]
    assert bad["status"] == 400 and (bad["errors"][0]["attr"], bad["errors"][0]["code"]) == (attr, code), bad
    assert fine["status"] == 201


@pytest.mark.parametrize(
    "body",
    [{}, {"operations": {}}, {"operations": "x"}, [], {"ops": []}],
)
def test_a_body_that_is_not_a_list_of_operations_is_a_400(sqlite_server: LiveServer, body: Any) -> None:
    response = web.post(batch_url(sqlite_server), json=body, headers=sqlite_server.headers())
    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == "operations"


def test_limits_apply_to_the_whole_request(server_factory: Any) -> None:
    live = server_factory(max_batch_ops=3, max_body_bytes=2000)
    over = post(live, [{"op": "update", "ref": ref(f"r{i}"), "fields": {}} for i in range(4)])
    assert over.status_code == 400 and over.json()["errors"][0]["attr"] == "operations"
    assert "at most 3" in over.json()["errors"][0]["detail"]
    big = post(live, [{"op": "create", "ref": ref("r"), "fields": {"name": "x", "data": "y" * 3000}}])
    assert big.status_code == 413
    assert post(live, [{"op": "update", "ref": ref(f"r{i}"), "fields": {}} for i in range(3)]).status_code == 200
    # nothing of a refused request was written
    names = {t["name"] for t in web.get(live.tasks_url, headers=live.headers()).json()["results"]}
    assert names == {ref(f"r{i}") for i in range(3)}


def test_the_same_checks_as_every_endpoint(sqlite_server: LiveServer) -> None:
    url, ok = batch_url(sqlite_server), {"operations": []}
    assert web.post(url, json=ok).status_code == 401
    assert web.post(url, json=ok, headers=sqlite_server.headers("trk_wrong")).status_code == 401
    wrong_type = {**sqlite_server.headers(), "Content-Type": "application/xml"}
    assert web.post(url, content=b"<x/>", headers=wrong_type).status_code == 415
    assert web.post(url, json=ok, headers={**sqlite_server.headers(), "Accept": "text/html"}).status_code == 406
    malformed = web.post(url, content=b"{", headers={**sqlite_server.headers(), "Content-Type": "application/json"})
    assert malformed.status_code == 400 and malformed.json()["errors"][0]["code"] == "parse_error"
    listing = web.get(url, headers=sqlite_server.headers())
    assert listing.status_code == 405 and listing.headers["allow"] == "POST"


def test_tenancy(sqlite_server: LiveServer) -> None:
    other_org = sqlite_server.new_org_token("other-org")
    operations = [{"op": "create", "ref": ref("t"), "fields": {"name": "t"}}]
    assert post(sqlite_server, operations, headers=sqlite_server.headers(other_org)).status_code == 404
    with sqlite_server.app.store.transaction() as tx:
        tx.ensure_project("acme", "elsewhere")
    elsewhere = base64.b64encode(f"acme/elsewhere/{sqlite_server.token}".encode()).decode()
    assert post(sqlite_server, operations, headers=sqlite_server.headers(elsewhere)).status_code == 404
    assert web.get(sqlite_server.tasks_url, headers=sqlite_server.headers()).json()["results"] == []
    own = base64.b64encode(f"acme/web/{sqlite_server.token}".encode()).decode()
    assert post(sqlite_server, operations, headers=sqlite_server.headers(own)).json()["results"][0]["status"] == 201


def test_a_batch_counts_as_one_request_for_the_rate_limit(server_factory: Any) -> None:
    live = server_factory(rate_limit=RateLimit(2, 60.0))
    operations = [{"op": "update", "ref": ref(f"r{i}"), "fields": {}} for i in range(10)]
    assert [post(live, operations).status_code for _ in range(3)] == [200, 200, 429]


def test_a_batch_sent_again_makes_nothing_twice(live_server: LiveServer) -> None:
    action = {"trigger": "success", "integration": "email", "config": {"to": "ops@example.com"}}
    operations = [
        {"op": "create", "ref": ref("a"), "fields": {"name": "a", "actions": [action]}},
        {"op": "create", "ref": ref("b"), "fields": {"name": "b"}, "parent_ref": ref("a")},
        {"op": "update", "ref": ref("b"), "fields": {"value": 3}},
    ]
    first = post(live_server, operations).json()["results"]
    again = post(live_server, operations).json()["results"]
    assert [r["status"] for r in first] == [201, 201, 200]
    assert [r["status"] for r in again] == [200, 200, 200]  # the creates are replays
    assert [r["id"] for r in again] == [r["id"] for r in first]
    listed = web.get(live_server.tasks_url, headers=live_server.headers()).json()["results"]
    assert len(listed) == 2
    actions = web.get(f"{live_server.tasks_url}{first[0]['id']}/actions/", headers=live_server.headers()).json()
    assert len(actions) == 1


BAD_FIELDS = [
    {"value": -1},
    {"status": "running"},
    {"name": ""},
    {"name": "x" * 256},
    {"name": 7},
    {"tags": {"env": "x"}},
    {"tags": "env:prod"},
    {"start_time": "yesterday"},
    {"end_time": 10**400},
    {"max_runtime": 0},
    {"value_max": None},
    {"data": {"text": "\udfff"}},
    {"actions": [{"trigger": "sometimes", "integration": "email", "config": {"to": "a@example.com"}}]},
    {"actions": [{"trigger": "success", "integration": "webhook:x", "config": {}}]},
    {"actions": "none"},
]


@pytest.mark.parametrize("fields", BAD_FIELDS)
def test_fields_are_checked_as_the_single_endpoints_check_them(sqlite_server: LiveServer, fields: Any) -> None:
    headers = sqlite_server.headers()
    created = send("POST", sqlite_server.tasks_url, {"name": "t", **fields}, headers)
    task = web.post(sqlite_server.tasks_url, json={"name": "t"}, headers=headers).json()
    patched = send("PATCH", f"{sqlite_server.tasks_url}{task['id']}/", fields, headers)
    results = post(
        sqlite_server,
        [
            {"op": "create", "ref": ref("c"), "fields": {"name": "t", **fields}},
            {"op": "update", "id": task["id"], "fields": fields},
            {"op": "update", "ref": ref("u"), "fields": fields},
        ],
    ).json()["results"]
    for single, item in ((created, results[0]), (patched, results[1]), (patched, results[2])):
        assert single.status_code == item["status"] == 400, (single.text, item)
        (expected,) = single.json()["errors"]
        (got,) = item["errors"]
        assert (got["code"], got["detail"]) == (expected["code"], expected["detail"])
        assert got["attr"] == f"fields.{expected['attr']}"


def test_every_response_says_what_this_server_offers(sqlite_server: LiveServer) -> None:
    headers = sqlite_server.headers()
    responses = [
        post(sqlite_server, []),
        web.get(sqlite_server.tasks_url, headers=headers),
        web.get(f"{sqlite_server.url}/api/ping/"),
        web.get(f"{sqlite_server.url}/api/schema/"),
        web.get(f"{sqlite_server.url}/nowhere"),
        web.get(sqlite_server.tasks_url),
        web.delete(sqlite_server.tasks_url, headers=headers),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 404, 401, 405]
    assert {r.headers.get("x-taskreport-features") for r in responses} == {"batch, refs"}


def test_the_batch_operation_is_in_the_served_schema(sqlite_server: LiveServer) -> None:
    schema = web.get(f"{sqlite_server.url}/api/schema/", params={"format": "json"}).json()
    operation = schema["paths"]["/api/{organization_slug}/{project_slug}/tasks/batch/"]["post"]
    assert operation["operationId"] == "task_batch"
    assert schema["components"]["schemas"]["TaskBatchRequest"]["properties"]["operations"]["maxItems"] == 1000


@pytest.mark.postgres
def test_batches_that_name_tasks_in_opposite_orders_never_deadlock(
    server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Concurrent batches that make the same tasks by ref in opposite orders (a Celery publisher and its
    worker) would deadlock on PostgreSQL, each holding an index entry the other waits for: a second each until
    PostgreSQL notices, then an item answered with a 500. Every operation gets its real answer, promptly."""
    import threading

    live = server_factory("postgresql")
    failures: list[str] = []

    def client(k: int, refs: list[str]) -> None:
        order = refs if k % 2 else refs[::-1]
        operations = [{"op": "update", "ref": r, "fields": {"value": k}} for r in order]
        with web.client(headers=live.headers(), timeout=60) as http:
            answer = http.post(batch_url(live), json={"operations": operations})
        if answer.status_code != 200:
            failures.append(f"{answer.status_code} {answer.text[:200]}")
            return
        failures.extend(str(r) for r in answer.json()["results"] if r["status"] != 200)

    for round_ in range(6):
        refs = [ref(f"r{round_}-{n}") for n in range(12)]
        threads = [threading.Thread(target=client, args=(k, refs)) for k in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for r in refs:
            listed = web.get(live.tasks_url, params={"ref": r}, headers=live.headers()).json()
            assert len(listed["results"]) == 1, r
    assert failures == []
    assert "a batch operation failed" not in caplog.text
