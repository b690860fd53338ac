"""Context that follows the caller across threads (with copied contexts) and asyncio tasks."""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._task import Task

#: the task whose code is running now; new tasks take it as their parent
current: contextvars.ContextVar[Task | None] = contextvars.ContextVar("taskreport_current", default=None)
#: data and tags added by enclosing ``scope()`` blocks, applied to tasks created inside them
scope_fields: contextvars.ContextVar[tuple[dict[str, Any], dict[str, str]] | None] = contextvars.ContextVar(
    "taskreport_scope", default=None
)


def current_task() -> Task | None:
    """The task whose code is running in this context, if any."""
    return current.get()
