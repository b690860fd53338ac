"""The task store (taskreport._store), every test on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskreport._errors import ConfigurationError, NotFound, ValidationError
from taskreport._status import Status
from taskreport._store import (
    MAX_PAGE_SIZE,
    SCHEMA_VERSION,
    Row,
    Scope,
    Store,
    _migrations,
    open_store,
)
from taskreport._store import _dashboard as dash
from taskreport._validation import validate_action, validate_task

T0 = 1_700_000_000.0


# -- fixtures and helpers -------------------------------------------------------------------------------------
@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()


@pytest.fixture
def scope(store: Store) -> Scope:
    with store.transaction() as tx:
        return tx.ensure_project("acme", "web")


def create(store: Store, scope: Scope, *, now: float | None = None, **fields: Any) -> Row:
    fields.setdefault("name", "job")
    with store.transaction() as tx:
        return tx.create_task(scope, validate_task(fields, partial=False), now=now)


def update(store: Store, scope: Scope, task_id: str, *, now: float | None = None, **fields: Any) -> Row:
    with store.transaction() as tx:
        return tx.update_task(scope, task_id, validate_task(fields, partial=True), now=now)


def get(store: Store, scope: Scope, task_id: str) -> Row:
    with store.transaction(write=False) as tx:
        return tx.get_task(scope, task_id)


def ids(rows: list[Row]) -> list[str]:
    return [r["id"] for r in rows]


def list_ids(store: Store, scope: Scope, **filters: Any) -> set[str]:
    with store.transaction(write=False) as tx:
        page = tx.list_tasks(scope, page_size=MAX_PAGE_SIZE, **filters)
    assert page.next_cursor is None
    return set(ids(page.results))


# -- create / get / update / cancel -------------------------------------------------------------------------
def test_create_defaults_and_get(store: Store, scope: Scope) -> None:
    before = time.time()
    task = create(store, scope, name="first")
    after = time.time()
    assert isinstance(task["id"], str)
    assert len(task["id"]) >= 16
    assert task["organization"] == "acme"
    assert task["project"] == "web"
    assert task["name"] == "first"
    assert task["status"] == "pending"
    assert task["value"] is None
    assert task["value_max"] == 100
    assert task["value_percent"] is None
    assert task["data"] is None
    assert task["tags"] == {}
    assert task["parent"] is None
    assert task["start_time"] is None
    assert task["end_time"] is None
    assert task["time_to_start"] is None
    assert before <= task["created"] == task["updated"] <= after
    assert get(store, scope, task["id"]) == task


def test_ids_are_unique(store: Store, scope: Scope) -> None:
    assert len({create(store, scope)["id"] for _ in range(20)}) == 20


def test_create_every_field_round_trips(store: Store, scope: Scope) -> None:
    data = {"nested": {"list": [1, 2.5, None, True, "ü✓"]}, "n": 2**62}
    task = create(
        store,
        scope,
        now=T0,
        name="full",
        queue="celery",
        external_id="ext-1",
        status=Status.PENDING,
        value=2**63 - 1,
        value_max=2**63 - 1,
        data=data,
        tags={"env": "prod", "team": "core"},
        max_runtime=2**31 - 1,
        stale_timeout=1,
    )
    assert task["queue"] == "celery"
    assert task["external_id"] == "ext-1"
    assert task["value"] == 2**63 - 1
    assert task["value_max"] == 2**63 - 1
    assert task["value_percent"] == 100
    assert task["data"] == data
    assert task["tags"] == {"env": "prod", "team": "core"}
    assert task["max_runtime"] == 2**31 - 1
    assert task["stale_timeout"] == 1
    assert task["created"] == T0
    assert get(store, scope, task["id"]) == task


def test_update_is_partial(store: Store, scope: Scope) -> None:
    task = create(store, scope, now=T0, name="job", queue="q", value=5, data={"a": 1}, tags={"env": "prod"})
    updated = update(store, scope, task["id"], now=T0 + 10, value=7)
    assert updated["value"] == 7
    assert updated["value_percent"] == 7
    assert updated["updated"] == T0 + 10
    assert updated["created"] == T0
    for key in ("name", "queue", "status", "data", "tags", "value_max", "parent"):
        assert updated[key] == task[key], key
    assert get(store, scope, task["id"]) == updated


def test_update_replaces_data_and_tags(store: Store, scope: Scope) -> None:
    task = create(store, scope, data={"a": 1, "b": {"c": 2}}, tags={"env": "prod", "team": "core"})
    updated = update(store, scope, task["id"], data={"b": 3}, tags={"owner": "me"})
    assert updated["data"] == {"b": 3}
    assert updated["tags"] == {"owner": "me"}
    assert get(store, scope, task["id"]) == updated
    # the tag index follows: the old tags no longer match, the new one does
    assert task["id"] not in list_ids(store, scope, tag="env:prod")
    assert task["id"] not in list_ids(store, scope, tag="team:core")
    assert list_ids(store, scope, tag="owner:me") == {task["id"]}
    # data can be cleared, tags can be emptied
    updated = update(store, scope, task["id"], data=None, tags={})
    assert (updated["data"], updated["tags"]) == (None, {})
    assert get(store, scope, task["id"]) == updated
    assert list_ids(store, scope, tag="owner:me") == set()


def test_update_value_max_and_name(store: Store, scope: Scope) -> None:
    task = create(store, scope, value=50)
    updated = update(store, scope, task["id"], value_max=200, name="renamed", queue=None)
    assert (updated["value_max"], updated["value_percent"], updated["name"]) == (200, 25, "renamed")
    assert get(store, scope, task["id"]) == updated


def test_cancel(store: Store, scope: Scope) -> None:
    task = create(store, scope, now=T0, status="processing")
    with store.transaction() as tx:
        cancelled = tx.cancel_task(scope, task["id"], now=T0 + 5)
    assert cancelled["status"] == "cancelled"
    assert cancelled["end_time"] == T0 + 5
    assert get(store, scope, task["id"]) == cancelled


def test_unknown_task_is_not_found(store: Store, scope: Scope) -> None:
    create(store, scope)
    with store.transaction() as tx:
        for call in (
            lambda: tx.get_task(scope, "doesNotExist0000000000"),
            lambda: tx.update_task(scope, "doesNotExist0000000000", {"value": 1}),
            lambda: tx.cancel_task(scope, "doesNotExist0000000000"),
            lambda: tx.list_actions(scope, "doesNotExist0000000000"),
            lambda: tx.create_action(scope, "doesNotExist0000000000", {"trigger": "success", "integration": "x"}),
            lambda: tx.get_task(scope, ""),
        ):
            with pytest.raises(NotFound) as info:
                call()
            assert info.value.status_code == 404


def test_projects_and_organizations_are_isolated(store: Store, scope: Scope) -> None:
    with store.transaction() as tx:
        same_org = tx.ensure_project("acme", "other")
        other_org = tx.ensure_project("globex", "web")  # same project slug, another organization
        assert tx.ensure_project("acme", "web") == scope
        assert tx.get_scope("acme", "web") == scope
        assert tx.get_scope("nobody", "web") is None
    assert len({scope.project_id, same_org.project_id, other_org.project_id}) == 3
    assert scope.organization_id == same_org.organization_id != other_org.organization_id

    task = create(store, scope, tags={"env": "prod"}, external_id="e1")
    for foreign in (same_org, other_org):
        with store.transaction() as tx:
            with pytest.raises(NotFound):
                tx.get_task(foreign, task["id"])
            with pytest.raises(NotFound):
                tx.update_task(foreign, task["id"], {"value": 1})
            with pytest.raises(NotFound):
                tx.cancel_task(foreign, task["id"])
            with pytest.raises(NotFound):
                tx.list_actions(foreign, task["id"])
        assert list_ids(store, foreign) == set()
        assert list_ids(store, foreign, tag="env:prod") == set()
        assert list_ids(store, foreign, external_id="e1") == set()
        # a parent must be in the same project
        with pytest.raises(ValidationError) as info:
            create(store, foreign, parent=task["id"])
        assert info.value.attr == "parent"
    # nothing leaked into the task through the failed calls
    assert get(store, scope, task["id"]) == task


def test_invalid_slugs(store: Store) -> None:
    with store.transaction() as tx:
        with pytest.raises(ValidationError) as info:
            tx.ensure_project("bad org", "web")
        assert info.value.attr == "organization"
        with pytest.raises(ValidationError) as info:
            tx.ensure_project("acme", "../web")
        assert info.value.attr == "project"


# -- server-side rules: times and progress ------------------------------------------------------------------
def test_start_time_set_when_first_running_and_kept(store: Store, scope: Scope) -> None:
    task = create(store, scope, now=T0)
    assert task["start_time"] is None
    assert update(store, scope, task["id"], now=T0 + 1, value=1)["start_time"] is None
    running = update(store, scope, task["id"], now=T0 + 3, status="processing")
    assert running["start_time"] == T0 + 3
    assert running["time_to_start"] == 3
    assert running["end_time"] is None
    later = update(store, scope, task["id"], now=T0 + 7, status="post_processing", value=50)
    assert later["start_time"] == T0 + 3
    assert later["time_to_start"] == 3
    done = update(store, scope, task["id"], now=T0 + 9, status="success")
    assert done["start_time"] == T0 + 3
    assert done["end_time"] == T0 + 9
    assert done["time_to_start"] == 3
    assert get(store, scope, task["id"]) == done
    # a later status change back to running does not move the start
    again = update(store, scope, task["id"], now=T0 + 20, status="processing")
    assert again["start_time"] == T0 + 3
    finished = update(store, scope, task["id"], now=T0 + 30, status="error")
    assert finished["end_time"] == T0 + 30
    assert finished["time_to_start"] == 3


@pytest.mark.parametrize("status", ["pre_processing", "processing", "post_processing"])
def test_created_running(store: Store, scope: Scope, status: str) -> None:
    task = create(store, scope, now=T0, status=status)
    assert task["start_time"] == T0
    assert task["time_to_start"] == 0
    assert task["end_time"] is None


@pytest.mark.parametrize("status", ["success", "error", "cancelled"])
def test_terminal_sets_end_time(store: Store, scope: Scope, status: str) -> None:
    task = create(store, scope, now=T0)
    done = update(store, scope, task["id"], now=T0 + 4, status=status)
    assert done["end_time"] == T0 + 4
    assert done["start_time"] is None
    assert done["time_to_start"] == 4
    created_done = create(store, scope, now=T0, status=status)
    assert created_done["end_time"] == T0


def test_same_status_again_changes_no_times(store: Store, scope: Scope) -> None:
    task = create(store, scope, now=T0, status="processing")
    again = update(store, scope, task["id"], now=T0 + 10, status="processing", value=3)
    assert again["start_time"] == T0
    done = update(store, scope, task["id"], now=T0 + 20, status="success")
    assert update(store, scope, task["id"], now=T0 + 30, status="success")["end_time"] == done["end_time"] == T0 + 20


def test_explicit_times_are_kept(store: Store, scope: Scope) -> None:
    start = T0 - 100
    task = create(store, scope, now=T0, status="processing", start_time=start)
    assert task["start_time"] == start
    assert update(store, scope, task["id"], now=T0 + 1, status="post_processing")["start_time"] == start
    done = update(store, scope, task["id"], now=T0 + 2, status="success", end_time=T0 + 1.5)
    assert done["end_time"] == T0 + 1.5
    assert get(store, scope, task["id"])["start_time"] == start


def test_stale_is_neither_running_nor_terminal(store: Store, scope: Scope) -> None:
    task = create(store, scope, now=T0)
    stale = update(store, scope, task["id"], now=T0 + 5, status="stale")
    assert stale["start_time"] is None
    assert stale["end_time"] is None


VALUE_PERCENT = [
    (None, 100, None),
    (0, 100, 0),
    (50, 100, 50),
    (100, 100, 100),
    (1, 3, 33),
    (2, 3, 66),
    (150, 100, 100),
    (5, 0, None),
    (0, 0, None),
    (10, 1000, 1),
    (2**63 - 1, 2**63 - 1, 100),
    (2**62, 2**63 - 1, 50),
]


def test_value_percent(store: Store, scope: Scope) -> None:
    for value, value_max, expected in VALUE_PERCENT:
        task = create(store, scope, value=value, value_max=value_max)
        assert task["value_percent"] == expected, (value, value_max)
        assert get(store, scope, task["id"])["value_percent"] == expected, (value, value_max)
    # and it follows updates of either field
    task = create(store, scope, value=10)
    assert task["value_percent"] == 10
    assert update(store, scope, task["id"], value=40)["value_percent"] == 40
    assert update(store, scope, task["id"], value_max=50)["value_percent"] == 80
    assert update(store, scope, task["id"], value=None)["value_percent"] is None
    assert get(store, scope, task["id"])["value_percent"] is None


# -- parents ---------------------------------------------------------------------------------------------------
def test_parent_rules(store: Store, scope: Scope) -> None:
    parent = create(store, scope, name="parent")
    child = create(store, scope, name="child", parent=parent["id"])
    assert child["parent"] == parent["id"]
    assert get(store, scope, child["id"])["parent"] == parent["id"]

    def rejected(**fields: Any) -> None:
        with pytest.raises(ValidationError) as info:
            if "task" in fields:
                update(store, scope, fields.pop("task"), **fields)
            else:
                create(store, scope, **fields)
        assert info.value.attr == "parent"

    count = len(list_ids(store, scope))
    rejected(parent="doesNotExist0000000000")  # must exist
    rejected(parent=child["id"])  # one level deep: the parent has a parent
    assert len(list_ids(store, scope)) == count  # nothing was created

    other = create(store, scope, name="other")
    rejected(task=child["id"], parent=other["id"])  # can't change once set
    rejected(task=child["id"], parent=None)  # nor be removed
    rejected(task=parent["id"], parent=other["id"])  # a task with children can't get a parent
    rejected(task=other["id"], parent=other["id"])  # nor be its own parent
    rejected(task=other["id"], parent=child["id"])  # nor nest under a child
    assert get(store, scope, child["id"])["parent"] == parent["id"]
    assert get(store, scope, other["id"])["parent"] is None

    # setting the same parent again is not a change
    assert update(store, scope, child["id"], parent=parent["id"], value=3)["parent"] == parent["id"]
    # a task without a parent can be given one later
    assert update(store, scope, other["id"], parent=parent["id"])["parent"] == parent["id"]
    assert list_ids(store, scope, parent=parent["id"]) == {child["id"], other["id"]}


def test_failed_update_changes_nothing(store: Store, scope: Scope) -> None:
    task = create(store, scope, value=1, data={"a": 1})
    with pytest.raises(ValidationError):
        update(store, scope, task["id"], value=2, data={"b": 2}, tags={"x": "yy"}, parent="doesNotExist0000000000")
    assert get(store, scope, task["id"]) == task


# -- listing -----------------------------------------------------------------------------------------------------
def test_list_filters(store: Store, scope: Scope) -> None:
    made: list[Row] = []
    statuses = ["pending", "processing", "success", "error", "processing", "cancelled"]
    for i, status in enumerate(statuses):
        made.append(
            create(
                store,
                scope,
                name="even" if i % 2 == 0 else "odd",
                status=status,
                tags={"env": "prod" if i < 3 else "dev", "team": "aa" if i % 3 == 0 else "bb"},
                external_id=f"ext-{i % 2}",
            )
        )
    parent = made[0]["id"]
    children = [create(store, scope, name="child", parent=parent, status="processing") for _ in range(2)]
    everything = made + children

    def expect(pred: Any) -> set[str]:
        return {t["id"] for t in everything if pred(t)}

    assert list_ids(store, scope) == expect(lambda t: True)
    assert list_ids(store, scope, status="processing") == expect(lambda t: t["status"] == "processing")
    assert list_ids(store, scope, status=Status.ERROR) == expect(lambda t: t["status"] == "error")
    terminal = expect(lambda t: t["status"] in ("success", "error"))
    assert len(terminal) == 2
    assert list_ids(store, scope, status="success,error") == terminal
    assert list_ids(store, scope, status="success, error") == terminal
    assert list_ids(store, scope, status=["success", "error"]) == terminal
    assert list_ids(store, scope, status=[Status.SUCCESS, Status.ERROR]) == terminal
    assert list_ids(store, scope, status="stale") == set()
    assert list_ids(store, scope, name="even") == expect(lambda t: t["name"] == "even")
    assert list_ids(store, scope, name="nope") == set()
    assert list_ids(store, scope, tag="env:prod") == expect(lambda t: t["tags"].get("env") == "prod")
    assert list_ids(store, scope, tag="team:aa") == expect(lambda t: t["tags"].get("team") == "aa")
    both = expect(lambda t: t["tags"].get("env") == "dev" and t["tags"].get("team") == "aa")
    assert len(both) == 1
    assert list_ids(store, scope, tag={"env": "dev", "team": "aa"}) == both
    assert list_ids(store, scope, tag="env:staging") == set()
    assert list_ids(store, scope, parent=parent) == {c["id"] for c in children}
    assert list_ids(store, scope, external_id="ext-1") == expect(lambda t: t["external_id"] == "ext-1")
    # filters combine
    assert list_ids(store, scope, status="processing", name="child") == {c["id"] for c in children}
    assert list_ids(store, scope, status="processing", tag="env:prod", external_id="ext-1") == expect(
        lambda t: t["status"] == "processing" and t["tags"].get("env") == "prod" and t["external_id"] == "ext-1"
    )


def test_list_tag_value_may_contain_colon(store: Store, scope: Scope) -> None:
    task = create(store, scope, tags={"url": "http://x"})
    assert list_ids(store, scope, tag="url:http://x") == {task["id"]}


@pytest.mark.parametrize("tag", ["no-colon", ":value"])
def test_list_bad_tag_filter(store: Store, scope: Scope, tag: str) -> None:
    with store.transaction(write=False) as tx, pytest.raises(ValidationError) as info:
        tx.list_tasks(scope, tag=tag)
    assert info.value.attr == "tag"


def _walk(store: Store, scope: Scope, page_size: int, **filters: Any) -> list[Any]:
    """Every page, following next_cursor from the first."""
    pages = []
    cursor = None
    while True:
        with store.transaction(write=False) as tx:
            page = tx.list_tasks(scope, cursor=cursor, page_size=page_size, **filters)
        pages.append(page)
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor
        assert len(pages) < 100


def test_keyset_pagination_forward_and_back(store: Store, scope: Scope) -> None:
    made = [create(store, scope, name=f"t{i}")["id"] for i in range(25)]
    newest_first = made[::-1]

    pages = _walk(store, scope, 10)
    assert [len(p.results) for p in pages] == [10, 10, 5]
    assert [t for p in pages for t in ids(p.results)] == newest_first  # no gaps, no duplicates, newest first
    assert pages[0].previous_cursor is None
    assert pages[1].previous_cursor is not None
    assert pages[2].previous_cursor is not None
    assert pages[2].next_cursor is None

    # walk back from the last page
    with store.transaction(write=False) as tx:
        back2 = tx.list_tasks(scope, cursor=pages[2].previous_cursor, page_size=10)
        assert ids(back2.results) == ids(pages[1].results)
        assert back2.previous_cursor is not None
        assert back2.next_cursor is not None
        back1 = tx.list_tasks(scope, cursor=back2.previous_cursor, page_size=10)
        assert ids(back1.results) == ids(pages[0].results)
        assert back1.previous_cursor is None
        # and forward again from a page reached backwards
        fwd = tx.list_tasks(scope, cursor=back1.next_cursor, page_size=10)
        assert ids(fwd.results) == ids(pages[1].results)
        fwd = tx.list_tasks(scope, cursor=fwd.next_cursor, page_size=10)
        assert ids(fwd.results) == ids(pages[2].results)


def test_pagination_exact_multiple_has_no_empty_last_page(store: Store, scope: Scope) -> None:
    made = [create(store, scope)["id"] for _ in range(20)]
    pages = _walk(store, scope, 10)
    assert [len(p.results) for p in pages] == [10, 10]
    assert [t for p in pages for t in ids(p.results)] == made[::-1]


def test_pagination_is_stable_while_tasks_are_added(store: Store, scope: Scope) -> None:
    made = [create(store, scope)["id"] for _ in range(12)]
    with store.transaction(write=False) as tx:
        first = tx.list_tasks(scope, page_size=5)
    newer = [create(store, scope)["id"] for _ in range(3)]
    seen = ids(first.results)
    cursor = first.next_cursor
    while cursor:
        with store.transaction(write=False) as tx:
            page = tx.list_tasks(scope, cursor=cursor, page_size=5)
        seen += ids(page.results)
        cursor = page.next_cursor
    assert seen == made[::-1]
    # the newer tasks head the list when it is read again
    with store.transaction(write=False) as tx:
        fresh = tx.list_tasks(scope, page_size=5)
    assert ids(fresh.results) == newer[::-1] + made[::-1][:2]


def test_pagination_with_filter(store: Store, scope: Scope) -> None:
    wanted = []
    for i in range(14):
        task = create(store, scope, status="success" if i % 2 else "processing")
        if i % 2:
            wanted.append(task["id"])
    pages = _walk(store, scope, 3, status="success")
    assert [len(p.results) for p in pages] == [3, 3, 1]
    assert [t for p in pages for t in ids(p.results)] == wanted[::-1]
    with store.transaction(write=False) as tx:
        back = tx.list_tasks(scope, status="success", cursor=pages[2].previous_cursor, page_size=3)
    assert ids(back.results) == ids(pages[1].results)


def test_page_size(store: Store, scope: Scope) -> None:
    for _ in range(3):
        create(store, scope)
    with store.transaction(write=False) as tx:
        assert len(tx.list_tasks(scope).results) == 3
        assert len(tx.list_tasks(scope, page_size=MAX_PAGE_SIZE * 10).results) == 3
        for bad in (0, -1, True, "10", 2.5):
            with pytest.raises(ValidationError) as info:
                tx.list_tasks(scope, page_size=bad)
            assert info.value.attr == "page_size"


# "eDox" is x:1 (bad direction), "bjphYmM" n:abc, "bjo" n:, "cDo=" p:
@pytest.mark.parametrize("cursor", ["garbage!!", "eDox", "bjphYmM", "bjo", "%%%", "cDo=", "\u00e9"])
def test_invalid_cursor(store: Store, scope: Scope, cursor: str) -> None:
    create(store, scope)
    with store.transaction(write=False) as tx, pytest.raises(ValidationError) as info:
        tx.list_tasks(scope, cursor=cursor)
    assert info.value.attr == "cursor"
    assert info.value.status_code == 400


def test_empty_list(store: Store, scope: Scope) -> None:
    with store.transaction(write=False) as tx:
        page = tx.list_tasks(scope)
    assert (page.results, page.next_cursor, page.previous_cursor) == ([], None, None)


# -- actions --------------------------------------------------------------------------------------------------------
def test_actions_crud(store: Store, scope: Scope) -> None:
    task = create(store, scope)
    other = create(store, scope)
    fields = validate_action({"trigger": "success", "integration": "email", "config": {"to": "a@b.c"}}, partial=False)
    with store.transaction() as tx:
        action = tx.create_action(scope, task["id"], fields, now=T0)
        assert action["task"] == task["id"]
        assert (action["trigger"], action["integration"], action["config"]) == ("success", "email", {"to": "a@b.c"})
        assert action["status"] == "active"
        assert action["created"] == action["updated"] == T0
        second = tx.create_action(scope, task["id"], {"trigger": "error", "integration": "webhook"}, now=T0)
        assert second["config"] is None
        assert second["id"] != action["id"]

    with store.transaction(write=False) as tx:
        assert tx.get_action(scope, task["id"], action["id"]) == action
        assert tx.get_action(scope, task["id"], str(action["id"])) == action
        assert tx.list_actions(scope, task["id"]) == [action, second]
        assert tx.list_actions(scope, other["id"]) == []
        # an action is reached only through its own task
        with pytest.raises(NotFound):
            tx.get_action(scope, other["id"], action["id"])
        for bad in (999_999, "abc", None):
            with pytest.raises(NotFound):
                tx.get_action(scope, task["id"], bad)

    with store.transaction() as tx:
        changed = tx.update_action(scope, task["id"], action["id"], {"trigger": "error,success"}, now=T0 + 5)
    assert changed["trigger"] == "error,success"
    assert changed["integration"] == "email"
    assert changed["config"] == {"to": "a@b.c"}
    assert changed["updated"] == T0 + 5
    assert changed["created"] == T0
    with store.transaction() as tx:
        changed = tx.update_action(scope, task["id"], action["id"], {"integration": "slack", "config": None})
        assert (changed["integration"], changed["config"]) == ("slack", None)
        with pytest.raises(NotFound):
            tx.update_action(scope, other["id"], action["id"], {"trigger": "x"})
        tx.cancel_action(scope, task["id"], action["id"])
        with pytest.raises(NotFound):
            tx.cancel_action(scope, other["id"], second["id"])
    with store.transaction(write=False) as tx:
        assert tx.get_action(scope, task["id"], action["id"])["status"] == "cancelled"
        assert tx.get_action(scope, task["id"], second["id"])["status"] == "active"


def test_actions_isolated_between_projects(store: Store, scope: Scope) -> None:
    task = create(store, scope)
    with store.transaction() as tx:
        action = tx.create_action(scope, task["id"], {"trigger": "success", "integration": "email"})
        foreign = tx.ensure_project("globex", "web")
        with pytest.raises(NotFound):
            tx.get_action(foreign, task["id"], action["id"])
        with pytest.raises(NotFound):
            tx.update_action(foreign, task["id"], action["id"], {"trigger": "x"})


def test_actions_with_task_create_and_update(store: Store, scope: Scope) -> None:
    task = create(store, scope, actions=[{"trigger": "success", "integration": "email", "config": {"a": 1}}])
    update(store, scope, task["id"], actions=[{"trigger": "error", "integration": "webhook"}])
    with store.transaction(write=False) as tx:
        actions = tx.list_actions(scope, task["id"])
    assert [(a["trigger"], a["integration"], a["config"]) for a in actions] == [
        ("success", "email", {"a": 1}),
        ("error", "webhook", None),
    ]


# -- sweep -------------------------------------------------------------------------------------------------------
def test_sweep_marks_stale(store: Store, scope: Scope) -> None:
    task = create(store, scope, now=T0, status="processing", stale_timeout=60)
    pending = create(store, scope, now=T0, status="pending", stale_timeout=60)
    done = create(store, scope, now=T0, status="success", stale_timeout=60)
    plain = create(store, scope, now=T0, status="processing")
    with store.transaction() as tx:
        assert tx.sweep(now=T0 + 59) == []
    # an update resets the clock
    update(store, scope, task["id"], now=T0 + 50, value=5)
    with store.transaction() as tx:
        assert tx.sweep(now=T0 + 100) == []
        swept = tx.sweep(now=T0 + 111)
    assert [(s, t["id"], reason) for s, t, reason in swept] == [(scope, task["id"], "stale")]
    assert swept[0][1]["status"] == "stale"
    assert get(store, scope, task["id"])["status"] == "stale"
    for untouched in (pending, done, plain):
        assert get(store, scope, untouched["id"])["status"] == untouched["status"]
    with store.transaction() as tx:
        assert tx.sweep(now=T0 + 10_000) == []  # already stale: not swept again
    # a late update revives it
    revived = update(store, scope, task["id"], now=T0 + 200, status="processing", value=6)
    assert revived["status"] == "processing"
    assert revived["start_time"] == T0


def test_sweep_max_runtime_is_an_error_with_reason(store: Store, scope: Scope) -> None:
    task = create(store, scope, now=T0, status="processing", max_runtime=100, data={"kept": True})
    listy = create(store, scope, now=T0, status="processing", max_runtime=100, data=[1, 2])
    late = create(store, scope, now=T0)
    update(store, scope, late["id"], now=T0 + 50, status="processing", max_runtime=100)  # starts later
    with store.transaction() as tx:
        assert tx.sweep(now=T0 + 100) == []
        swept = tx.sweep(now=T0 + 101)
    assert sorted(t["id"] for _, t, _ in swept) == sorted([task["id"], listy["id"]])
    assert {reason for _, _, reason in swept} == {"max_runtime_exceeded"}
    row = get(store, scope, task["id"])
    assert row["status"] == "error"
    assert row["end_time"] == T0 + 101
    assert row["data"]["kept"] is True
    assert "max_runtime" in row["data"]["error"]
    row = get(store, scope, listy["id"])
    assert row["data"]["data"] == [1, 2]
    assert "max_runtime" in row["data"]["error"]
    assert get(store, scope, late["id"])["status"] == "processing"
    with store.transaction() as tx:
        swept = tx.sweep(now=T0 + 151)
    assert [(t["id"], r) for _, t, r in swept] == [(late["id"], "max_runtime_exceeded")]


def test_sweep_max_runtime_wins_over_stale_and_spans_projects(store: Store, scope: Scope) -> None:
    with store.transaction() as tx:
        foreign = tx.ensure_project("globex", "batch")
    both = create(store, scope, now=T0, status="processing", max_runtime=10, stale_timeout=10)
    elsewhere = create(store, foreign, now=T0, status="pre_processing", stale_timeout=10)
    with store.transaction() as tx:
        swept = {t["id"]: (s, r) for s, t, r in tx.sweep(now=T0 + 11)}
    assert swept == {both["id"]: (scope, "max_runtime_exceeded"), elsewhere["id"]: (foreign, "stale")}
    assert get(store, foreign, elsewhere["id"])["status"] == "stale"


# -- transactions ------------------------------------------------------------------------------------------------
def test_transaction_rolls_back_on_error(store: Store, scope: Scope) -> None:
    kept = create(store, scope, value=1)
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.create_task(scope, {"name": "lost"})
        tx.update_task(scope, kept["id"], {"value": 2})
        raise RuntimeError("boom")
    assert list_ids(store, scope) == {kept["id"]}
    assert get(store, scope, kept["id"])["value"] == 1


def test_nested_transaction_joins_outer(store: Store, scope: Scope) -> None:
    with pytest.raises(RuntimeError), store.transaction() as outer:
        outer.create_task(scope, {"name": "outer"})
        with store.transaction() as inner:
            inner.create_task(scope, {"name": "inner"})
        raise RuntimeError("boom")
    assert list_ids(store, scope) == set()
    with store.transaction() as outer:
        outer.create_task(scope, {"name": "outer"})
        with store.transaction() as inner:
            inner.create_task(scope, {"name": "inner"})
    assert len(list_ids(store, scope)) == 2


def test_first_use_of_a_project_from_two_connections(store: Store, request: pytest.FixtureRequest) -> None:
    """Two writers creating the same new project at once both get it (embedded clients start together)."""
    first_inserted = threading.Event()
    second_started = threading.Event()
    results: dict[str, Any] = {}

    def first() -> None:
        try:
            with store.transaction() as tx:
                results["first"] = tx.ensure_project("newco", "app")
                first_inserted.set()
                # give the second writer time to run into our uncommitted row
                if second_started.wait(timeout=0.5):
                    time.sleep(0.3)
        except Exception as exc:
            results["first"] = exc

    def second() -> None:
        first_inserted.wait(timeout=5)
        try:
            with store.transaction() as tx:
                second_started.set()
                results["second"] = tx.ensure_project("newco", "app")
        except Exception as exc:
            results["second"] = exc

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert isinstance(results["first"], Scope), results["first"]
    assert results["second"] == results["first"]


# -- opening, URLs, migrations -----------------------------------------------------------------------------------
def test_repr_hides_the_url(store: Store, store_url: str) -> None:
    assert store_url not in repr(store)
    assert store.dialect in repr(store)


def test_sqlite_urls(tmp_path: Path) -> None:
    for url, path in [
        (f"sqlite://{tmp_path}/a.db", tmp_path / "a.db"),
        (f"sqlite:///{tmp_path}/b.db", tmp_path / "b.db"),
        (str(tmp_path / "sub" / "c.db"), tmp_path / "sub" / "c.db"),
    ]:
        s = open_store(url)
        try:
            assert s.dialect == "sqlite"
            with s.transaction() as tx:
                tx.create_task(tx.ensure_project("local", "default"), {"name": "x"})
        finally:
            s.close()
        assert path.exists(), url


def test_unsupported_url_scheme(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        open_store("mysql://user@host/db")


def _versions(store: Store) -> list[int]:
    with store.transaction(write=False) as tx:
        return [int(r["version"]) for r in tx.cur.all("SELECT version FROM taskreport_schema ORDER BY version")]


def test_reopen_is_idempotent(store_url: str) -> None:
    s = open_store(store_url)
    with s.transaction() as tx:
        scope = tx.ensure_project("acme", "web")
    task = create(s, scope, data={"x": 1})
    assert _versions(s) == list(range(1, SCHEMA_VERSION + 1))
    s.close()
    for _ in range(2):
        s = open_store(store_url)
        assert _versions(s) == list(range(1, SCHEMA_VERSION + 1))
        assert _migrations.migrate(s.db) == SCHEMA_VERSION  # already up to date
        assert get(s, scope, task["id"]) == task
        s.close()


def test_newer_schema_is_refused(store_url: str) -> None:
    s = open_store(store_url)
    with s.transaction() as tx:
        tx.cur.execute("INSERT INTO taskreport_schema (version) VALUES (?)", (SCHEMA_VERSION + 1,))
    s.close()
    with pytest.raises(ConfigurationError, match="upgrade"):
        open_store(store_url)


_NEW_COLUMN = ["ALTER TABLE tasks ADD COLUMN note TEXT", "UPDATE tasks SET note = 'migrated'"]


def test_later_migration_applies_on_open(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    s = open_store(store_url)
    with s.transaction() as tx:
        scope = tx.ensure_project("acme", "web")
    task = create(s, scope, data={"x": 1}, tags={"env": "prod"})
    s.close()

    monkeypatch.setattr(_migrations, "MIGRATIONS", [*_migrations.MIGRATIONS, _NEW_COLUMN])
    monkeypatch.setattr(_migrations, "LATEST", len(_migrations.MIGRATIONS))
    s = open_store(store_url)
    try:
        assert _versions(s) == list(range(1, SCHEMA_VERSION + 2))
        with s.transaction(write=False) as tx:
            assert tx.cur.all("SELECT note FROM tasks") == [{"note": "migrated"}]
        assert get(s, scope, task["id"]) == task
        assert list_ids(s, scope, tag="env:prod") == {task["id"]}
    finally:
        s.close()
    # and once applied it is not applied again
    s = open_store(store_url)
    assert _versions(s) == list(range(1, SCHEMA_VERSION + 2))
    s.close()


def test_a_store_made_before_in_place_progress_upgrades(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Migration 7 (no index on ``updated``; on PostgreSQL a generated minute column) on a store holding
    tasks: they read back as they were, the live feed still finds their changes, and progress still writes."""
    with monkeypatch.context() as early:
        early.setattr(_migrations, "MIGRATIONS", _migrations.MIGRATIONS[:6])
        early.setattr(_migrations, "LATEST", 6)
        s = open_store(store_url)
        with s.transaction() as tx:
            scope = tx.ensure_project("acme", "web")
        tasks = [create(s, scope, status="processing", data={"n": n}) for n in range(3)]
        mark = time.time()
        s.close()
    s = open_store(store_url)
    try:
        assert _versions(s) == list(range(1, SCHEMA_VERSION + 1))
        assert [get(s, scope, t["id"]) for t in tasks] == tasks
        time.sleep(0.01)
        with s.transaction() as tx:
            assert tx.update_progress(scope, tasks[1]["id"], {"value": 40}) is not None
            changed = dash.changed_since(tx.cur, mark, [scope.project_id])
        assert [(r["id"], r["value"]) for r in changed] == [(tasks[1]["id"], 40)]
    finally:
        s.close()


def test_failed_migration_leaves_the_store_as_it_was(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    s = open_store(store_url)
    with s.transaction() as tx:
        scope = tx.ensure_project("acme", "web")
    task = create(s, scope)
    s.close()
    original = _migrations.MIGRATIONS
    broken = ["ALTER TABLE tasks ADD COLUMN note TEXT", "THIS IS NOT SQL"]
    monkeypatch.setattr(_migrations, "MIGRATIONS", [*original, broken])
    monkeypatch.setattr(_migrations, "LATEST", len(original) + 1)
    threads = threading.active_count()
    with pytest.raises(Exception, match=r"(?i)syntax"):
        open_store(store_url)
    # the failed store's connections were closed, not left to the garbage collector (a pool's threads too)
    assert threading.active_count() <= threads
    monkeypatch.setattr(_migrations, "MIGRATIONS", original)
    monkeypatch.setattr(_migrations, "LATEST", len(original))
    s = open_store(store_url)
    try:
        assert _versions(s) == list(range(1, SCHEMA_VERSION + 1))
        with s.transaction(write=False) as tx:
            columns = tx.cur.all("SELECT * FROM tasks")[0].keys()
        assert "note" not in columns
        assert get(s, scope, task["id"]) == task
    finally:
        s.close()


def test_appending_to_migrations_alone_is_enough(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    open_store(sqlite_url).close()
    monkeypatch.setattr(_migrations, "MIGRATIONS", [*_migrations.MIGRATIONS, _NEW_COLUMN])
    s = open_store(sqlite_url)
    try:
        assert _versions(s)[-1] == len(_migrations.MIGRATIONS)
    finally:
        s.close()


def test_progress_in_bulk_writes_every_qualifying_task_and_leaves_the_rest(store: Store, scope: Scope) -> None:
    # more tasks than one statement takes (2,000 on SQLite), with two sets of columns, an id that exists
    # nowhere, and a task with a live action (left for the caller, which writes it the ordinary way)
    with store.transaction() as tx:  # one transaction: 2,100 commits would cost seconds on PostgreSQL
        tasks = [tx.create_task(scope, {"name": f"t{n}"}, now=time.time() - 1) for n in range(2100)]
    watched = tasks[7]
    with store.transaction() as tx:
        tx.create_action(scope, watched["id"], {"trigger": "success", "integration": "webhook",
                                                "config": {"url": "https://example.com/hook"}})  # fmt: skip
    items: list[tuple[str, dict[str, object]]] = [
        (t["id"], {"value": n} if n % 3 else {"value": n, "value_max": 5000}) for n, t in enumerate(tasks)
    ]
    items.append(("doesNotExist0000000000", {"value": 1}))
    with store.transaction() as tx:
        written = tx.update_values(scope, items)
    assert written == {t["id"] for t in tasks} - {watched["id"]}
    for n in (0, 1, 1999, 2000, 2099):
        row = get(store, scope, tasks[n]["id"])
        assert row["value"] == n and row["value_max"] == (100 if n % 3 else 5000)
        assert row["updated"] > tasks[n]["updated"]
    assert get(store, scope, watched["id"])["value"] == watched["value"]
