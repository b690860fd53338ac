"""Task references in the store (the contract's "Store" rules), each on SQLite and on PostgreSQL.

A create, an update by reference and a parent named by reference may reach the store in any order; whatever
the order, one task results, and a create arriving after the task finished never reopens it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from taskreport._errors import ValidationError
from taskreport._store import Row, Scope, Store, open_store
from taskreport._store._outbox import list_firings
from taskreport._validation import validate_task

T0 = 1_700_000_000.0
REF = "ref-aaaaaaaaaaaaaaaa"
PARENT = "ref-pppppppppppppppp"
GRANDPARENT = "ref-gggggggggggggggg"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()


@pytest.fixture
def scope(store: Store) -> Scope:
    with store.transaction() as tx:
        return tx.ensure_project("acme", "web")


def create(store: Store, scope: Scope, ref: str | None = REF, *, now: float = T0, parent_ref: str | None = None,
           **fields: Any) -> Row:  # fmt: skip
    fields.setdefault("name", "job")
    with store.transaction() as tx:
        return tx.create_task(
            scope, validate_task(fields, partial=False), idempotency_key=ref, parent_ref=parent_ref, now=now
        )


def by_ref(store: Store, scope: Scope, ref: str = REF, *, now: float = T0 + 1, parent_ref: str | None = None,
           **fields: Any) -> Row:  # fmt: skip
    with store.transaction() as tx:
        return tx.update_task_by_ref(scope, ref, validate_task(fields, partial=True), parent_ref=parent_ref, now=now)


def born(store: Store, task_id: str) -> int:
    with store.transaction(write=False) as tx:
        return int(tx.cur.scalar("SELECT born FROM tasks WHERE public_id = ?", (task_id,)))


def count(store: Store, scope: Scope) -> int:
    with store.transaction(write=False) as tx:
        return len(tx.list_tasks(scope, page_size=1000).results)


# -- create and replay --------------------------------------------------------------------------------------
def test_a_create_keeps_its_ref_and_can_be_found_by_it(store: Store, scope: Scope) -> None:
    task = create(store, scope)
    other = create(store, scope, "ref-bbbbbbbbbbbbbbbb")
    plain = create(store, scope, None)
    assert (task["ref"], plain["ref"]) == (REF, None)
    assert not task.replayed and born(store, task["id"]) == 1
    with store.transaction(write=False) as tx:
        assert [t["id"] for t in tx.list_tasks(scope, ref=REF).results] == [task["id"]]
        assert tx.list_tasks(scope, ref="ref-nothing-by-this").results == []
        assert tx.get_task(scope, other["id"])["ref"] == "ref-bbbbbbbbbbbbbbbb"


def test_a_create_replayed_changes_nothing(store: Store, scope: Scope) -> None:
    action = {"trigger": "success", "integration": "email", "config": {"to": "a@example.com"}}
    first = create(store, scope, value=1, actions=[action])
    by_ref(store, scope, value=5)
    again = create(store, scope, name="renamed", value=9, status="error", data={"x": 1},
                   actions=[action, {**action, "trigger": "error"}], now=T0 + 5)  # fmt: skip
    assert again.replayed
    assert again["id"] == first["id"]
    assert (again["name"], again["value"], again["status"], again["data"]) == ("job", 5, "pending", None)
    assert again["updated"] == T0 + 1  # not written at all
    with store.transaction(write=False) as tx:
        assert len(tx.list_actions(scope, first["id"])) == 1
    assert count(store, scope) == 1


def test_a_create_replayed_after_the_task_finished_never_reopens_it(store: Store, scope: Scope) -> None:
    first = create(store, scope, status="processing")
    by_ref(store, scope, status="success", value=100)
    late = create(store, scope, status="processing", value=3)
    assert late.replayed
    assert (late["id"], late["status"], late["value"]) == (first["id"], "success", 100)


def test_refs_are_per_project(store: Store, scope: Scope) -> None:
    first = create(store, scope)
    with store.transaction() as tx:
        other = tx.ensure_project("acme", "other")
    with store.transaction() as tx:
        elsewhere = tx.create_task(other, {"name": "job"}, idempotency_key=REF)
    assert elsewhere["id"] != first["id"] and not elsewhere.replayed


# -- update by ref ------------------------------------------------------------------------------------------
def test_an_update_by_ref_before_the_create_makes_a_placeholder(store: Store, scope: Scope) -> None:
    task = by_ref(store, scope, value=3, status="processing")
    assert (task["name"], task["ref"], task["value"], task["status"]) == (REF, REF, 3, "processing")
    assert task["start_time"] == T0 + 1  # applied as an update: times follow the status
    assert born(store, task["id"]) == 0
    named = by_ref(store, scope, "ref-nnnnnnnnnnnnnnnn", name="given")
    assert named["name"] == "given" and named["status"] == "pending"


def test_an_update_by_ref_after_the_create_is_a_normal_update(store: Store, scope: Scope) -> None:
    task = create(store, scope, status="success")
    again = by_ref(store, scope, status="processing", data={"retry": 1})
    # the caller said so: an update may move the status any way
    assert (again["id"], again["status"], again["data"]) == (task["id"], "processing", {"retry": 1})
    assert born(store, task["id"]) == 1 and count(store, scope) == 1


# -- fill-in ------------------------------------------------------------------------------------------------
def test_a_create_fills_in_a_placeholder(store: Store, scope: Scope) -> None:
    placeholder = by_ref(store, scope, value=4, data={"a": "mine", "b": 2}, tags={"env": "prod"},
                         queue=None, max_runtime=60)  # fmt: skip
    task = create(store, scope, name="real", value=1, value_max=10, queue="q1", external_id="e1",
                  max_runtime=5, stale_timeout=30, data={"a": "theirs", "c": 3},
                  tags={"env": "dev", "team": "data"}, now=T0 + 2)  # fmt: skip
    assert not task.replayed and task["id"] == placeholder["id"]
    assert task["name"] == "real"  # replaced
    assert task["value"] == 4 and task["max_runtime"] == 60  # the placeholder had them
    assert (task["queue"], task["external_id"], task["stale_timeout"]) == ("q1", "e1", 30)  # it had none
    assert task["value_max"] == 10  # the placeholder's was still the default
    assert task["data"] == {"a": "mine", "b": 2, "c": 3}
    assert task["tags"] == {"env": "prod", "team": "data"}
    assert born(store, task["id"]) == 1
    with store.transaction(write=False) as tx:
        assert [t["id"] for t in tx.list_tasks(scope, tag="team:data").results] == [task["id"]]
    # a second create is now a replay
    assert create(store, scope, name="again").replayed


def test_a_placeholders_value_max_that_was_set_is_kept(store: Store, scope: Scope) -> None:
    by_ref(store, scope, value_max=500)
    assert create(store, scope, value_max=10)["value_max"] == 500


@pytest.mark.parametrize(
    ("placeholder", "create_status", "final"),
    [
        ("pending", "processing", "processing"),
        ("processing", "pending", "processing"),
        ("processing", "success", "success"),
        ("stale", "processing", "stale"),
        ("success", "pending", "success"),
        ("success", "processing", "success"),
        ("error", "success", "error"),
        ("cancelled", "error", "cancelled"),
    ],
)
def test_a_create_raises_the_status_only_to_a_higher_rank(
    store: Store, scope: Scope, placeholder: str, create_status: str, final: str
) -> None:
    by_ref(store, scope, status=placeholder)
    assert create(store, scope, status=create_status, now=T0 + 2)["status"] == final


def test_a_late_create_leaves_a_finished_placeholder_finished(store: Store, scope: Scope) -> None:
    done = by_ref(store, scope, status="success", value=100, now=T0 + 10)
    task = create(store, scope, status="pending", value=0, now=T0 + 20)
    assert (task["status"], task["value"], task["end_time"]) == ("success", 100, done["end_time"])
    assert task["end_time"] == T0 + 10


def test_times_of_a_fill_in_follow_the_update_rules(store: Store, scope: Scope) -> None:
    by_ref(store, scope, value=1, now=T0 + 1)
    task = create(store, scope, status="processing", now=T0 + 4)
    assert (task["start_time"], task["time_to_start"]) == (T0 + 4, 3.0)  # from the placeholder's created
    by_ref(store, scope, "ref-ssssssssssssssss", status="success", now=T0 + 5)
    ended = create(store, scope, "ref-ssssssssssssssss", status="processing", start_time=T0, now=T0 + 9)
    # the create's start_time fills what the placeholder lacked; its end stays
    assert (ended["status"], ended["start_time"], ended["end_time"]) == ("success", T0, T0 + 5)


def test_data_that_is_not_an_object_keeps_the_placeholders(store: Store, scope: Scope) -> None:
    by_ref(store, scope, data=[1, 2])
    assert create(store, scope, data={"a": 1})["data"] == [1, 2]
    by_ref(store, scope, "ref-dddddddddddddddd", value=1)
    assert create(store, scope, "ref-dddddddddddddddd", data="text")["data"] == "text"


def test_a_fill_in_fires_triggers_for_what_changed(store: Store, scope: Scope) -> None:
    by_ref(store, scope, value=10)
    action = {"trigger": "processing,50", "integration": "webhook:x", "config": {"url": "https://x.example"}}
    create(store, scope, status="processing", actions=[action], now=T0 + 2)
    with store.transaction(write=False) as tx:
        points = [f["point"] for f in list_firings(tx.cur)]
    assert points == ["processing"]


def test_actions_in_a_fill_in_are_added_once(store: Store, scope: Scope) -> None:
    action = {"trigger": "success", "integration": "email", "config": {"to": "a@example.com"}}
    task = by_ref(store, scope, actions=[action])
    create(store, scope, actions=[action, {**action, "trigger": "error"}])
    with store.transaction(write=False) as tx:
        assert [a["trigger"] for a in tx.list_actions(scope, task["id"])] == ["success", "error"]


# -- parents by reference -----------------------------------------------------------------------------------
def test_a_parent_ref_resolves_to_its_task(store: Store, scope: Scope) -> None:
    parent = create(store, scope, PARENT, name="parent")
    child = create(store, scope, parent_ref=PARENT)
    assert child["parent"] == parent["id"]
    attached = by_ref(store, scope, "ref-cccccccccccccccc", parent_ref=PARENT)
    assert attached["parent"] == parent["id"]


def test_an_unknown_parent_ref_makes_a_placeholder_parent(store: Store, scope: Scope) -> None:
    child = create(store, scope, parent_ref=PARENT)
    with store.transaction(write=False) as tx:
        (parent,) = tx.list_tasks(scope, ref=PARENT).results
    assert child["parent"] == parent["id"]
    assert (parent["name"], parent["status"]) == (PARENT, "pending")
    assert born(store, parent["id"]) == 0
    filled = create(store, scope, PARENT, name="the parent", status="processing")
    assert filled["id"] == parent["id"] and filled["name"] == "the parent"


def test_a_parent_ref_with_a_parent_of_its_own_gives_way_to_that_one(store: Store, scope: Scope) -> None:
    top = create(store, scope, GRANDPARENT, name="top")
    middle = create(store, scope, PARENT, parent_ref=GRANDPARENT)
    assert middle["parent"] == top["id"]
    child = create(store, scope, parent_ref=PARENT)
    assert child["parent"] == top["id"]  # a sibling of its parent: tasks nest one level deep


def test_a_fill_in_with_a_parent_moves_the_placeholders_children(store: Store, scope: Scope) -> None:
    kids = [create(store, scope, f"ref-kid{i}-aaaaaaaaaaaa", parent_ref=PARENT) for i in range(3)]
    top = create(store, scope, GRANDPARENT, name="top")
    parent = create(store, scope, PARENT, name="middle", parent_ref=GRANDPARENT)
    assert parent["parent"] == top["id"]
    with store.transaction(write=False) as tx:
        assert {tx.get_task(scope, k["id"])["parent"] for k in kids} == {top["id"]}
        assert {t["id"] for t in tx.list_tasks(scope, parent=top["id"]).results} == {
            parent["id"], *(k["id"] for k in kids)
        }


def test_a_fill_in_keeps_the_placeholders_parent(store: Store, scope: Scope) -> None:
    first = create(store, scope, GRANDPARENT, name="first")
    create(store, scope, "ref-other-parent-aaaa", name="other")
    by_ref(store, scope, parent_ref=GRANDPARENT)
    task = create(store, scope, parent_ref="ref-other-parent-aaaa")
    assert task["parent"] == first["id"]


def test_an_explicit_parent_keeps_todays_rules(store: Store, scope: Scope) -> None:
    with pytest.raises(ValidationError) as missing:
        create(store, scope, parent="no-such-task")
    assert missing.value.attr == "parent"
    top = create(store, scope, GRANDPARENT)
    middle = create(store, scope, PARENT, parent=top["id"])
    with pytest.raises(ValidationError) as nested:
        create(store, scope, parent=middle["id"])
    assert nested.value.attr == "parent"


@pytest.mark.parametrize(
    ("ref", "fields", "parent_ref"),
    [
        (REF, {"parent": "x"}, PARENT),  # both
        (REF, {}, REF),  # itself
    ],
)
def test_bad_parent_refs_are_refused(
    store: Store, scope: Scope, ref: str, fields: dict[str, Any], parent_ref: str
) -> None:
    with pytest.raises(ValidationError) as info:
        create(store, scope, ref, parent_ref=parent_ref, **fields)
    assert info.value.attr == "parent_ref"
    with pytest.raises(ValidationError) as info:
        by_ref(store, scope, ref, parent_ref=parent_ref, **fields)
    assert info.value.attr == "parent_ref"
    assert count(store, scope) == 0  # nothing left behind by the refused writes (their transactions rolled back)


def test_a_parent_ref_that_leads_back_to_the_task_is_refused(store: Store, scope: Scope) -> None:
    create(store, scope, "ref-child-aaaaaaaaaaa", parent_ref=PARENT)  # PARENT is a placeholder with a child
    with pytest.raises(ValidationError) as info:
        create(store, scope, PARENT, parent_ref="ref-child-aaaaaaaaaaa")
    assert info.value.attr == "parent_ref"


def test_an_updates_parent_ref_can_not_change_a_parent(store: Store, scope: Scope) -> None:
    create(store, scope, PARENT)
    create(store, scope, GRANDPARENT)
    task = create(store, scope, parent_ref=PARENT)
    assert by_ref(store, scope, parent_ref=PARENT)["parent"] == task["parent"]  # the same one is fine
    with pytest.raises(ValidationError) as info:
        by_ref(store, scope, parent_ref=GRANDPARENT)
    assert info.value.attr == "parent_ref"


# -- actions ------------------------------------------------------------------------------------------------
def test_an_action_key_returns_the_action_it_made(store: Store, scope: Scope) -> None:
    task = create(store, scope)
    other = create(store, scope, "ref-other-aaaaaaaaaaa")
    action = {"trigger": "success", "integration": "email", "config": {"to": "a@example.com"}}
    with store.transaction() as tx:
        first = tx.create_action(scope, task["id"], action, idempotency_key="k1")
        again = tx.create_action(scope, task["id"], {**action, "trigger": "error"}, idempotency_key="k1")
        second = tx.create_action(scope, task["id"], action, idempotency_key="k2")
        unkeyed = [tx.create_action(scope, task["id"], action) for _ in range(2)]
        elsewhere = tx.create_action(scope, other["id"], action, idempotency_key="k1")
    assert again == first and again["trigger"] == "success"
    assert len({first["id"], second["id"], elsewhere["id"], *(a["id"] for a in unkeyed)}) == 5


# -- migration ----------------------------------------------------------------------------------------------
def test_tasks_from_before_migration_4_are_born_and_have_no_ref(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskreport._store import _migrations

    monkeypatch.setattr(_migrations, "MIGRATIONS", _migrations.MIGRATIONS[:3])
    old = open_store(store_url)
    with old.transaction() as tx:
        # as version 3 wrote them
        org = tx.cur.insert("INSERT INTO organizations (slug, name, created) VALUES ('acme', 'acme', 1)")
        project = tx.cur.insert(
            "INSERT INTO projects (organization_id, slug, name, created) VALUES (?, 'web', 'web', 1)", (org,)
        )
        tx.cur.execute(
            "INSERT INTO tasks (public_id, project_id, name, status, created, updated, data)"
            " VALUES ('old-task', ?, 'old', 'pending', 1, 1, ?)",
            (project, json.dumps({"k": "v"})),
        )
    old.close()
    monkeypatch.undo()
    store = open_store(store_url)
    try:
        assert born(store, "old-task") == 1
        with store.transaction() as tx:
            scope = tx.ensure_project("acme", "web")
            task = tx.get_task(scope, "old-task")
            secret = tx.webhook_secret(scope.project_id)  # projects from before signing get one when needed
            assert secret.startswith("whsec_") and tx.webhook_secret(scope.project_id) == secret
        assert (task["ref"], task["data"]) == (None, {"k": "v"})
    finally:
        store.close()
