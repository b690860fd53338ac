"""The group-commit writer: every queued write is answered, also when the writer stops."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from taskreport._errors import TaskReportError
from taskreport._store import Tx, open_store
from taskreport.server._writer import Writer


def test_writes_queued_behind_the_stop_are_refused_not_left_waiting(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    writer = Writer(store)
    writer.start()
    inside, release = threading.Event(), threading.Event()

    def slow(tx: Tx) -> str:
        inside.set()
        release.wait(5)
        return "written"

    async def scenario() -> tuple[Any, ...]:
        first = asyncio.ensure_future(writer.run(slow))
        await asyncio.to_thread(inside.wait, 5)
        # stop while the first write runs: its stop marker is queued before the next write
        stopping = threading.Thread(target=writer.stop)
        stopping.start()
        while not writer.closed:
            await asyncio.sleep(0.001)
        late = asyncio.ensure_future(writer.run(lambda tx: "late"))
        await asyncio.sleep(0)  # the late write runs up to its refusal
        release.set()
        results = await asyncio.wait_for(asyncio.gather(first, late, return_exceptions=True), 5)
        await asyncio.to_thread(stopping.join, 5)
        # and a write that comes once the writer has stopped is refused at once
        after = await asyncio.wait_for(asyncio.gather(writer.run(lambda tx: "after"), return_exceptions=True), 5)
        return (*results, *after)

    try:
        first, late, after = asyncio.run(scenario())
    finally:
        release.set()
        store.close()
    assert first == "written"
    for refused in (late, after):
        assert isinstance(refused, TaskReportError) and refused.status_code == 503
        assert refused.to_body()["type"] == "server_error"
        assert refused.to_body()["errors"][0]["code"] == "service_unavailable"


def test_a_stopped_server_refuses_writes_with_503(sqlite_server: Any) -> None:
    app = sqlite_server.app
    asyncio.run(app.shutdown())
    with pytest.raises(TaskReportError) as raised:
        asyncio.run(app.api.write(lambda tx: None))
    assert raised.value.status_code == 503


def test_every_writer_thread_stops(store_url: str) -> None:
    # PostgreSQL's writer runs several threads on one queue: each must get its own stop
    store = open_store(store_url)
    writer = Writer(store, threads=4)
    writer.start()

    async def some_writes() -> list[Any]:
        with_project = await writer.run(lambda tx: tx.ensure_project("acme", "web"))
        writes = [writer.run(lambda tx: tx.create_task(with_project, {"name": "t"})) for _ in range(8)]
        return await asyncio.gather(*writes)

    try:
        assert len(asyncio.run(some_writes())) == 8
        writer.stop(timeout=10)
        alive = [t.name for t in threading.enumerate() if t.name.startswith("taskreport-writer") and t.is_alive()]
        assert alive == []
    finally:
        store.close()
