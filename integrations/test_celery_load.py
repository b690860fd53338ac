"""The 1,000-task run: a real prefork worker (4 children) on Redis, reporting into the embedded store, works
through successes, failures, retries, exhausted retries, revocations, soft and hard time limits and a chord;
afterwards there is exactly one taskreport task per Celery task id, each with the right status, value and
parent. Marked ``load``: it runs in every suite run, scheduled first so that it overlaps the rest."""

from __future__ import annotations

import collections
import time
from pathlib import Path

import pytest
from _celery_harness import Setup, Worker, redis_database

import taskreport

pytestmark = [pytest.mark.redis, pytest.mark.load, pytest.mark.xdist_group("celery-load")]


def test_one_thousand_celery_tasks_one_record_each(tmp_path: Path) -> None:
    import _celery_app

    with redis_database() as db:
        url = f"redis://127.0.0.1:6379/{db}"
        setup = Setup(broker=url, backend=url, queue="tr-load", report={"TASKREPORT_HOME": str(tmp_path / "home")},
                      flush=0.2)
        worker = Worker(setup, tmp_path / "worker.log", "-P", "prefork", "-c", "4")
        try:
            setup.init_publisher()
            app = _celery_app.make_app(setup.broker, setup.backend, setup.queue)
            t = app.tasks
            # Celery id -> (status, value, parent: "batch", "chord" or None)
            expected: dict[str, tuple[str, int | None, str | None]] = {}
            with taskreport.task("batch") as batch:
                for i in range(400):
                    expected[t["tr.add"].delay(i, 1).id] = ("success", i + 1, "batch")
                for _ in range(60):
                    expected[t["tr.fail"].delay("mixed").id] = ("error", None, "batch")
                for _ in range(40):
                    expected[t["tr.flaky"].delay(1, 0).id] = ("success", 1, "batch")
            for i in range(404):
                expected[t["tr.add"].delay(i, 2).id] = ("success", i + 2, None)
            for _ in range(20):
                expected[t["tr.flaky"].delay(10, 0).id] = ("error", None, None)
            # the revoke is a broadcast the worker must hear before the countdown ends; it is busy with the
            # other 939 tasks here, and on a slow machine with the rest of the suite beside it one second was
            # seen not to be enough (the revoked tasks ran). They come due well before the rest are done
            revoked = [t["tr.add"].apply_async((0, 0), countdown=10.0).id for _ in range(30)]
            app.control.revoke(revoked)
            expected.update({celery_id: ("cancelled", None, None) for celery_id in revoked})
            for _ in range(10):
                expected[t["tr.soft"].delay(2).id] = ("error", None, None)
            for _ in range(4):
                expected[t["tr.hard"].delay(3).id] = ("error", None, None)
            chord = t["tr.canvas"].delay("chord", 30)
            expected[chord.id] = ("success", None, None)
            assert len(expected) == 969  # and the chord's 30 members and callback: 1,000 Celery tasks
            assert taskreport.flush(10)

            deadline = time.monotonic() + 90
            while True:
                tasks = list(taskreport.list_tasks(page_size=500))
                open_ = [r for r in tasks if r.status.value not in ("success", "error", "cancelled")]
                if (len(tasks) >= 1001 and not open_) or time.monotonic() > deadline:
                    break
                time.sleep(1.0)
        finally:
            worker.stop()

    by_celery_id = collections.defaultdict(list)
    for record in tasks:
        by_celery_id[record.external_id].append(record)
    assert [r.name for r in by_celery_id.pop(None)] == ["batch"]
    assert len(by_celery_id) == 1000 and all(len(rs) == 1 for rs in by_celery_id.values())
    parents = {"batch": batch.id, None: None}
    wrong = []
    for celery_id, (status, value, parent) in expected.items():
        (record,) = by_celery_id.pop(celery_id)
        if (record.status.value, record.parent) != (status, parents[parent]) or (
            value is not None and record.value != value
        ):
            wrong.append((record.name, celery_id, record.status.value, record.value, record.parent, status, value))
    assert not wrong, wrong[:10]
    chord_parent = next(r for r in tasks if r.external_id == chord.id)
    members = sorted((r.name, r.status.value, r.parent == chord_parent.id) for rs in by_celery_id.values() for r in rs)
    assert members == [("tr.add", "success", True)] * 30 + [("tr.total", "success", True)]
    callback = next(r for rs in by_celery_id.values() for r in rs if r.name == "tr.total")
    assert callback.value == sum(2 * i for i in range(30))
