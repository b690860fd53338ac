"""A create carrying an idempotency key, made twice (a retry whose first answer was lost), makes one task."""

from __future__ import annotations

import threading
from typing import Any

from taskreport._store import open_store


def test_same_key_returns_the_first_task_as_it_is(store_url: str) -> None:
    store = open_store(store_url)
    try:
        with store.transaction() as tx:
            scope = tx.ensure_project("acme", "web")
            first = tx.create_task(scope, {"name": "job", "value": 1,
                                           "actions": [{"trigger": "success", "integration": "email"}]},
                                   idempotency_key="k1")
        with store.transaction() as tx:
            again = tx.create_task(scope, {"name": "job", "value": 7, "status": "success",
                                           "actions": [{"trigger": "success", "integration": "email"}]},
                                   idempotency_key="k1")
            other = tx.create_task(scope, {"name": "job"}, idempotency_key="k2")
            unkeyed = [tx.create_task(scope, {"name": "job"}) for _ in range(2)]
        assert again["id"] == first["id"]
        # a replay changes nothing: the task is a reference's, and later writes go by that reference
        assert (again["value"], again["status"], again.replayed) == (1, "pending", True)
        assert len({first["id"], other["id"], *(t["id"] for t in unkeyed)}) == 4
        with store.transaction(write=False) as tx:
            assert len(tx.list_tasks(scope).results) == 4
            assert len(tx.list_actions(scope, first["id"])) == 1  # the replay made no second action
            other_project = tx.ensure_project("acme", "other")
        with store.transaction() as tx:
            # keys are per project
            assert tx.create_task(other_project, {"name": "job"}, idempotency_key="k1")["id"] != first["id"]
    finally:
        store.close()


def test_concurrent_creates_with_one_key_make_one_task(store_url: str) -> None:
    store = open_store(store_url)
    with store.transaction() as tx:
        scope = tx.ensure_project("acme", "web")
    results: list[Any] = []
    barrier = threading.Barrier(4)

    def create() -> None:
        barrier.wait()
        try:
            with store.transaction() as tx:
                results.append(tx.create_task(scope, {"name": "race"}, idempotency_key="same")["id"])
        except Exception as exc:  # pragma: no cover - reported by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert all(isinstance(r, str) for r in results), results
        assert len(set(results)) == 1 and len(results) == 4
        with store.transaction(write=False) as tx:
            assert len(tx.list_tasks(scope).results) == 1
    finally:
        store.close()


def test_a_late_replay_never_takes_a_finished_task_back(store_url: str) -> None:
    store = open_store(store_url)
    try:
        with store.transaction() as tx:
            scope = tx.ensure_project("acme", "web")
            first = tx.create_task(scope, {"name": "job", "value": 1}, idempotency_key="k")
            tx.update_task(scope, first["id"], {"value": 10, "status": "success"})
        with store.transaction() as tx:
            # a spooled copy of the early state, delivered after the task finished
            late = tx.create_task(scope, {"name": "job", "value": 1, "status": "processing"}, idempotency_key="k")
        assert (late["id"], late["value"], late["status"]) == (first["id"], 10, "success")
    finally:
        store.close()


def test_actions_in_a_body_sent_again_are_made_once_and_new_ones_kept(store_url: str) -> None:
    store = open_store(store_url)
    first_action = {"trigger": "success", "integration": "webhook:first"}
    second_action = {"trigger": "error", "integration": "webhook:second", "config": {"url": "https://x"}}
    try:
        with store.transaction() as tx:
            scope = tx.ensure_project("acme", "web")
            task = tx.create_task(scope, {"name": "job", "actions": [first_action]}, idempotency_key="k")
        with store.transaction() as tx:
            # the retry of the create carries an action added meanwhile (a replay adds nothing); then a PATCH
            # carrying it is sent twice
            tx.create_task(scope, {"name": "job", "actions": [first_action, second_action]}, idempotency_key="k")
            tx.update_task(scope, task["id"], {"actions": [second_action]})
            tx.update_task(scope, task["id"], {"actions": [second_action]})
        with store.transaction(write=False) as tx:
            made = [(a["integration"], a["config"]) for a in tx.list_actions(scope, task["id"])]
        assert made == [("webhook:first", None), ("webhook:second", {"url": "https://x"})]
    finally:
        store.close()
