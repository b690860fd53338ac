"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a real server, with the
library reporting from another process. Skipped, with the reason, where no Chromium can be run.

These tests also take the docs' screenshots (docs/img/dashboard-*.png), so that those stay current.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import web
from dashboard_support import PASSWORD, USER, LibraryProcess, browser, screenshot  # noqa: F401
from playwright.sync_api import expect

# one xdist worker runs them all, so that one Chromium starts, not one per worker
pytestmark = [pytest.mark.timeout(180), pytest.mark.xdist_group("browser")]


@pytest.fixture
def server(server_factory: Any) -> Any:
    live = server_factory("sqlite")
    live.create_user(USER, PASSWORD)
    return live


@pytest.fixture
def page(browser: Any, server: Any) -> Iterator[Any]:  # noqa: F811
    # after the server: closed before it, so that no stream is open when the server stops
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    yield tab
    context.close()


def sign_in(page: Any, server: Any, path: str = "/") -> None:
    page.goto(server.url + path)
    page.get_by_label("Username").fill(USER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    # a sign-in costs an scrypt of 128 MiB: slow on purpose, slower still with the suite's other workers
    page.wait_for_url(re.compile(r".*/p/acme/web/.*"), timeout=30_000)


def connected(page: Any) -> None:
    page.wait_for_selector("body[data-connected]", state="attached")


def bar_value(page: Any, task_id: str) -> str | None:
    value: str | None = page.get_attribute(f"tr[data-task='{task_id}'] progress", "value")
    return value


def test_sign_in_with_the_keyboard_and_out(page: Any, server: Any) -> None:
    page.goto(server.url + "/")
    assert "/login" in page.url
    page.keyboard.press("Tab")  # the skip link first
    page.get_by_label("Username").focus()
    page.keyboard.type(USER)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/p/acme/web/$"), timeout=30_000)
    assert page.get_by_role("heading", name="Tasks").is_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "taskreport_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/login$"))
    page.goto(server.url + "/p/acme/web/")
    assert "/login" in page.url


def test_a_wrong_password_is_refused(page: Any, server: Any) -> None:
    page.goto(server.url + "/login")
    page.get_by_label("Username").fill(USER)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "Wrong username or password."
    assert "/login" in page.url


def test_a_task_updated_by_the_library_moves_its_bar_without_reload(page: Any, server: Any) -> None:
    h = server.headers()
    # company for the docs' screenshot
    nightly = web.post(server.tasks_url, json={"name": "nightly backup", "status": "success", "value": 100,
                                                 "tags": {"env": "prod"}}, headers=h).json()  # fmt: skip
    web.post(server.tasks_url, json={"name": "backup: database", "status": "success", "value": 100,
                                       "parent": nightly["id"]}, headers=h)  # fmt: skip
    web.post(server.tasks_url, json={"name": "send invoices", "status": "error", "value": 37, "value_max": 120,
                                       "tags": {"env": "prod", "team": "billing"}}, headers=h)  # fmt: skip
    web.post(server.tasks_url, json={"name": "resize images", "status": "pending"}, headers=h)
    library = LibraryProcess(server.url, server.token, "acme", "web", "library job")
    try:
        sign_in(page, server)
        row = page.locator(f"tr[data-task='{library.task_id}']")
        assert row.is_visible()
        assert bar_value(page, library.task_id) == "0"
        connected(page)
        page.evaluate("window.__marker = 'same page'")
        latencies = []
        for value in (40, 70):
            sent = library.send(f"value {value}")
            expect(row.locator("progress")).to_have_attribute("value", str(value), timeout=5000)
            latencies.append(time.time() - sent)
        assert row.locator("[data-field=progress-text]").inner_text() == "70 / 100 (70%)"
        # no reload happened: the page's own state is still there
        assert page.evaluate("window.__marker") == "same page"
        print(f"bar moved {', '.join(f'{s * 1000:.0f} ms' for s in latencies)} after the PATCH was answered")
        screenshot(page, "list")
        library.send("success")
        expect(row.locator("[data-field=status]")).to_have_text("Success")
    finally:
        library.close()


def test_a_new_task_appears_on_the_first_page(page: Any, server: Any) -> None:
    sign_in(page, server)
    connected(page)
    answer = web.post(server.tasks_url, json={"name": "arrived later", "status": "pending"}, headers=server.headers())
    task_id = answer.json()["id"]
    page.wait_for_selector(f"tr[data-task='{task_id}']")
    assert page.locator(f"tr[data-task='{task_id}'] a[data-field=name]").inner_text() == "arrived later"


def test_filters(page: Any, server: Any) -> None:
    h = server.headers()
    for name, status, tags in [("import users", "success", {"env": "prod"}), ("import orders", "processing",
                               {"env": "dev"}), ("send mail", "error", {"env": "prod"})]:  # fmt: skip
        assert web.post(server.tasks_url, json={"name": name, "status": status, "tags": tags}, headers=h).is_success
    sign_in(page, server)

    def names() -> list[str]:
        return sorted(page.locator("#tasks tbody tr a[data-field=name]").all_inner_texts())

    assert names() == ["import orders", "import users", "send mail"]
    page.get_by_label("Name contains").fill("IMPORT")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*name=IMPORT.*"))
    assert names() == ["import orders", "import users"]
    page.get_by_label("Status").select_option("finished")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*status=finished.*"))
    assert names() == ["import users"]
    page.get_by_role("link", name="Clear").click()
    page.wait_for_url(re.compile(r".*/p/acme/web/$"))
    page.get_by_label("Tag").fill("env:prod")
    page.get_by_label("Tag").press("Enter")
    page.wait_for_url(re.compile(r".*tag=env%3Aprod.*"))
    assert names() == ["import users", "send mail"]
    page.get_by_label("Status").select_option("error")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*status=error.*"))
    assert names() == ["send mail"]


def test_keyset_paging(page: Any, server: Any) -> None:
    operations = [{"op": "create", "ref": f"dashboard-page-test-{i:04d}", "fields": {"name": f"job {i:03d}"}}
                  for i in range(60)]
    assert web.post(server.tasks_url + "batch/", json={"operations": operations},
                      headers=server.headers()).is_success  # fmt: skip
    sign_in(page, server)
    first = page.locator("#tasks tbody tr a[data-field=name]").all_inner_texts()
    assert len(first) == 50 and first[0] == "job 059"
    names = page.locator("#tasks tbody tr a[data-field=name]")
    # a click starts a navigation and returns: the assertions retry until the next page has replaced this one
    page.get_by_role("link", name="Older →").click()
    expect(names).to_have_text([f"job {i:03d}" for i in range(9, -1, -1)])
    page.get_by_role("link", name="← Newer").click()
    expect(names).to_have_text(first)


def test_a_task_page_shows_data_output_logs_and_children(page: Any, server: Any) -> None:
    library = LibraryProcess(server.url, server.token, "acme", "web", "nightly import")
    try:
        library.send("child import-part-1")
        h = server.headers()
        logs = [{"level": "INFO", "logger": "import", "message": "read 120 rows", "time": time.time()},
                {"level": "WARNING", "logger": "import", "message": "row 7 skipped", "time": time.time()}]  # fmt: skip
        data = {"step": "warming up", "nested": {"items": [1, 2, 3]}, "output": "line one\nline two\n", "logs": logs}
        url = f"{server.tasks_url}{library.task_id}/"
        assert web.patch(url, json={"data": data}, headers=h).is_success
        sign_in(page, server)
        page.locator(f"tr[data-task='{library.task_id}'] a[data-field=name]").click()
        page.wait_for_url(re.compile(rf".*/tasks/{library.task_id}/$"))
        details = page.locator("[data-section=details]")
        assert "warming up" in details.inner_text()
        expect(details.locator(".tree .k", has_text="items")).to_be_visible()
        assert page.get_by_label("Output tail").inner_text().strip() == "line one\nline two"
        assert "row 7 skipped" in page.locator("table.logs").inner_text()
        assert page.locator("#children-table a[data-field=name]").all_inner_texts() == ["import-part-1"]
        timeline = page.locator("[data-section=timeline]").inner_text()
        assert "Created" in timeline and "Started" in timeline
        connected(page)
        library.send("value 55")
        expect(page.locator("[data-section=summary] progress")).to_have_attribute("value", "55")
        library.send("child import-part-2")
        expect(page.locator("#children-table tbody tr")).to_have_count(2)
        screenshot(page, "task", full_page=True)
    finally:
        library.close()


def test_cancel_from_the_page_reaches_the_api(page: Any, server: Any) -> None:
    h = server.headers()
    task = web.post(server.tasks_url, json={"name": "long job", "status": "processing"}, headers=h).json()
    sign_in(page, server, f"/p/acme/web/tasks/{task['id']}/")
    page.get_by_role("button", name="Cancel task").click()
    page.wait_for_selector("[data-section=summary] .s-cancelled")
    assert web.get(f"{server.tasks_url}{task['id']}/", headers=h).json()["status"] == "cancelled"
    assert page.locator("#cancel-task").count() == 0


def test_actions_added_and_cancelled_from_the_page(page: Any, server: Any) -> None:
    h = server.headers()
    task = web.post(server.tasks_url, json={"name": "with actions", "status": "processing"}, headers=h).json()
    sign_in(page, server, f"/p/acme/web/tasks/{task['id']}/")
    page.get_by_text("Add an action").click()
    page.get_by_label("Trigger").fill("success")
    page.get_by_label("Integration").fill("email")
    page.get_by_label("Config").fill('{"to": "ops@example.com"}')
    page.get_by_role("button", name="Add action").click()
    page.wait_for_selector("table.actions tr[data-action]")
    actions = web.get(f"{server.tasks_url}{task['id']}/actions/", headers=h).json()
    assert [(a["trigger"], a["integration"], a["config"]) for a in actions] == [
        ("success", "email", {"to": "ops@example.com"})]
    page.get_by_role("button", name=re.compile("Cancel action")).click()
    expect(page.locator("table.actions tr[data-action] td").nth(2)).to_have_text("cancelled")
    assert web.get(f"{server.tasks_url}{task['id']}/actions/", headers=h).json()[0]["status"] == "cancelled"
    # a bad config is shown on the page, naming the field, and nothing is added
    page.get_by_text("Add an action").click()
    page.get_by_label("Trigger").fill("success")
    page.get_by_label("Integration").fill("email")
    page.get_by_label("Config").fill("{not json")
    page.get_by_role("button", name="Add action").click()
    assert page.get_by_role("alert").inner_text().startswith("config:")
    assert len(web.get(f"{server.tasks_url}{task['id']}/actions/", headers=h).json()) == 1


def test_the_public_page_opens_signed_out_and_shows_no_data(browser: Any, server: Any) -> None:  # noqa: F811
    h = server.headers()
    task = web.post(server.tasks_url, json={"name": "public build", "status": "processing", "value": 30,
                                              "data": {"secret": "do-not-show"}, "tags": {"team": "hidden-tag"}},
                      headers=h).json()  # fmt: skip
    context = browser.new_context(viewport={"width": 390, "height": 760})  # a phone
    try:
        page = context.new_page()
        page.goto(task["public_url"])
        assert page.get_by_role("heading", name="public build").is_visible()
        text = page.locator("main").inner_text()
        assert "30 / 100 (30%)" in text
        assert "do-not-show" not in page.content() and "hidden-tag" not in page.content()
        assert not [c for c in context.cookies() if c["name"] == "taskreport_session"]
        connected(page)
        assert web.patch(f"{server.tasks_url}{task['id']}/", json={"value": 80}, headers=h).is_success
        expect(page.locator("[data-section=summary] progress")).to_have_attribute("value", "80")
        assert "do-not-show" not in page.content() and "hidden-tag" not in page.content()
        screenshot(page, "public")
        # a link with a signature that is not the server's opens nothing
        page.goto(task["public_url"][:-3] + "abc")
        assert page.get_by_role("heading", name="Not found").is_visible()
    finally:
        context.close()


def test_the_list_on_a_phone_and_in_dark_mode(browser: Any, server: Any) -> None:  # noqa: F811
    web.post(server.tasks_url, json={"name": "phone job", "status": "processing", "value": 12},
               headers=server.headers())
    context = browser.new_context(viewport={"width": 390, "height": 760}, color_scheme="dark")
    try:
        page = context.new_page()
        sign_in(page, server)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide on a 390 px screen"
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(17, 19, 24)"
        assert page.locator("tr[data-task] progress").is_visible()
        screenshot(page, "list-phone-dark")
    finally:
        context.close()
