"""The interface between the client and wherever tasks go, and the one unit the flusher sends."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from ._errors import TaskReportError

Row = dict[str, Any]


@dataclasses.dataclass
class Op:
    """Create a task (``task_id`` None) or update one, with validated fields."""

    task_id: str | None
    fields: dict[str, Any]
    #: for a create: the same key on every attempt, so a retry never makes a second task
    idempotency_key: str | None = None


@dataclasses.dataclass
class PageResult:
    results: list[Row]
    next_cursor: str | None = None
    previous_cursor: str | None = None


@runtime_checkable
class Transport(Protocol):
    """What a place that stores tasks must do. Rows are the API's JSON objects (timestamps may be epoch
    seconds or ISO strings: :meth:`TaskRecord.from_api` reads both)."""

    def send(self, ops: Sequence[Op]) -> list[Row | TaskReportError]:
        """Deliver ops in order, one result each. Used by the flusher: no retries inside, and after a
        connection failure or a 429 the remaining ops get the same error without being tried."""
        ...

    def create_task(self, fields: Mapping[str, Any], idempotency_key: str | None = None) -> Row: ...

    def get_task(self, task_id: str) -> Row: ...

    def update_task(self, task_id: str, fields: Mapping[str, Any]) -> Row: ...

    def cancel_task(self, task_id: str) -> None: ...

    def list_tasks(self, filters: Mapping[str, Any], cursor: str | None, page_size: int | None) -> PageResult: ...

    def list_actions(self, task_id: str) -> list[Row]: ...

    def create_action(self, task_id: str, fields: Mapping[str, Any]) -> Row: ...

    def update_action(self, task_id: str, action_id: int, fields: Mapping[str, Any]) -> Row: ...

    def cancel_action(self, task_id: str, action_id: int) -> None: ...

    def set_timeout(self, seconds: float | None) -> None:
        """Bound every later request (used when exiting with a deadline); None restores the default."""
        ...

    def after_fork(self) -> None:
        """Forget connections inherited from the parent process."""
        ...

    def close(self) -> None: ...
