"""PostgreSQL through a bounded pool: a process never opens more connections than its pool allows, a forked
child never touches its parent's connections, and concurrent sweeps (several servers on one database) mark
each task once."""

from __future__ import annotations

import os
import threading
import time
import urllib.parse

import pytest

from taskreport._store import Store, open_store

pytestmark = pytest.mark.postgres


def _app_name(url: str) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["application_name"][0]


def _connections(url: str) -> int:
    import psycopg

    with psycopg.connect(url.split("?", 1)[0], autocommit=True) as admin:
        row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (_app_name(url),))
        return int(row.fetchone()[0])  # type: ignore[index]


def test_many_threads_share_a_bounded_pool(postgres_url: str) -> None:
    store = open_store(postgres_url, pool_size=3)
    try:
        with store.transaction() as tx:
            scope = tx.ensure_project("acme", "web")
            task = tx.create_task(scope, {"name": "shared"})
        peak = 0
        errors: list[BaseException] = []
        barrier = threading.Barrier(20)

        def work() -> None:
            try:
                barrier.wait(10)
                for n in range(10):
                    with store.transaction() as tx:
                        tx.update_task(scope, task["id"], {"value": n})
                        tx.cur.execute("SELECT pg_sleep(0.002)")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(20)]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            peak = max(peak, _connections(postgres_url))
            time.sleep(0.01)
        assert not errors
        assert 1 <= peak <= 3
        with store.transaction(write=False) as tx:
            assert tx.get_task(scope, task["id"])["value"] == 9
    finally:
        store.close()


def test_a_forked_child_leaves_its_parents_connections_alone(postgres_url: str) -> None:
    store = open_store(postgres_url)
    try:
        with store.transaction() as tx:
            scope = tx.ensure_project("acme", "web")
            task = tx.create_task(scope, {"name": "before fork"})
        pid = os.fork()
        if pid == 0:  # the child: its own pool; then exit without running the parent's atexit handlers
            code = 1
            try:
                with store.transaction() as tx:
                    tx.update_task(scope, task["id"], {"value": 42})
                store.close()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # the parent's pooled connection still works: the child neither used nor closed it
        with store.transaction() as tx:
            assert tx.get_task(scope, task["id"])["value"] == 42
            tx.update_task(scope, task["id"], {"value": 43})
    finally:
        store.close()


def test_concurrent_sweeps_mark_each_task_once(postgres_url: str) -> None:
    stores: list[Store] = [open_store(postgres_url) for _ in range(3)]
    try:
        with stores[0].transaction() as tx:
            scope = tx.ensure_project("acme", "web")
            ids = [
                tx.create_task(scope, {"name": f"t{n}", "status": "processing", "stale_timeout": 1}, now=1000.0)["id"]
                for n in range(40)
            ]
        marked: list[str] = []
        lock = threading.Lock()
        barrier = threading.Barrier(len(stores))

        def sweep(store: Store) -> None:
            barrier.wait(10)
            for _ in range(5):
                with store.transaction() as tx:
                    changed = tx.sweep(now=5000.0)
                with lock:
                    marked.extend(task["id"] for _scope, task, _reason in changed)

        threads = [threading.Thread(target=sweep, args=(s,)) for s in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(marked) == sorted(ids)
        with stores[0].transaction(write=False) as tx:
            assert {tx.get_task(scope, i)["status"] for i in ids} == {"stale"}
    finally:
        for store in stores:
            store.close()


def test_a_single_statement_commits_on_its_own_and_leaves_its_connection_usable(postgres_url: str) -> None:
    store = open_store(postgres_url, pool_size=1)
    other = open_store(postgres_url, pool_size=1)
    try:
        with store.transaction() as tx:
            scope = tx.ensure_project("acme", "web")
            task = tx.create_task(scope, {"name": "progress"})
        with store.statement() as tx:
            assert tx.update_progress(scope, task["id"], {"value": 5}) is not None
            # no transaction around it: committed by the statement, so seen elsewhere before the block ends
            with other.transaction(write=False) as seen:
                assert seen.get_task(scope, task["id"])["value"] == 5
        with pytest.raises(Exception, match="NUL"), store.statement() as tx:
            tx.update_progress(scope, "bad\x00id", {"value": 6})
        # the pool's only connection came back after the failure, outside any transaction
        with store.statement() as tx:
            assert tx.update_progress(scope, task["id"], {"value": 7})["value"] == 7
        with store.transaction(write=False) as tx:
            assert tx.get_task(scope, task["id"])["value"] == 7
    finally:
        store.close()
        other.close()


def test_a_transaction_inside_a_statement_is_refused_and_the_store_goes_on(postgres_url: str) -> None:
    """Inside ``statement()`` a transaction would take another connection and commit apart from the statement
    (a savepoint or a rollback there would not undo the statement): refused at once, before it begins."""
    store = open_store(postgres_url, pool_size=2)
    try:
        with store.transaction() as tx:
            scope = tx.ensure_project("acme", "web")
            task = tx.create_task(scope, {"name": "progress"})
        for nested in (lambda: store.transaction(), lambda: store.statement()):
            with pytest.raises(RuntimeError, match=r"inside Store\.statement"), store.statement() as tx:
                tx.update_progress(scope, task["id"], {"value": 5})
                with nested():
                    pass  # pragma: no cover - refused on entry
        # the statement before the refusal was its own commit; the store and its connections go on
        with store.transaction() as tx:
            assert tx.get_task(scope, task["id"])["value"] == 5
            tx.update_task(scope, task["id"], {"value": 6})
        with store.statement() as tx:
            assert tx.update_progress(scope, task["id"], {"value": 7})["value"] == 7
    finally:
        store.close()
