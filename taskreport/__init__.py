"""taskreport: report the progress of work to a task service.

Configure once with :func:`init` (or not at all: tasks then go to the embedded store), then create tasks with
:meth:`Task.create`. Updates never wait on the network: a background flusher sends the latest state.
"""

from __future__ import annotations

from . import _lifecycle  # noqa: F401  (installs the exit and fork hooks)
from ._client import Client, TaskList, flush, get_client, get_task, init, list_tasks, shutdown, stats
from ._config import Config
from ._context import current_task, use_task
from ._errors import (
    ConfigurationError,
    Forbidden,
    MethodNotAllowed,
    NotAcceptable,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RequestFailed,
    ServerError,
    TaskReportError,
    TransportError,
    Unauthorized,
    UnsupportedMediaType,
    ValidationError,
)
from ._models import ActionRecord, TaskRecord
from ._progress import progress
from ._scope import scope
from ._status import Status
from ._task import Task
from ._tracking import task, track
from ._version import __version__

__all__ = [
    "ActionRecord",
    "Client",
    "Config",
    "ConfigurationError",
    "Forbidden",
    "MethodNotAllowed",
    "NotAcceptable",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "RequestFailed",
    "ServerError",
    "Status",
    "Task",
    "TaskList",
    "TaskRecord",
    "TaskReportError",
    "TransportError",
    "Unauthorized",
    "UnsupportedMediaType",
    "ValidationError",
    "__version__",
    "current_task",
    "flush",
    "get_client",
    "get_task",
    "init",
    "list_tasks",
    "progress",
    "scope",
    "shutdown",
    "stats",
    "task",
    "track",
    "use_task",
]
