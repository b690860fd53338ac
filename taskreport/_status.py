"""Task statuses, as the task API names them."""

from __future__ import annotations

import enum


class Status(str, enum.Enum):
    """The status of a task.

    ``success``, ``error`` and ``cancelled`` are terminal: the work is over. ``stale`` is set by the
    service when a running task stops sending updates; a late update may still revive it.
    """

    PENDING = "pending"
    PRE_PROCESSING = "pre_processing"
    PROCESSING = "processing"
    POST_PROCESSING = "post_processing"
    SUCCESS = "success"
    ERROR = "error"
    CANCELLED = "cancelled"
    STALE = "stale"

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        return self.value in TERMINAL

    @property
    def is_running(self) -> bool:
        return self.value in RUNNING


#: String values, so that hot paths can test membership without building enum members.
TERMINAL: frozenset[str] = frozenset({"success", "error", "cancelled"})
RUNNING: frozenset[str] = frozenset({"pre_processing", "processing", "post_processing"})
VALUES: frozenset[str] = frozenset(s.value for s in Status)
