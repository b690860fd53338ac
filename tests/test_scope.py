"""``scope(data=..., tags=...)``, global tags from ``init(tags=...)`` and the ``before_create`` hook."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from recorded import only, records

import taskreport
from taskreport import ValidationError
from taskreport.testing import TaskRecorder


def test_scope_adds_data_and_tags_to_tasks_created_inside(taskreport_tasks: TaskRecorder) -> None:
    with taskreport.scope(data={"request": "r-1"}, tags={"tenant": "acme"}):
        with taskreport.task("inside"):
            pass
        taskreport.Task.create("created").success()
    with taskreport.task("outside"):
        pass
    for name in ("inside", "created"):
        record = taskreport_tasks.get(name)
        assert (record.data, record.tags) == ({"request": "r-1"}, {"tenant": "acme"})
    outside = taskreport_tasks.get("outside")
    assert (outside.data, outside.tags) == (None, {})


def test_nested_scopes_merge_and_the_tasks_own_fields_win(taskreport_tasks: TaskRecorder) -> None:
    with taskreport.scope(data={"a": 1, "b": 1}, tags={"env": "prod", "team": "ops"}):
        with (
            taskreport.scope(data={"b": 2}, tags={"team": "data"}),
            taskreport.task("deep", data={"c": 3}, tags={"env": "test"}),
        ):
            pass
        with taskreport.task("shallow"):
            pass
    deep = taskreport_tasks.get("deep")
    assert deep.data == {"a": 1, "b": 2, "c": 3}
    assert deep.tags == {"env": "test", "team": "data"}
    assert taskreport_tasks.get("shallow").tags == {"env": "prod", "team": "ops"}


def test_scope_applies_to_decorated_calls_and_progress(taskreport_tasks: TaskRecorder) -> None:
    @taskreport.track(name="step")
    def step() -> None:
        pass

    with taskreport.scope(tags={"run": "r7"}):
        step()
        for _ in taskreport.progress(range(3), name="loop"):
            pass
    assert taskreport_tasks.get("step").tags == {"run": "r7"} and taskreport_tasks.get("loop").tags == {"run": "r7"}


async def test_concurrent_asyncio_tasks_do_not_see_each_others_scope(taskreport_tasks: TaskRecorder) -> None:
    async def handle(request: str) -> None:
        with taskreport.scope(tags={"request": request}):
            await asyncio.sleep(0)  # let the other handler enter its scope meanwhile
            async with taskreport.task(f"handle-{request}"):
                await asyncio.sleep(0)

    await asyncio.gather(handle("r1"), handle("r2"))
    assert taskreport_tasks.get("handle-r1").tags == {"request": "r1"}
    assert taskreport_tasks.get("handle-r2").tags == {"request": "r2"}


def test_invalid_scope_fields_raise_at_the_scope() -> None:
    with pytest.raises(ValidationError) as info:
        taskreport.scope(tags={"env": "x"})
    assert info.value.attr == "tags.env"
    with pytest.raises(ValidationError) as info:
        taskreport.scope(data={"when": object()})
    assert info.value.attr == "data"


def test_global_tags_from_init_apply_under_scope_and_task_tags() -> None:
    taskreport.init(tags={"host": "web-1", "env": "prod"})
    with taskreport.scope(tags={"env": "staging"}), taskreport.task("tagged", tags={"job": "nightly"}):
        pass
    assert only("tagged").tags == {"host": "web-1", "env": "staging", "job": "nightly"}


def test_before_create_can_change_or_drop_tasks() -> None:
    seen: list[dict[str, Any]] = []

    def hook(fields: dict[str, Any]) -> dict[str, Any] | None:
        seen.append(fields)
        if fields["name"].startswith("noisy"):
            return None
        return {**fields, "tags": {**fields.get("tags", {}), "hooked": "yes"}}

    taskreport.init(before_create=hook)

    @taskreport.track(name="noisy-check")
    def noisy() -> str:
        assert taskreport.current_task() is not None  # a dropped task is a no-op handle, not an absent one
        return "still ran"

    with taskreport.scope(data={"scoped": True}):
        assert noisy() == "still ran"
        with taskreport.task("kept"):
            pass
    assert records(name="noisy-check") == []
    assert only("kept").tags == {"hooked": "yes"}
    # the hook sees the fields with the scope already applied
    assert seen[0]["data"] == {"scoped": True}
