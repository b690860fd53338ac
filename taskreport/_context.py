"""Context that follows the caller across threads (with copied contexts) and asyncio tasks."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
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


@contextlib.contextmanager
def use_task(task: Task | None) -> Iterator[Task | None]:
    """Make ``task`` the current task for a block: ``current_task()`` returns it there, and tasks created in
    the block become its children. The task's status is left alone (``with taskreport.task(...)`` is the
    block that also starts and ends one). Follows the code into asyncio tasks and threads started with a
    copied context, like every context variable; ``None`` makes no task current."""
    token = current.set(task)
    try:
        yield task
    finally:
        # left in another context than it was entered in (a generator finalised elsewhere): not ours to change
        with contextlib.suppress(ValueError):
            current.reset(token)
