"""Log records on tasks, and tasks on log records.

``taskreport.init(integrations=[LoggingIntegration()])`` and then:

- every record logged while a task is current (``with taskreport.task(...)``, ``@track``, a Celery task...)
  is kept on that task: the last ``tail`` records at or above ``level``, each with its level, logger,
  message and time, in the task's data under ``"logs"``. It goes through the flusher like any update
  (coalesced with the task's other changes; the logging call never waits on the network);
- an ERROR record (or one carrying an exception, such as ``log.exception(...)``) marks the task's data with
  it under ``"log_error"``; the status is left alone unless ``error_status=True``;
- every record gets the current task's reference and id as attributes (``taskreport_task``,
  ``taskreport_task_id``; empty strings when no task is current, and the id until the service knows it), so a format
  such as ``"%(levelname)s [%(taskreport_task)s] %(message)s"`` joins a log line to its task. Without the
  integration, :class:`TaskFilter` on a handler does the same.

structlog: put :func:`structlog_processor` in the processor chain, before the renderer.

The library's own records (``taskreport*``) and those of ``requests`` and ``urllib3`` (what an HTTP
transport logs while delivering) are never attached, and a record logged while a record is being attached
is left alone: attaching never feeds itself. The hook is installed like sentry-sdk's: ``Logger.callHandlers``
is wrapped once per process, so records reach it whatever the handlers and propagation are.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from .. import _client
from .._context import current as _current
from .._errors import ValidationError
from .._integration import Integration
from .._internal import report
from .._task import DisabledTask, Task, exception_data
from . import _tails

__all__ = ["LoggingIntegration", "TaskFilter", "structlog_processor"]

#: loggers whose records are never attached (with their children)
DEFAULT_IGNORED = ("taskreport", "requests", "urllib3")
#: the attributes every record gets
FIELDS = ("taskreport_task", "taskreport_task_id")
_LEVELS = {"critical": 50, "fatal": 50, "exception": 40, "error": 40, "warning": 30, "warn": 30, "info": 20,
           "debug": 10, "notset": 0}  # fmt: skip
#: structlog keys that are not part of the message kept on the task
_STRUCTLOG_META = frozenset({"event", "timestamp", "level", "logger", "exc_info", "stack_info", *FIELDS})


def _levelno(attr: str, value: int | str) -> int:
    if isinstance(value, str):
        number = logging.getLevelName(value.upper())
        if isinstance(number, int):
            return number
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValidationError(f"must be a logging level (a name such as 'INFO', or a number), not {value!r}.", attr=attr)


class LoggingIntegration(Integration):
    """Keep the log records of a task on the task, and name the task on each record.

    - ``level``: the lowest level kept on the task (default ``INFO``). Records must pass their logger's own
      level first, as for any handler.
    - ``tail``: how many records are kept (the most recent; default 50). ``max_message``: longest message
      kept, in characters (default 1000; longer ones are cut with ``…``).
    - ``key``: where in the task's data the tail goes (default ``"logs"``).
    - ``error_level``: records at or above it mark the task's data under ``error_key`` (default ``ERROR``
      and ``"log_error"``; None: never). ``error_status=True`` also sets the task's status to ``error``.
    - ``ignore``: more logger names whose records are never attached (with their children), besides
      ``taskreport``, ``requests`` and ``urllib3``.
    - ``fields``: give every record the ``taskreport_task`` and ``taskreport_task_id`` attributes (default
      True).
    """

    identifier = "logging"

    def __init__(
        self,
        *,
        level: int | str = logging.INFO,
        tail: int = 50,
        key: str = "logs",
        error_level: int | str | None = logging.ERROR,
        error_key: str = "log_error",
        error_status: bool = False,
        max_message: int = 1000,
        ignore: Iterable[str] = (),
        fields: bool = True,
    ) -> None:
        self.level = _levelno("level", level)
        self.error_level = None if error_level is None else _levelno("error_level", error_level)
        if isinstance(tail, bool) or not isinstance(tail, int) or not 1 <= tail <= 10_000:
            raise ValidationError(f"must be a number of records from 1 to 10000, not {tail!r}.", attr="tail")
        if isinstance(max_message, bool) or not isinstance(max_message, int) or max_message < 16:
            raise ValidationError(f"must be a number of characters of at least 16, not {max_message!r}.",
                                  attr="max_message")
        for attr, value in (("key", key), ("error_key", error_key)):
            if not isinstance(value, str) or not value:
                raise ValidationError(f"must be a non-empty string, not {value!r}.", attr=attr)
        if isinstance(ignore, str):
            ignore = (ignore,)
        self.tail = tail
        self.key = key
        self.error_key = error_key
        self.error_status = bool(error_status)
        self.max_message = max_message
        self.fields = bool(fields)
        self.ignore = tuple(DEFAULT_IGNORED) + tuple(str(name) for name in ignore)
        self._ignored: dict[str, bool] = {}

    def __repr__(self) -> str:
        return f"<LoggingIntegration level={logging.getLevelName(self.level)} tail={self.tail}>"

    @staticmethod
    def setup_once() -> None:
        global _original
        if _original is None:
            _original = logging.Logger.callHandlers
            logging.Logger.callHandlers = _call_handlers  # type: ignore[method-assign]
            _tails.install()

    # -- deciding -----------------------------------------------------------------------------------
    def ignores(self, name: str) -> bool:
        """Whether records of the logger ``name`` are never attached."""
        known = self._ignored.get(name)
        if known is None:
            known = any(name == ignored or name.startswith(ignored + ".") for ignored in self.ignore)
            if len(self._ignored) < 10_000:
                self._ignored[name] = known
        return known

    # -- attaching ----------------------------------------------------------------------------------
    def attach(self, task: Task, levelno: int, logger: str, message: str, created: float,
               exc: BaseException | None = None, levelname: str | None = None) -> None:
        """Keep one record on ``task`` (the structlog processor's way in; usable for records from elsewhere)."""
        if self.ignores(logger):
            return
        if len(message) > self.max_message:
            message = message[: self.max_message - 1] + "…"
        kept = {"level": levelname or logging.getLevelName(levelno), "logger": logger, "message": message,
                "time": int(created * 1000) / 1000}
        self._add(task, kept, levelno, exc)

    def keep(self, task: Task, record: logging.LogRecord) -> None:
        """Keep a stdlib record on ``task`` (the hook's way in: the common case, kept short)."""
        name = record.name
        ignored = self._ignored.get(name)
        if ignored is None:
            ignored = self.ignores(name)
        if ignored:
            return
        try:
            msg = record.msg
            if type(msg) is dict and "event" in msg:  # structlog's ProcessorFormatter hands the event on
                message = _render_event(msg)
            else:
                # a handler's formatter has usually made the message already
                message = record.__dict__.get("message") or record.getMessage()
                if type(message) is not str:
                    message = str(message)
        except Exception as error:  # a message that can't be formatted: the handlers have said so already
            message = f"<unformattable message: {type(error).__name__}>"
        if len(message) > self.max_message:
            message = message[: self.max_message - 1] + "…"
        kept = {"level": record.levelname, "logger": name, "message": message,
                "time": int(record.created * 1000) / 1000}
        levelno = record.levelno
        if self.error_level is not None and levelno >= self.error_level:
            exc_info = record.exc_info
            self._add(task, kept, levelno, exc_info[1] if exc_info and type(exc_info) is tuple else None)
        else:
            _tails.add(task, kept, self, _every, _threaded)

    def _add(self, task: Task, kept: dict[str, Any], levelno: int, exc: BaseException | None) -> None:
        if self.error_level is None or levelno < self.error_level:
            _tails.add(task, kept, self, _every, _threaded)
            return
        error = dict(kept)
        if exc is not None:
            details = exception_data(exc)
            error.update(exception=details["exception"], exception_message=details["message"][:1000],
                         traceback=details["traceback"])
        _tails.add_locked(task, kept, self, _every, _threaded, error, "error" if self.error_status else None)


# -- the stdlib hook -----------------------------------------------------------------------------------
_original: Any = None
_busy = _tails.busy_state
_cache: tuple[Any, LoggingIntegration | None] = (None, None)
#: how the current client delivers: a tail waits at most ``_every`` seconds before it is handed to its task
#: (a quarter of the flush interval, at most 0.25 s); no waiting without a sender thread (a test's recorder)
_every = 0.25
_threaded = True


def enabled() -> LoggingIntegration | None:
    """The current client's logging integration, or None (not enabled, or reporting is off)."""
    client = _client.current_client()
    cached, integration = _cache
    return integration if client is cached else _refresh(client)


def _refresh(client: Any) -> LoggingIntegration | None:
    global _cache, _every, _threaded
    integration = None if client is None else client.integration(LoggingIntegration)
    if client is not None:
        _every = min(0.25, max(0.01, client.config.flush_interval / 4))
        _threaded = client.sender.settings.threaded
    _cache = (client, integration)
    return integration


def _set_fields(record: logging.LogRecord, task: Task | None) -> None:
    if task is None or type(task) is DisabledTask:
        record.taskreport_task = record.taskreport_task_id = ""
    else:
        entry = task.entry
        record.taskreport_task = entry.ref
        record.taskreport_task_id = entry.id or ""


def _call_handlers(self: logging.Logger, record: logging.LogRecord) -> None:
    client = _client.current_client()
    cached, integration = _cache
    if client is not cached:
        integration = _refresh(client)
    if integration is None:
        # not enabled for this client, or reporting is off: a format naming the fields must still work
        if "taskreport_task" not in record.__dict__:
            _set_fields(record, _current.get())
        return _original(self, record)  # type: ignore[no-any-return]
    task = _current.get()
    if task is not None and type(task) is DisabledTask:
        task = None  # a task that is not reported (before_create said no): nothing to keep, nothing to name
    if integration.fields and "taskreport_task" not in record.__dict__:
        if task is None:
            record.taskreport_task = record.taskreport_task_id = ""
        else:
            entry = task.entry
            record.taskreport_task = entry.ref
            record.taskreport_task_id = entry.id or ""
    try:
        return _original(self, record)  # type: ignore[no-any-return]
    finally:
        if task is not None and record.levelno >= integration.level and not _busy.active:
            try:
                integration.keep(task, record)
            except Exception as exc:  # never into the caller's logging call
                report("could not keep a log record on its task", exc)


class TaskFilter(logging.Filter):
    """Give records the current task's ``taskreport_task`` (its reference) and ``taskreport_task_id`` (the
    service's id, once known) attributes; empty strings when no task is current.

    For a handler's formatter, without the integration: ``handler.addFilter(TaskFilter())``. Keeps every
    record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "taskreport_task" not in record.__dict__:
            _set_fields(record, _current.get())
        return True


# -- structlog -------------------------------------------------------------------------------------------
def _render_event(event_dict: Mapping[str, Any]) -> str:
    parts = [str(event_dict.get("event", ""))]
    parts += [f"{k}={v!r}" for k, v in event_dict.items() if k not in _STRUCTLOG_META]
    return " ".join(parts)


def structlog_processor(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
    """A structlog processor: names the current task in the event (``taskreport_task``,
    ``taskreport_task_id``) and, with the logging integration enabled, keeps the event on the task.

    Put it before the renderer. When structlog hands its events to the standard library (a
    ``structlog.stdlib.LoggerFactory``), the event is kept when it reaches ``logging`` instead, once.
    """
    task = _current.get()
    if task is None or type(task) is DisabledTask:
        return event_dict
    event_dict.setdefault("taskreport_task", task.ref)
    task_id = task.id
    if task_id:
        event_dict.setdefault("taskreport_task_id", task_id)
    integration = enabled()
    if integration is None or isinstance(logger, logging.Logger) or _busy.active:
        return event_dict  # a stdlib logger: the record reaches the logging hook
    level = event_dict.get("level", method_name)
    levelno = _LEVELS.get(str(level).lower(), logging.INFO)
    name = str(event_dict.get("logger") or getattr(logger, "name", None) or "structlog")
    if levelno < integration.level:
        return event_dict
    exc: BaseException | None = None
    exc_info = event_dict.get("exc_info")
    if exc_info is True or (exc_info is None and method_name == "exception"):
        exc = sys.exc_info()[1]
    elif isinstance(exc_info, BaseException):
        exc = exc_info
    elif isinstance(exc_info, tuple) and len(exc_info) == 3:
        exc = exc_info[1]
    try:
        message = _render_event(event_dict)
    except Exception as error:
        message = f"<unformattable event: {type(error).__name__}>"
    try:
        integration.attach(task, levelno, name, message, time.time(), exc)
    except Exception as error:  # never into the caller's logging call
        report("could not keep a structlog event on its task", error)
    return event_dict
