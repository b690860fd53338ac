"""Observers of tasks, for integrations that follow tasks rather than frameworks (OpenTelemetry).

Three lists, empty unless an integration appends to them in its ``setup_once()``:

- :data:`created`: ``hook(task, fields)`` when this process creates a task, before its birth is queued.
  ``fields`` is the validated state the task is born with; a hook may add keys to ``fields["data"]`` (a dict,
  JSON only) and they are sent with the create.
- :data:`status_changed`: ``hook(task, status, fields)`` after a handle's status moved to ``status`` (a
  string) from another one; ``fields`` are the fields of that change (``data`` holds the exception of an
  error).
- :data:`flushing`: ``hook()`` when a client is about to flush or close: an integration that gathers changes
  before handing them to tasks (the logging integration's record tails) hands them over now, so that a
  flush delivers them.

Hooks run in the thread that made the change, outside the library's locks, and may call the tracking API.
A hook that raises is reported as an internal error and the others still run. Empty lists cost the hot
path one truth test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from . import _internal

# the task is a Task handle; typed loosely so that handles can call these without the two modules importing
# each other
created: list[Callable[[Any, dict[str, Any]], None]] = []
status_changed: list[Callable[[Any, str, Mapping[str, Any]], None]] = []
flushing: list[Callable[[], None]] = []


def task_created(task: Any, fields: dict[str, Any]) -> None:
    for hook in list(created):
        try:
            hook(task, fields)
        except Exception as exc:
            _internal.report(f"a task observer failed on the creation of {task!r}", exc)


def task_status(task: Any, status: str, fields: Mapping[str, Any]) -> None:
    for hook in list(status_changed):
        try:
            hook(task, status, fields)
        except Exception as exc:
            _internal.report(f"a task observer failed on a status change of {task!r}", exc)


def before_flush() -> None:
    for hook in list(flushing):
        try:
            hook()
        except Exception as exc:
            _internal.report("a task observer failed before a flush", exc)
