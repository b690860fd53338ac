"""The Task handle: what user code holds while its work runs.

Every method merges the change into the handle's pending state under the flusher's lock and returns: no
I/O, no waiting, and no exception into user code (``strict=True`` makes invalid input raise at the call site
instead). The flusher thread sends the latest state.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ._errors import ValidationError
from ._models import TaskRecord
from ._status import RUNNING, TERMINAL, Status
from ._validation import validate_task

if TYPE_CHECKING:
    from ._client import Client
    from ._flusher import Flusher

_T = TypeVar("_T")
#: fields whose update needs more than a plain merge
_SPECIAL = frozenset({"status", "data", "tags", "actions"})
_UNSET: Any = object()
#: longest traceback kept in an error task's data
TRACEBACK_LIMIT = 8000


def exception_data(exc: BaseException) -> dict[str, Any]:
    """An exception as task data: type, message and a bounded traceback (the innermost frames kept)."""
    try:
        message = str(exc)
    except Exception:  # an exception whose __str__ fails still ends the task as an error
        message = f"<unprintable {type(exc).__name__}>"
    try:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:
        tb = ""
    if len(tb) > TRACEBACK_LIMIT:
        tb = "…" + tb[-TRACEBACK_LIMIT:]
    return {"exception": f"{type(exc).__module__}.{type(exc).__qualname__}", "message": message, "traceback": tb}


class Task:
    """A task being reported. Create one with :meth:`Task.create` (or ``taskreport.task()``/``@track``)."""

    _is_task_handle = True
    __slots__ = (
        "__weakref__",
        "_client",
        "_created_at",
        "_dirty",
        "_failed",
        "_fl",
        "_gen",
        "_heartbeat",
        "_id",
        "_key",
        "_last_sent",
        "_record",
        "_state",
    )

    def __init__(
        self, client: Client, state: dict[str, Any], *, task_id: str | None = None, record: TaskRecord | None = None
    ) -> None:
        self._client = client
        self._fl: Flusher = client.flusher
        self._gen = self._fl.gen
        self._fl.handles.add(self)
        self._id = task_id
        self._state = state
        self._dirty: dict[str, Any] = {}
        self._record = record
        self._failed = False
        #: idempotency key of this task's create, made when it is first sent and reused on every retry
        self._key: str | None = None
        self._heartbeat: float | None = None
        self._last_sent = time.monotonic()
        #: when this process created the task (None for one attached by id): time_to_start is measured from it
        self._created_at: float | None = time.time() if task_id is None else None

    # -- creating ----------------------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, **fields: Any) -> Task:
        """Start reporting a new task. Returns at once; the flusher creates it on the service.

        Invalid fields raise :class:`~taskreport.ValidationError` naming the field. ``parent`` defaults to
        the current task (``parent=None`` opts out); ``heartbeat=SECONDS`` keeps a quiet task fresh.
        """
        from ._client import get_client

        return get_client().create_task(name, **fields)

    @classmethod
    def get(cls, task_id: str) -> Task:
        """A handle on an existing task, fetched now, to update it from this process."""
        from ._client import get_client

        return get_client().attach(task_id)

    # -- reading -----------------------------------------------------------------------------------
    @property
    def id(self) -> str | None:
        """The service's id for this task. Waits (up to the request timeout) for the flusher to create it;
        None if it could not be created in that time."""
        return self.wait_id(self._client.config.request_timeout)

    def wait_id(self, timeout: float | None = None) -> str | None:
        if self._id is not None or self._failed or self._orphaned():
            return self._id
        fl = self._fl
        fl.request_flush()
        if fl.thread is None:
            # no thread could be started (the interpreter is exiting): create it from this thread
            fl.flush(self._client.config.request_timeout if timeout is None else timeout)
            return self._id
        deadline = None if timeout is None else time.monotonic() + timeout
        # one condition on the flusher serves every waiter: no per-task Event to build on the create path
        with fl.ids:
            while self._id is None and not self._failed and not fl.closed and not fl.disabled:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                fl.ids.wait(remaining)
        return self._id

    @property
    def name(self) -> str:
        return str(self._get("name", ""))

    @property
    def status(self) -> Status:
        return Status(self._get("status") or "pending")

    @property
    def value(self) -> int | None:
        value = self._get("value")
        return value if isinstance(value, int) else None

    @property
    def value_max(self) -> int:
        value = self._get("value_max")
        return value if isinstance(value, int) else 100

    @property
    def data(self) -> Any:
        return self._get("data")

    @property
    def tags(self) -> dict[str, str]:
        return dict(self._get("tags") or {})

    @property
    def parent(self) -> Task | str | None:
        parent: Task | str | None = self._get("parent")
        return parent

    @property
    def record(self) -> TaskRecord | None:
        """The task as the service last returned it (None until the first successful send)."""
        return self._record

    def refresh(self) -> TaskRecord:
        """Fetch the task from the service now (synchronous; raises on failure)."""
        task_id = self.id
        if task_id is None:
            from ._errors import TransportError

            raise TransportError("the task has not been created on the service yet")
        record = TaskRecord.from_api(self._client.transport.get_task(task_id))
        self._record = record
        return record

    def __repr__(self) -> str:
        return f"<Task {self._id or 'unsent'} {self.name!r} {self._get('status', 'pending')}>"

    # -- the hot path ------------------------------------------------------------------------------
    # Changes go into ``_dirty``; the flusher folds them into ``_state`` when it takes them. Readers look
    # at ``_dirty`` first. ``value`` is a named parameter so that the commonest call builds no dict.
    def _get(self, key: str, default: Any = None) -> Any:
        dirty = self._dirty
        if key in dirty:
            return dirty[key]
        return self._state.get(key, default)

    def update(self, value: Any = _UNSET, **fields: Any) -> None:
        """Merge fields into the task's pending state. ``data`` and ``tags`` merge into what is there."""
        fl = self._fl
        if fields or fl.strict:
            if value is not _UNSET:
                fields["value"] = value
            self._merge(fields)
            return
        if value is _UNSET:
            return
        with fl.lock:
            if self._gen is not fl.gen:
                self._after_fork()
            self._dirty["value"] = value
            fl.merged += 1
            if self not in fl.pending:
                fl.add(self, False)

    def increment(self, n: int = 1) -> None:
        """Add ``n`` to the value."""
        fl = self._fl
        with fl.lock:
            if self._gen is not fl.gen:
                self._after_fork()
            dirty = self._dirty
            value = dirty["value"] if "value" in dirty else self._state.get("value")
            try:
                dirty["value"] = (value or 0) + n
            except TypeError:  # a bad value or n: the flusher logs the invalid field, we never raise
                dirty["value"] = n
            fl.merged += 1
            if self not in fl.pending:
                fl.add(self, False)

    def set_total(self, total: int) -> None:
        """Set ``value_max``, the value at which the task is 100% done."""
        self.update(value_max=total)

    def iter(self, iterable: Iterable[_T], total: int | None = None) -> Iterator[_T]:
        """Iterate ``iterable``, adding each item to the value; ``total`` (default ``len(iterable)``) is added
        to ``value_max``. Costs a few ns per item: the value is published every so often and at the end."""
        from ._progress import iterate

        return iterate(self, iterable, total)

    def _merge(self, fields: dict[str, Any]) -> None:
        fl = self._fl
        if fl.strict:
            fields = validate_task(fields, partial=True)
        terminal = False
        with fl.lock:
            if self._gen is not fl.gen:
                self._after_fork()
            if not _SPECIAL.isdisjoint(fields):
                terminal = self._merge_special(fields)
            self._dirty.update(fields)
            fl.merged += 1
            if self not in fl.pending:
                fl.add(self, terminal)
        if terminal:
            fl.wake()

    def _merge_special(self, fields: dict[str, Any]) -> bool:
        """Fold status times, data/tags merging and queued actions into ``fields``; True if terminal."""
        terminal = False
        if "status" in fields:
            status = getattr(fields["status"], "value", fields["status"])
            fields["status"] = status
            if not isinstance(status, str):
                return False  # invalid: the flusher logs it and drops the field; the hot path never raises
            now = time.time()
            if status in RUNNING and self._get("start_time") is None and "start_time" not in fields:
                fields["start_time"] = now
                if self._created_at is not None and self._get("time_to_start") is None:
                    # measured here: the service only learns of the task when the flusher creates it
                    fields.setdefault("time_to_start", max(0.0, now - self._created_at))
            if status in TERMINAL:
                terminal = True
                if "end_time" not in fields:
                    fields["end_time"] = now
        for key in ("data", "tags"):
            if key in fields:
                new, old = fields[key], self._get(key)
                if isinstance(new, Mapping) and isinstance(old, Mapping):
                    fields[key] = {**old, **new}
        if "actions" in fields:
            queued, new = self._dirty.get("actions"), fields["actions"]
            if isinstance(queued, list) and isinstance(new, list):
                fields["actions"] = [*queued, *new]
        return terminal

    def _fold_dirty(self) -> None:
        """Take pending changes as done (they were spooled): fold them into the state, drop queued actions.
        Call with the lock held."""
        dirty, self._dirty = self._dirty, {}
        dirty.pop("actions", None)
        self._state.update(dirty)

    def _after_fork(self) -> None:
        # called under the lock in a forked child: what was pending belonged to the parent, which sends it
        self._gen = self._fl.gen
        self._dirty = {}
        if self._id is None:
            self._orphan()

    def _orphaned(self) -> bool:
        """Created by the parent of a fork and not yet sent: this process can never learn its id."""
        return self._id is None and (self._failed or self._gen is not self._fl.gen)

    def _orphan(self) -> None:
        self._failed = True
        self._fl.log.log(
            30,
            "orphan",
            "taskreport: %r was created before this process forked and not yet sent; its updates here are "
            "dropped (read task.id before forking to avoid this)",
            self,
        )

    # -- statuses ----------------------------------------------------------------------------------
    def pending(self, **fields: Any) -> None:
        self.update(status=Status.PENDING, **fields)

    def pre_processing(self, **fields: Any) -> None:
        self.update(status=Status.PRE_PROCESSING, **fields)

    def processing(self, **fields: Any) -> None:
        self.update(status=Status.PROCESSING, **fields)

    def post_processing(self, **fields: Any) -> None:
        self.update(status=Status.POST_PROCESSING, **fields)

    def success(self, **fields: Any) -> None:
        self.update(status=Status.SUCCESS, **fields)

    def error(self, exc: BaseException | None = None, data: Any = None, **fields: Any) -> None:
        """Mark the task failed; ``exc`` adds its type, message and a bounded traceback to ``data``."""
        merged: dict[str, Any] = {}
        if exc is not None:
            merged.update(exception_data(exc))
        if isinstance(data, Mapping):
            merged.update(data)
        elif data is not None:
            merged["data"] = data  # kept, under a key, rather than refused on the way to an error
        if merged:
            fields["data"] = merged
        self.update(status=Status.ERROR, **fields)

    def cancel(self, **fields: Any) -> None:
        self.update(status=Status.CANCELLED, **fields)

    def add_action(self, trigger: str, integration: str, config: Any = None) -> None:
        """Ask the service to run ``integration`` (e.g. ``webhook:name``, ``email``) when ``trigger`` fires."""
        action: dict[str, Any] = {"trigger": trigger, "integration": integration}
        if config is not None:
            action["config"] = config
        self.update(actions=[action])

    def heartbeat(self, every: float | None) -> None:
        """Have the flusher touch the task every ``every`` seconds while it runs (None stops it)."""
        try:
            seconds = None if every is None else float(every)
        except (TypeError, ValueError):
            seconds = None
        if seconds is not None and not math.isfinite(seconds):
            seconds = None
        if seconds is None and every is not None:
            if self._fl.strict:
                raise ValidationError(f"must be a number of seconds, not {every!r}.", attr="heartbeat")
            self._fl.log.log(40, "heartbeat", "taskreport: ignoring heartbeat=%r: not a number of seconds", every)
            return
        self._fl.set_heartbeat(self, seconds)


class DisabledTask(Task):
    """What the API hands out when reporting is off: every method is a cheap no-op."""

    __slots__ = ()

    def update(self, value: Any = _UNSET, **fields: Any) -> None:
        pass

    def increment(self, n: int = 1) -> None:
        pass

    def heartbeat(self, every: float | None) -> None:
        pass

    def wait_id(self, timeout: float | None = None) -> str | None:
        return None
