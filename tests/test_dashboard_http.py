"""The dashboard over plain HTTP against real servers: sessions, CSRF, tenancy, the public page, bad input and the
live streams (including changes written by other processes and other servers on the same database)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
import web
from dashboard_support import PASSWORD, USER, SseReader, csrf_of, sign_in


@pytest.fixture
def server(server_factory: Any) -> Any:
    live = server_factory("sqlite")
    live.create_user(USER, PASSWORD)
    return live


def new_task(server: Any, **fields: Any) -> dict[str, Any]:
    answer = web.post(server.tasks_url, json={"name": "job", **fields}, headers=server.headers())
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def api_task(server: Any, task_id: str) -> dict[str, Any]:
    return dict(web.get(f"{server.tasks_url}{task_id}/", headers=server.headers()).json())


# -- sessions -------------------------------------------------------------------------------------------
def test_signing_in_sets_a_session_cookie_that_opens_the_dashboard_only(server: Any) -> None:
    client = sign_in(server.url)
    cookie = next(c for c in client.cookies.jar if c.name == "taskreport_session")
    header = client.get("/login").request.headers.get("cookie")
    assert header and "taskreport_session" in header
    assert cookie.has_nonstandard_attr("HttpOnly") and cookie.get_nonstandard_attr("SameSite") == "lax"
    assert not cookie.secure
    assert client.get("/p/acme/web/").status_code == 200
    # the session is no credential for the API, and an API token none for the dashboard
    assert client.get("/api/acme/web/tasks/").status_code == 401
    answer = web.get(server.url + "/p/acme/web/", headers=server.headers())
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login")


def test_the_cookie_is_secure_when_the_server_is_reached_over_https(server_factory: Any) -> None:
    live = server_factory("sqlite", base_url="https://tasks.example.com")
    live.create_user(USER, PASSWORD)
    page = web.get(live.url + "/login")
    assert "secure" in page.headers["set-cookie"].lower()
    # a browser sends a Secure cookie over HTTPS only: the TLS proxy in front of this server is played here
    nonce = page.cookies["taskreport_login"]
    answer = web.post(live.url + "/login", data={"csrf": csrf_of(page.text), "username": USER, "password": PASSWORD},
                        headers={"Origin": "https://tasks.example.com", "Cookie": f"taskreport_login={nonce}"},
                        timeout=30)  # fmt: skip
    assert answer.status_code == 303
    assert "secure" in answer.headers["set-cookie"].lower() and "httponly" in answer.headers["set-cookie"].lower()


def test_wrong_passwords_and_unknown_users_are_refused_alike(server: Any) -> None:
    client = web.client(base_url=server.url, timeout=30)
    for username, password in ((USER, "wrong password"), ("nobody", PASSWORD)):
        page = client.get("/login")
        answer = client.post("/login", data={"csrf": csrf_of(page.text), "username": username, "password": password})
        assert answer.status_code == 401
        assert "Wrong username or password." in answer.text
    assert "taskreport_session" not in client.cookies


def test_sign_in_is_rate_limited_with_the_api_login(server_factory: Any) -> None:
    from taskreport.server import RateLimit

    live = server_factory("sqlite", login_rate_limit=RateLimit(3, 3600))
    live.create_user(USER, PASSWORD)
    client = web.client(base_url=live.url, timeout=30)
    assert client.post("/api/authenticate/", data={"username": USER, "password": "x"}).status_code == 401
    statuses = []
    for _ in range(3):
        page = client.get("/login")
        statuses.append(client.post("/login", data={"csrf": csrf_of(page.text), "username": USER,
                                                    "password": "wrong"}).status_code)  # fmt: skip
    assert statuses == [401, 401, 429]
    page = client.get("/login")
    answer = client.post("/login", data={"csrf": csrf_of(page.text), "username": USER, "password": PASSWORD})
    assert answer.status_code == 429 and int(answer.headers["retry-after"]) > 0


def test_signing_out_ends_the_session_in_every_server_process(server: Any, server_factory: Any) -> None:
    from server_fixtures import start_server

    other, stop = start_server(server.store_url)
    try:
        client = sign_in(server.url)
        elsewhere = web.client(base_url=other.url, cookies=client.cookies, timeout=30)
        assert elsewhere.get("/p/acme/web/").status_code == 200
        page = client.get("/p/acme/web/")
        assert client.post("/logout", data={"csrf": csrf_of(page.text)}).status_code == 303
        assert elsewhere.get("/p/acme/web/").status_code == 303
        assert client.get("/p/acme/web/").status_code == 303
    finally:
        stop()


def test_a_next_page_after_sign_in_stays_on_this_site(server: Any) -> None:
    client = web.client(base_url=server.url, timeout=30)
    for target, expected in (("/p/acme/web/?status=error", "/p/acme/web/?status=error"), ("//evil.example/", "/"),
                             ("https://evil.example/", "/")):  # fmt: skip
        client.cookies.clear()
        page = client.get("/login", params={"next": target})
        answer = client.post("/login", data={"csrf": csrf_of(page.text), "username": USER, "password": PASSWORD,
                                             "next": target})  # fmt: skip
        assert answer.headers["location"] == expected


# -- CSRF -----------------------------------------------------------------------------------------------
def test_posts_without_a_valid_csrf_token_are_refused(server: Any) -> None:
    task = new_task(server, status="processing")
    client = sign_in(server.url)
    other = sign_in(server.url)
    foreign = csrf_of(other.get("/p/acme/web/").text)
    base = f"/p/acme/web/tasks/{task['id']}"
    for data in ({}, {"csrf": "forged"}, {"csrf": foreign}):
        assert client.post(f"{base}/cancel", data=data).status_code == 403
        answer = client.post(f"{base}/actions", data={**data, "trigger": "success", "integration": "email",
                                                      "config": '{"to": "a@example.com"}'})  # fmt: skip
        assert answer.status_code == 403
        assert client.post("/logout", data=data).status_code == 403
    assert api_task(server, task["id"])["status"] == "processing"
    assert web.get(f"{server.tasks_url}{task['id']}/actions/", headers=server.headers()).json() == []
    assert client.get("/p/acme/web/").status_code == 200  # still signed in
    # a sign-in form needs its own token too (login CSRF)
    fresh = web.client(base_url=server.url, timeout=30)
    assert fresh.post("/login", data={"username": USER, "password": PASSWORD}).status_code == 403


def test_a_post_from_another_site_is_refused_even_with_a_token(server: Any) -> None:
    task = new_task(server, status="processing")
    client = sign_in(server.url)
    token = csrf_of(client.get("/p/acme/web/").text)
    answer = client.post(f"/p/acme/web/tasks/{task['id']}/cancel", data={"csrf": token},
                         headers={"Origin": "https://evil.example"})  # fmt: skip
    assert answer.status_code == 403
    assert api_task(server, task["id"])["status"] == "processing"
    answer = client.post(f"/p/acme/web/tasks/{task['id']}/cancel", data={"csrf": token},
                         headers={"Origin": server.url})  # fmt: skip
    assert answer.status_code == 303
    assert api_task(server, task["id"])["status"] == "cancelled"


# -- tenancy --------------------------------------------------------------------------------------------
def test_other_organizations_projects_and_tasks_are_refused(server: Any) -> None:
    other_token = server.new_org_token("rivals", "secret-project")
    theirs = web.post(f"{server.url}/api/rivals/secret-project/tasks/", json={"name": "their job"},
                        headers=server.headers(other_token)).json()  # fmt: skip
    with server.app.store.transaction() as tx:
        tx.ensure_project("acme", "second")
    mine_elsewhere = web.post(f"{server.url}/api/acme/second/tasks/", json={"name": "in second"},
                                headers=server.headers()).json()  # fmt: skip
    client = sign_in(server.url)
    for path in ("/p/rivals/secret-project/", f"/p/rivals/secret-project/tasks/{theirs['id']}/",
                 "/p/rivals/secret-project/events", f"/p/acme/web/tasks/{theirs['id']}/",
                 f"/p/acme/web/tasks/{mine_elsewhere['id']}/", f"/p/acme/web/tasks/{theirs['id']}/live"):  # fmt: skip
        answer = client.get(path)
        assert answer.status_code == 404, path
        assert "their job" not in answer.text
    token = csrf_of(client.get("/p/acme/web/").text)
    assert client.post(f"/p/rivals/secret-project/tasks/{theirs['id']}/cancel", data={"csrf": token}).status_code == 404
    assert client.post(f"/p/acme/web/tasks/{theirs['id']}/cancel", data={"csrf": token}).status_code == 404
    status = web.get(f"{server.url}/api/rivals/secret-project/tasks/{theirs['id']}/",
                       headers=server.headers(other_token)).json()["status"]  # fmt: skip
    assert status == "pending"
    # the project switcher lists the user's organizations' projects, and only those
    listing = client.get("/p/acme/web/").text
    assert "/p/acme/second/" in listing and "rivals" not in listing
    assert "in second" in client.get("/p/acme/second/").text


# -- the list -------------------------------------------------------------------------------------------
def test_bad_filters_name_the_field(server: Any) -> None:
    client = sign_in(server.url)
    for query, field in (("tag=novalue", "tag"), ("status=finishedd", "status"), ("cursor=%%%", "cursor")):
        answer = client.get(f"/p/acme/web/?{query}")
        assert answer.status_code == 400, query
        assert re.search(rf'role="alert">{field}: ', answer.text), answer.text[-2000:]


def test_the_list_shows_parents_children_and_times(server: Any) -> None:
    parent = new_task(server, status="processing", value=3, value_max=12)
    new_task(server, name="part one", parent=parent["id"], status="success")
    new_task(server, name="part two", parent=parent["id"])
    client = sign_in(server.url)
    html = client.get("/p/acme/web/").text
    assert "2 children" in html and "3 / 12 (25%)" in html
    assert re.search(r'class="rel">in <a href="/p/acme/web/tasks/' + parent["id"], html)
    assert "running for" in html and "took" in html and "waiting for" in html


def test_unknown_pages_are_html_404s_and_the_api_keeps_its_json(server: Any) -> None:
    answer = web.get(server.url + "/no/such/page", headers={"Accept": "text/html,*/*;q=0.8"})
    assert answer.status_code == 404 and answer.headers["content-type"].startswith("text/html")
    # a client that is not a browser gets the API's body, wherever it asked
    answer = web.get(server.url + "/no/such/page")
    assert answer.status_code == 404 and answer.json()["errors"][0]["code"] == "not_found"
    answer = web.get(server.url + "/api/no/such/")
    assert answer.status_code == 404 and answer.json()["type"] == "client_error"


def test_pages_carry_security_headers_and_their_server_time(server: Any) -> None:
    client = sign_in(server.url)
    answer = client.get("/p/acme/web/")
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "DENY" and answer.headers["cache-control"] == "no-store"
    assert re.fullmatch(r"app;dur=\d+\.\d", answer.headers["server-timing"])


# -- the public page ------------------------------------------------------------------------------------
def test_the_public_url_opens_a_page_without_data_unless_the_project_allows_it(server: Any) -> None:
    task = new_task(server, status="processing", value=5, data={"secret": "s3cr3t"}, tags={"team": "t3am"})
    url = task["public_url"]
    token = url.rsplit("/public/", 1)[1]
    assert url.startswith(server.url + "/public/") and token != task["id"]
    answer = web.get(url)
    assert answer.status_code == 200 and "job" in answer.text and "5 / 100 (5%)" in answer.text
    assert "s3cr3t" not in answer.text and "t3am" not in answer.text
    assert answer.headers["referrer-policy"] == "no-referrer"
    sections = web.get(url + "/live").json()["sections"]
    assert sorted(sections) == ["summary", "timeline"] and "s3cr3t" not in str(sections)
    from taskreport.cli import main

    result = subprocess.run([sys.executable, "-m", "taskreport", "admin", "--db", server.store_url, "public-details",
                             "acme", "web", "--on"], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert main is not None
    answer = web.get(url)
    assert "s3cr3t" in answer.text and "t3am" in answer.text
    assert "s3cr3t" in web.get(url + "/live").json()["sections"]["details"]


def test_a_public_link_can_not_be_guessed_or_forged(server: Any) -> None:
    task = new_task(server)
    token = task["public_url"].rsplit("/public/", 1)[1]
    for wrong in (task["id"], token[:-2] + "xx", f"{task['id']}.", "x" * 40):
        assert web.get(f"{server.url}/public/{wrong}").status_code == 404


def test_rotating_the_secret_ends_sessions_and_public_links(server: Any) -> None:
    from taskreport.server.dashboard import _app

    task = new_task(server)
    client = sign_in(server.url)
    result = subprocess.run([sys.executable, "-m", "taskreport", "admin", "--db", server.store_url,
                             "dashboard-secret", "--rotate"], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    # a running server reads the secret again after SECRET_SECONDS; sessions end at once (they are revoked)
    assert client.get("/p/acme/web/").status_code == 303
    dashboard = next(r.app for r in server.app.router.routes if getattr(r, "path", None) == "")
    dashboard._keys_read -= _app.SECRET_SECONDS + 1
    assert web.get(task["public_url"]).status_code == 404
    assert new_task(server)["public_url"] != task["public_url"]


# -- live streams ---------------------------------------------------------------------------------------
def test_a_patch_reaches_open_streams_and_only_their_projects(server: Any) -> None:
    task = new_task(server, status="processing")
    with server.app.store.transaction() as tx:
        tx.ensure_project("acme", "second")
    client = sign_in(server.url)
    watching = SseReader(client, "/p/acme/web/events")
    elsewhere = SseReader(client, "/p/acme/second/events")
    one_task = SseReader(client, f"/p/acme/web/events?task={task['id']}")
    try:
        for reader in (watching, elsewhere, one_task):
            reader.next_event("hello")
        other = new_task(server, name="other")
        web.patch(f"{server.tasks_url}{task['id']}/", json={"value": 42}, headers=server.headers())
        row, _ = watching.wait_for(lambda r: r["id"] == task["id"] and r["value"] == 42)
        assert row["value_max"] == 100 and row["status"] == "processing"
        assert row["name"] == "job" and row["tags"] == {}  # made a moment ago: it comes with what shows it
        row, _ = one_task.wait_for(lambda r: r["value"] == 42)
        assert row["id"] == task["id"]
        # a task's page hears of its task and children only
        with pytest.raises(AssertionError):
            one_task.wait_for(lambda r: r["id"] == other["id"], timeout=1.0)
        with pytest.raises(AssertionError):
            elsewhere.next_event("tasks", 1.0)
    finally:
        for reader in (watching, elsewhere, one_task):
            reader.close()


def test_the_public_stream_sends_no_tags(server: Any) -> None:
    task = new_task(server, status="processing", tags={"team": "t3am"})
    reader = SseReader(web.client(base_url=server.url, timeout=30), task["public_url"] + "/events")
    try:
        reader.next_event("hello")
        web.patch(f"{server.tasks_url}{task['id']}/", json={"value": 9}, headers=server.headers())
        row, _ = reader.wait_for(lambda r: r["value"] == 9)
        assert row["name"] == "job" and "tags" not in row and "parent" not in row
    finally:
        reader.close()


def test_streams_need_a_session(server: Any) -> None:
    answer = web.get(server.url + "/p/acme/web/events")
    assert answer.status_code == 303


_EMBEDDED_WRITER = """
import sys, time
from taskreport._store import open_store
store = open_store(sys.argv[1])
with store.transaction() as tx:
    scope = tx.get_scope("acme", "web")
    tx.update_task(scope, sys.argv[2], {"value": 77})
"""


def test_a_change_written_by_another_process_to_the_same_sqlite_database(server: Any) -> None:
    task = new_task(server, status="processing")
    client = sign_in(server.url)
    reader = SseReader(client, "/p/acme/web/events")
    try:
        reader.next_event("hello")
        subprocess.run([sys.executable, "-c", _EMBEDDED_WRITER, server.store_url, task["id"]], check=True)
        row, _ = reader.wait_for(lambda r: r["id"] == task["id"] and r["value"] == 77)
        assert row["value_max"] == 100
    finally:
        reader.close()


@pytest.mark.postgres
def test_a_change_made_through_another_server_on_the_same_postgresql(server_factory: Any) -> None:
    from server_fixtures import start_server

    first = server_factory("postgresql")
    first.create_user(USER, PASSWORD)
    second, stop = start_server(first.store_url)
    try:
        task = new_task(first, status="processing")
        client = sign_in(second.url)
        reader = SseReader(client, "/p/acme/web/events")
        reader.next_event("hello")
        web.patch(f"{first.tasks_url}{task['id']}/", json={"value": 61}, headers=first.headers())
        row, _ = reader.wait_for(lambda r: r["id"] == task["id"] and r["value"] == 61)
        assert row["status"] == "processing"
        reader.close()
    finally:
        stop()


def test_one_poll_per_process_however_many_pages_listen(server: Any) -> None:
    task = new_task(server, status="processing")
    client = sign_in(server.url)
    dashboard = next(r.app for r in server.app.router.routes if getattr(r, "path", None) == "")
    readers = [SseReader(client, "/p/acme/web/events") for _ in range(12)]
    try:
        for reader in readers:
            reader.next_event("hello")
        assert dashboard.feed.listening == 12
        before = dashboard.feed.queries
        polls = dashboard.feed.polls
        for value in range(1, 6):
            web.patch(f"{server.tasks_url}{task['id']}/", json={"value": value}, headers=server.headers())
            time.sleep(0.05)
        for reader in readers:
            reader.wait_for(lambda r: r["value"] == 5)
        # every page got every change, from at most one query per poll
        assert dashboard.feed.queries - before <= dashboard.feed.polls - polls
    finally:
        for reader in readers:
            reader.close()


def test_serve_prints_the_dashboards_url_and_stops_cleanly_with_pages_open(tmp_path: Any) -> None:
    env = {
        k: v
        for k, v in __import__("os").environ.items()
        if (not k.startswith("TASKREPORT_") or k == "TASKREPORT_SCRYPT_N")
    }
    env.update(TASKREPORT_HOME=str(tmp_path / "home"), TASKREPORT_CONFIG=str(tmp_path / "config.toml"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskreport", "serve", "--db", str(tmp_path / "t.db"), "--port", "0",
         "--no-write-config", "--password", PASSWORD],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("Dashboard: "):
                url = line.split()[1]
                break
        else:
            raise AssertionError("serve printed no dashboard URL")
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url) and not url.endswith(":0/")
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = web.get(url)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert answer.status_code == 303 and answer.headers["location"] == "/login?next=%2F"
        client = sign_in(url.rstrip("/"), "admin", PASSWORD)
        assert "local / <strong>default</strong>" in client.get("/p/local/default/").text
        # stopped with pages open, it ends their streams as finished responses, at once and without an error
        readers = [SseReader(client, "/p/local/default/events") for _ in range(3)]
        for reader in readers:
            reader.next_event("hello")
        stopping = time.monotonic()
        proc.terminate()
        proc.wait(15)
        assert time.monotonic() - stopping < 5
        said = proc.stderr.read()
        assert "ERROR" not in said and "Traceback" not in said, said
        for reader in readers:
            reader.close()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(15)
        if proc.stderr is not None:
            proc.stderr.close()
