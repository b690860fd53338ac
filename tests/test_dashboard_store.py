"""The dashboard's reads and writes in the store (SQLite and PostgreSQL): the task list's filters and keyset
paging, a name search read in bounded slices, "changed since", sessions and the shared secret."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from taskreport._store import Store, open_store
from taskreport._store import _dashboard as dash


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    opened = open_store(str(url))
    yield opened
    opened.close()


def make_tasks(store: Store, specs: list[dict[str, Any]]) -> tuple[Any, list[str]]:
    ids = []
    with store.transaction() as tx:
        scope = tx.ensure_project("acme", "web")
        for spec in specs:
            ids.append(tx.create_task(scope, {"name": "job", **spec})["id"])
    return scope, ids


def walk(store: Store, scope: Any, **filters: Any) -> list[str]:
    """Every page, newest first, following next cursors; then back again with previous cursors."""
    forward: list[list[str]] = []
    cursor = None
    with store.transaction(write=False) as tx:
        while True:
            page = dash.list_page(tx, scope, cursor=cursor, page_size=3, **filters)
            forward.append([t["id"] for t in page.results])
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        backward = [forward[-1]]
        while page.previous_cursor is not None:
            page = dash.list_page(tx, scope, cursor=page.previous_cursor, page_size=3, **filters)
            backward.append([t["id"] for t in page.results])
    flat = [i for p in forward for i in p]
    assert [i for p in reversed(backward) for i in p] == flat
    return flat


def test_filters_and_paging_match_the_tasks(store: Store) -> None:
    specs = [{"name": f"Import {i}" if i % 2 else f"send {i}", "status": ["success", "error", "processing"][i % 3],
              "tags": {"env": "prod" if i % 4 == 0 else "dev"}} for i in range(20)]  # fmt: skip
    scope, ids = make_tasks(store, specs)
    newest = list(reversed(range(20)))
    assert walk(store, scope) == [ids[i] for i in newest]
    assert walk(store, scope, statuses=["error"]) == [ids[i] for i in newest if i % 3 == 1]
    assert walk(store, scope, statuses=["error", "success"]) == [ids[i] for i in newest if i % 3 != 2]
    assert walk(store, scope, name="IMPORT") == [ids[i] for i in newest if i % 2]
    assert walk(store, scope, tag="env:prod") == [ids[i] for i in newest if i % 4 == 0]
    both = walk(store, scope, tag="env:prod", statuses=["success"])
    assert both == [ids[i] for i in newest if i % 4 == 0 and i % 3 == 0]
    assert walk(store, scope, name="send", statuses=["processing", "error"]) == [
        ids[i] for i in newest if i % 2 == 0 and i % 3 != 0
    ]
    assert walk(store, scope, name="no such name") == []


def test_a_name_with_like_characters_is_taken_literally(store: Store) -> None:
    scope, ids = make_tasks(store, [{"name": "100% done"}, {"name": "100 done"}, {"name": "a_b"}, {"name": "axb"}])
    assert walk(store, scope, name="100%") == [ids[0]]
    assert walk(store, scope, name="a_b") == [ids[2]]


def test_a_name_search_reads_a_bounded_slice_per_page(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dash, "NAME_CHUNK", 5)
    monkeypatch.setattr(dash, "NAME_BUDGET", 0.0)  # one slice per page
    specs = [{"name": "needle" if i in (2, 13) else f"hay {i}"} for i in range(17)]
    scope, ids = make_tasks(store, specs)
    with store.transaction(write=False) as tx:
        pages = []
        cursor = None
        while True:
            page = dash.list_page(tx, scope, cursor=cursor, name="needle", page_size=3)
            pages.append(([t["id"] for t in page.results], page.partial))
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    # 17 tasks, 5 read per page (16-12, 11-7, 6-2, 1-0): a needle in the first slice and in the third
    assert pages == [([ids[13]], True), ([], True), ([ids[2]], True), ([], False)]
    assert walk(store, scope, name="needle") == [ids[13], ids[2]]


def test_bad_filters_name_their_field(store: Store) -> None:
    from taskreport import ValidationError

    scope, _ = make_tasks(store, [{}])
    with store.transaction(write=False) as tx:
        for kwargs, attr in (({"tag": "novalue"}, "tag"), ({"statuses": ["nope"]}, "status"),
                             ({"cursor": "%%%"}, "cursor")):  # fmt: skip
            with pytest.raises(ValidationError) as raised:
                dash.list_page(tx, scope, **kwargs)
            assert raised.value.attr == attr


def test_changed_since_sees_the_watched_projects_changes_oldest_first(store: Store) -> None:
    scope, ids = make_tasks(store, [{}, {}])
    with store.transaction() as tx:
        other = tx.ensure_project("acme", "other")
        elsewhere = tx.create_task(other, {"name": "other"})["id"]
    mark = time.time()
    time.sleep(0.01)
    with store.transaction() as tx:
        tx.update_task(scope, ids[1], {"value": 5})
        tx.update_task(scope, ids[0], {"value": 6})
        tx.update_task(other, elsewhere, {"value": 7})
    with store.transaction(write=False) as tx:
        rows = dash.changed_since(tx.cur, mark, [scope.project_id])
    assert [(r["id"], r["value"]) for r in rows] == [(ids[1], 5), (ids[0], 6)]
    assert all(r["project_id"] == scope.project_id and "data" not in r for r in rows)
    with store.transaction(write=False) as tx:
        assert len(dash.changed_since(tx.cur, mark, [scope.project_id, other.project_id])) == 3
        assert dash.changed_since(tx.cur, time.time() + 1, [scope.project_id]) == []


def test_sessions_end_on_sign_out_and_expire(store: Store) -> None:
    with store.transaction() as tx:
        tx.ensure_project("acme", "web")
        user = tx.create_user("alice", "password-1", "acme")
        key = dash.create_session(tx, user, 3600)
        short = dash.create_session(tx, user, -1)
    with store.transaction(write=False) as tx:
        found = dash.session_user(tx, key)
        assert found is not None and found.username == "alice" and found.user_id == user
        assert dash.session_user(tx, short) is None
        assert dash.session_user(tx, "not a key") is None
    with store.transaction() as tx:
        dash.end_session(tx, key)
    with store.transaction(write=False) as tx:
        assert dash.session_user(tx, key) is None


def test_the_secret_is_made_once_and_shared(store: Store) -> None:
    with store.transaction() as tx:
        first = dash.secret(tx)
    again = open_store(store.url)
    try:
        with again.transaction() as tx:
            assert dash.secret(tx) == first and len(first) >= 64
            dash.rotate_secret(tx)
            assert dash.secret(tx) != first
    finally:
        again.close()


def test_public_details_is_a_project_setting(store: Store) -> None:
    from taskreport import NotFound

    with store.transaction() as tx:
        scope = tx.ensure_project("acme", "web")
        assert dash.project_settings(tx, scope.project_id) == {"public_details": False}
        dash.set_public_details(tx, "acme", "web", True)
        assert dash.project_settings(tx, scope.project_id) == {"public_details": True}
        with pytest.raises(NotFound):
            dash.set_public_details(tx, "acme", "nope", True)


def test_changed_since_across_minutes_in_order(store: Store) -> None:
    """On PostgreSQL the feed walks the minute a task changed in, not ``updated`` (migration 7): changes an
    hour, a minute and a second apart still come oldest first, and only those after the moment asked."""
    scope, ids = make_tasks(store, [{}, {}, {}, {}, {}, {}])
    base = 60 * (int(time.time()) // 60) - 3600
    # two a thousandth apart across a minute's end; the last two within one minute, the later made first
    stamps = [base + 3599.5, base - 0.25, base + 60.0, base + 59.999, base + 30.75, base + 30.5]
    with store.transaction() as tx:
        for task_id, stamp in zip(ids, stamps, strict=True):
            tx.cur.execute("UPDATE tasks SET updated = ? WHERE public_id = ?", (stamp, task_id))
    order = [task_id for _, task_id in sorted(zip(stamps, ids, strict=True))]
    with store.transaction(write=False) as tx:
        assert [r["id"] for r in dash.changed_since(tx.cur, base - 3600, [scope.project_id])] == order
        assert [r["id"] for r in dash.changed_since(tx.cur, base + 59.999, [scope.project_id])] == order[4:]
        assert [r["id"] for r in dash.changed_since(tx.cur, base + 30.5, [scope.project_id])] == order[2:]
        assert [r["id"] for r in dash.changed_since(tx.cur, base - 0.25, [scope.project_id], limit=2)] == order[1:3]


def _in_place(tx: Any) -> dict[str, int]:
    """Updates of ``tasks`` this session counted and has not yet reported, and how many were in place (HOT)."""
    row = tx.cur.one("SELECT pg_stat_get_xact_tuples_updated('tasks'::regclass) AS updated,"
                     " pg_stat_get_xact_tuples_hot_updated('tasks'::regclass) AS hot")  # fmt: skip
    return {"updated": int(row["updated"]), "hot": int(row["hot"])}


@pytest.mark.postgres
def test_progress_updates_on_postgresql_touch_no_index(postgres_url: str) -> None:
    """A PATCH of a running task's value is the commonest write: PostgreSQL writes it in place (a HOT update,
    no new entry in any of the table's indexes) since no index holds ``value`` or ``updated``. Each round is
    its own transaction, as the server's are. Few enough versions of few rows that they fit in one page even
    if none can be cleared away yet (a concurrent transaction elsewhere in the database holds them)."""
    store = open_store(postgres_url)
    try:
        scope, ids = make_tasks(store, [{"status": "processing"} for _ in range(5)])
        seen = []
        for n in range(4):
            with store.transaction() as tx:
                before = _in_place(tx)
                if n % 2:
                    for task_id in ids:
                        tx.update_task(scope, task_id, {"value": n})
                else:
                    assert len(tx.update_progress_many(scope, [(t, {"value": n, "value_max": 200}) for t in ids])) == 5
                after = _in_place(tx)
                seen.append({key: after[key] - before[key] for key in after})
        assert seen == [{"updated": 5, "hot": 5}] * 4
        with store.transaction() as tx:
            before = _in_place(tx)
            tx.update_task(scope, ids[0], {"status": "success"})
            after = _in_place(tx)
        # the status is indexed: a new entry in the indexes, as it must be
        assert {key: after[key] - before[key] for key in after} == {"updated": 1, "hot": 0}
    finally:
        store.close()
