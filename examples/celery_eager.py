"""Celery tasks reported by the Celery integration, run in eager mode so that no broker or worker is needed.

In production the same module is imported by the worker (``celery -A examples.celery_eager worker``) and by
the code that publishes; drop ``task_always_eager`` and point ``broker`` at Redis or RabbitMQ.

    python examples/celery_eager.py
    taskreport list
"""

from __future__ import annotations

from celery import Celery

import taskreport
from taskreport.integrations.celery import CeleryIntegration

taskreport.init(integrations=[CeleryIntegration(auto_track=True, record_args=True)])

app = Celery("example", broker="memory://", backend="cache+memory://")
app.conf.task_always_eager = True  # run tasks in this process: an example without a broker
app.conf.task_eager_propagates = False


@app.task(name="example.resize")
def resize(images: int) -> int:
    task = taskreport.current_task()  # this Celery task's record
    assert task is not None
    for _ in task.iter(range(images)):
        pass
    return images


@app.task(name="example.flaky", bind=True, max_retries=3)
def flaky(self: object, failures: int) -> str:
    retries = self.request.retries  # type: ignore[attr-defined]
    if retries < failures:
        raise self.retry(exc=ConnectionError(f"attempt {retries} failed"), countdown=0)  # type: ignore[attr-defined]
    return "done"


@app.task(name="example.broken")
def broken() -> None:
    raise ValueError("the input is broken")


if __name__ == "__main__":
    with taskreport.task("nightly batch"):  # the tasks published here are its children
        resize.delay(20)
        flaky.delay(2)
        broken.delay()
    taskreport.flush()
    for record in taskreport.list_tasks():
        print(f"{record.name:16} {record.status.value:8} parent={record.parent} data={record.data}")
