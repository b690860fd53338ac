"""The first example to run: a tracked job that processes 200 items with a progress bar of sorts and a
tracked step per item, all recorded in the embedded store (no server needed).

Run: ``python examples/main_job.py``, then ``taskreport list`` to see what was recorded.
"""

from __future__ import annotations

import time

import taskreport


@taskreport.track(name="validate-batch")
def validate(batch: list[int]) -> int:
    time.sleep(0.01)
    return sum(1 for item in batch if item % 3)


@taskreport.track(name="nightly-import", tags={"example": "main"})
def nightly_import(items: list[int]) -> int:
    valid = 0
    batch: list[int] = []
    for item in taskreport.progress(items, name="import-items"):
        batch.append(item)
        if len(batch) == 50:
            valid += validate(batch)  # a child task of the job, once per 50 items
            batch = []
        time.sleep(0.002)
    return valid


def main() -> None:
    valid = nightly_import(list(range(200)))
    taskreport.flush()
    job = next(iter(taskreport.list_tasks(name="nightly-import")))
    print(f"imported 200 items, {valid} valid: task {job.id} is {job.status.value}")
    print("see it with:  taskreport list        (or: taskreport get " + job.id + ")")


if __name__ == "__main__":
    main()
