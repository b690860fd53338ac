"""``heartbeat=SECONDS`` on ``@track``/``task()``: a task that is busy but quiet is not swept as stale, while
one without a heartbeat is. Against a real server (its sweeper running) and against the embedded store."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import taskreport
from taskreport import Status
from taskreport._store import open_store


def test_quiet_tracked_task_with_a_heartbeat_survives_the_servers_sweeper(server_factory: Callable[..., Any]) -> None:
    live = server_factory("sqlite", sweep_interval=0.2)
    taskreport.init(
        url=live.url, token=live.token, organization=live.organization, project=live.project, flush_interval=0.2
    )
    control = taskreport.Task.create("no-heartbeat", status="processing", stale_timeout=2)
    seen: list[Status] = []

    @taskreport.track(name="quiet", heartbeat=1)
    def quiet() -> str:
        task = taskreport.current_task()
        assert task is not None and task.wait_id(10) is not None
        deadline = time.monotonic() + 3.2
        while time.monotonic() < deadline:  # busy, sending nothing itself
            time.sleep(0.2)
            seen.append(taskreport.get_task(task.id).status)
        return "done"

    assert quiet() == "done"
    assert taskreport.flush(10)
    assert seen and set(seen) == {Status.PROCESSING}
    record = next(iter(taskreport.list_tasks(name="quiet")))
    assert (record.status, record.stale_timeout) == (Status.SUCCESS, 2)
    assert control.wait_id(10) is not None
    assert taskreport.get_task(control.id).status is Status.STALE


def test_heartbeat_keeps_updated_fresh_in_the_embedded_store() -> None:
    with taskreport.task("beating", heartbeat=0.3) as beating:
        control = taskreport.Task.create("silent", status="processing", stale_timeout=1, parent=None)
        assert beating.wait_id(10) is not None and control.wait_id(10) is not None
        created = taskreport.get_task(beating.id).updated
        time.sleep(1.3)
        assert taskreport.flush(5)
        refreshed = taskreport.get_task(beating.id).updated
        assert created is not None and refreshed is not None
        assert (refreshed - created).total_seconds() > 0.6
        store = open_store(taskreport.get_client().config.store_url)
        try:
            with store.transaction() as tx:
                swept = {row["id"]: reason for _, row, reason in tx.sweep(now=time.time())}
        finally:
            store.close()
        assert swept == {control.id: "stale"}
    assert taskreport.flush(5)
    assert taskreport.get_task(beating.id).status is Status.SUCCESS
