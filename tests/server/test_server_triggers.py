"""Trigger rules: which point of an action a task write fires, and that firings land in the outbox."""

from __future__ import annotations

from typing import Any

import pytest

from taskreport._errors import ValidationError
from taskreport._store import open_store
from taskreport._store._outbox import list_firings
from taskreport._store._triggers import check_action, fired_point, parse_trigger


def _state(value: int | None = None, status: str = "processing", value_max: int = 100) -> dict[str, Any]:
    percent = None if value is None else min(100, value * 100 // value_max)
    return {"value": value, "value_percent": percent, "status": status}


@pytest.mark.parametrize(
    ("trigger", "old", "new", "expected"),
    [
        # a number fires when value reaches or passes it, once
        ("50", _state(10), _state(50), "50"),
        ("50", _state(10), _state(70), "50"),
        ("50", _state(10), _state(49), None),
        ("50", _state(50), _state(60), None),
        ("50", None, _state(80), "50"),
        ("50", _state(None), _state(None), None),
        # percentages compare against value_percent
        ("95%", _state(90, value_max=1000), _state(960, value_max=1000), "95%"),
        ("95%", _state(900, value_max=1000), _state(940, value_max=1000), None),
        ("95%", _state(10), _state(95), "95%"),
        # several points passed by one write: only the last fires, once
        ("25,50,75", _state(0), _state(80), "75"),
        ("25%,50%,75%", _state(30), _state(60), "50%"),
        ("*/10", _state(3), _state(47), "40"),
        ("*/10", _state(40), _state(47), None),
        ("*/50%", None, _state(0), "0%"),
        ("*/50%", _state(0), _state(49), None),
        ("*/50%", _state(0), _state(50), "50%"),
        ("*/50%", _state(10), _state(100), "100%"),
        ("*/50%", _state(None), _state(100), "100%"),
        # statuses fire when the task enters them
        ("success", _state(10, "processing"), _state(10, "success"), "success"),
        ("success", _state(10, "success"), _state(20, "success"), None),
        ("pending", None, _state(None, "pending"), "pending"),
        ("error", _state(1), _state(1, "processing"), None),
        # mixed: the last passed point in the order written
        ("90%,success", _state(50), _state(100, "success"), "success"),
        ("success,90%", _state(50), _state(100, "success"), "90%"),
        ("50,stale", _state(60), _state(60, "stale"), "stale"),
    ],
)
def test_fired_point(trigger: str, old: dict[str, Any] | None, new: dict[str, Any], expected: str | None) -> None:
    assert fired_point(parse_trigger(trigger), old, new) == expected


def test_max_runtime_exceeded_is_an_event_not_a_status() -> None:
    points = parse_trigger("max_runtime_exceeded")
    assert fired_point(points, _state(1), _state(1, "error")) is None
    assert fired_point(points, _state(1), _state(1, "error"), events={"max_runtime_exceeded"}) == (
        "max_runtime_exceeded"
    )
    both = parse_trigger("error,max_runtime_exceeded")
    assert fired_point(both, _state(1), _state(1, "error"), events={"max_runtime_exceeded"}) == ("max_runtime_exceeded")


@pytest.mark.parametrize("trigger", ["", "50,", "fast", "*/0", "*/0%", "101%", "*/success", "-5", "5.5"])
def test_invalid_triggers_are_rejected(trigger: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_trigger(trigger)
    assert info.value.attr == "trigger"


@pytest.mark.parametrize(
    ("fields", "attr"),
    [
        ({"trigger": "50", "integration": "slack", "config": {}}, "integration"),
        ({"trigger": "50", "integration": "webhook:", "config": {"url": "http://x"}}, "integration"),
        ({"trigger": "50", "integration": "webhook:ci", "config": {}}, "config"),
        ({"trigger": "50", "integration": "webhook:ci", "config": {"url": "ftp://x"}}, "config"),
        ({"trigger": "50", "integration": "email", "config": None}, "config"),
        ({"trigger": "nope", "integration": "email", "config": {"to": "a@b.c"}}, "trigger"),
    ],
)
def test_check_action_rejects(fields: dict[str, Any], attr: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_action(fields)
    assert info.value.attr == attr


def test_check_action_accepts_webhook_and_email() -> None:
    check_action({"trigger": "*/25%,success", "integration": "webhook:ci", "config": {"url": "https://h/x"}})
    check_action({"trigger": "error", "integration": "email", "config": {"to": "ops@example.com"}})


def test_store_writes_queue_firings_in_the_same_transaction(store_url: str) -> None:
    store = open_store(store_url)
    try:
        with store.transaction() as tx:
            scope = tx.ensure_project("acme", "web")
            action = {"trigger": "*/50%,success", "integration": "email", "config": {"to": "a@b.c"}}
            task = tx.create_task(scope, {"name": "job", "value": 0, "actions": [action]})
        with pytest.raises(RuntimeError), store.transaction() as tx:
            tx.update_task(scope, task["id"], {"value": 60})
            raise RuntimeError("rolled back")
        with store.transaction() as tx:
            tx.update_task(scope, task["id"], {"value": 60})
            tx.update_task(scope, task["id"], {"value": 70})
            tx.update_task(scope, task["id"], {"value": 100, "status": "success"})
            tx.cancel_task(scope, task["id"])
        with store.transaction(write=False) as tx:
            firings = list_firings(tx.cur)
        assert [f["point"] for f in firings] == ["0%", "50%", "success"]
        assert all(f["state"] == "pending" for f in firings)
        # the payload is the task as it was when the point was reached
        import json

        assert json.loads(firings[1]["payload"])["value"] == 60
    finally:
        store.close()


def test_cancelled_actions_do_not_fire_and_sweeper_fires_max_runtime(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    try:
        with store.transaction() as tx:
            scope = tx.ensure_project("acme", "web")
            task = tx.create_task(scope, {"name": "job", "status": "processing", "max_runtime": 5}, now=1000.0)
            live = tx.create_action(
                scope, task["id"], {"trigger": "error,max_runtime_exceeded", "integration": "email"}, now=1000.0
            )
            gone = tx.create_action(scope, task["id"], {"trigger": "error", "integration": "email"}, now=1000.0)
            tx.cancel_action(scope, task["id"], gone["id"])
            swept = tx.sweep(now=1010.0)
            firings = list_firings(tx.cur)
        assert [reason for _, _, reason in swept] == ["max_runtime_exceeded"]
        assert [(f["action_id"], f["point"]) for f in firings] == [(live["id"], "max_runtime_exceeded")]
    finally:
        store.close()
