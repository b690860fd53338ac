"""Reading back what the library recorded, after flushing it."""

from __future__ import annotations

from typing import Any

import taskreport
from taskreport import TaskRecord


def records(**filters: Any) -> list[TaskRecord]:
    assert taskreport.flush(10)
    return list(taskreport.list_tasks(**filters))


def only(name: str) -> TaskRecord:
    found = records(name=name)
    assert len(found) == 1, found
    return found[0]
