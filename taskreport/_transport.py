"""The interface between delivery and wherever tasks go, and the one unit delivery sends."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from ._errors import TaskReportError

Row = dict[str, Any]


@dataclasses.dataclass
class Op:
    """One change to one task: its create (``kind="create"``) or an update, with validated fields.

    A create names the task by ``ref`` (the service makes it once, however often it is sent). An update
    names it by ``task_id`` when known, else by ``ref`` (a service with references makes a placeholder if
    the create has not arrived yet). ``parent_ref`` names a parent whose id is not known here.
    """

    kind: Literal["create", "update"]
    ref: str | None
    task_id: str | None
    fields: dict[str, Any]
    parent_ref: str | None = None


class BatchUnsupported(TaskReportError):
    """The service has no batch operation and no task references (a stock server of the API): plan the
    same changes again as plain requests, by id."""


@dataclasses.dataclass
class PageResult:
    results: list[Row]
    next_cursor: str | None = None
    previous_cursor: str | None = None


@runtime_checkable
class Transport(Protocol):
    """What a place that stores tasks must do. Rows are the API's JSON objects (timestamps may be epoch
    seconds or ISO strings: :meth:`TaskRecord.from_api` reads both)."""

    #: whether the place knows task references: True, False, or None until the first send tells
    refs: bool | None
    #: the most operations one send should carry (delivery settles them together)
    max_ops: int

    def send(self, ops: Sequence[Op]) -> list[Row | TaskReportError]:
        """Deliver ops in order, one result each (a row with at least ``id``, or the error). No retries
        inside: delivery keeps the latest state and decides when to try again. May raise
        :class:`BatchUnsupported` before sending anything."""
        ...

    def create_task(self, fields: Mapping[str, Any], idempotency_key: str | None = None) -> Row: ...

    def get_task(self, task_id: str) -> Row: ...

    def update_task(self, task_id: str, fields: Mapping[str, Any]) -> Row: ...

    def cancel_task(self, task_id: str) -> None: ...

    def list_tasks(self, filters: Mapping[str, Any], cursor: str | None, page_size: int | None) -> PageResult: ...

    def list_actions(self, task_id: str) -> list[Row]: ...

    def create_action(self, task_id: str, fields: Mapping[str, Any], idempotency_key: str | None = None) -> Row: ...

    def update_action(self, task_id: str, action_id: int, fields: Mapping[str, Any]) -> Row: ...

    def cancel_action(self, task_id: str, action_id: int) -> None: ...

    def set_timeout(self, seconds: float | None) -> None:
        """Bound every later request (used when exiting with a deadline); None restores the default."""
        ...

    def after_fork(self) -> None:
        """Forget connections inherited from the parent process."""
        ...

    def close(self) -> None: ...
