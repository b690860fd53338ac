"""The Task handle: what user code holds while its work runs.

Every method merges the change into the handle's own view and into delivery's pending record for the task,
under one lock, and returns: no I/O, no waiting, and no exception into user code (``strict=True`` makes
invalid input raise at the call site instead). A task has a reference (``task.ref``) from the moment it is
made; the service's id (``task.id``) is known once the service has answered.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from . import _hooks
from ._counting import counted, total_of
from ._errors import ConfigurationError, ValidationError
from ._models import TaskRecord
from ._pending import Entry, Pending
from ._ratelog import RateLimitedLog
from ._status import RUNNING, TERMINAL, Status
from ._status import VALUES as STATUS_VALUES
from ._validation import validate_task

if TYPE_CHECKING:
    from ._transport import Transport

_T = TypeVar("_T")
#: fields whose update needs more than a plain merge
_SPECIAL = frozenset({"status", "data", "tags", "actions"})
_UNSET: Any = object()
#: longest traceback kept in an error task's data
TRACEBACK_LIMIT = 8000
_log = RateLimitedLog()


class Provider(Protocol):
    """What ``Task.create``/``attach``/``get`` reach: the process's client (which sits above handles)."""

    def create_task(self, name: str, **fields: Any) -> Task: ...

    def attach(self, ref: str, *, name: str | None = None, task_id: str | None = None) -> Task: ...

    def fetch(self, task_id: str) -> Task: ...

    @property
    def transport(self) -> Transport: ...


#: set by the client module when it is imported: handles may not import the layer above them
provider: Callable[[], Provider] | None = None


def _provider() -> Provider:
    if provider is None:  # pragma: no cover - taskreport/__init__ always imports the client
        raise ConfigurationError("import taskreport before creating tasks")
    return provider()


def exception_data(exc: BaseException) -> dict[str, Any]:
    """An exception as task data: type, message and a bounded traceback (the innermost frames kept)."""
    try:
        message = str(exc)
    except Exception:  # an exception whose __str__ fails still ends the task as an error
        message = f"<unprintable {type(exc).__name__}>"
    import traceback  # only when a task fails: it costs every import of taskreport a few ms otherwise

    try:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:
        tb = ""
    if len(tb) > TRACEBACK_LIMIT:
        tb = "…" + tb[-TRACEBACK_LIMIT:]
    return {"exception": f"{type(exc).__module__}.{type(exc).__qualname__}", "message": message, "traceback": tb}


def check_client_status(fields: Mapping[str, Any]) -> None:
    status = fields.get("status")
    if getattr(status, "value", status) == "stale":
        raise ValidationError("is set by the service when a task stops reporting; a client can't set it.",
                              attr="status", code="invalid_choice")


class Task:
    """A task being reported. Create one with :meth:`Task.create` (or ``taskreport.task()``/``@track``)."""

    _is_task_handle = True
    __slots__ = ("__weakref__", "_created_at", "_entry", "_parent", "_pending", "_record", "_strict", "_view")

    def __init__(
        self,
        pending: Pending,
        entry: Entry,
        *,
        strict: bool = False,
        parent: Task | str | None = None,
        record: TaskRecord | None = None,
    ) -> None:
        self._pending = pending
        self._entry = entry
        self._view = entry.view
        self._strict = strict
        self._parent = parent
        self._record = record
        #: when this process created the task (None when attached): time_to_start is measured from it
        self._created_at: float | None = time.time() if entry.pid is not None else None

    # -- creating ----------------------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, **fields: Any) -> Task:
        """Start reporting a new task. Returns at once; the flusher creates it on the service.

        Invalid fields raise :class:`~taskreport.ValidationError` naming the field. ``parent`` defaults to
        the current task (``parent=None`` opts out); ``heartbeat=SECONDS`` keeps a quiet task fresh.
        ``ref`` names the task with a reference chosen by the caller (one that another process can derive on
        its own, such as one made from a Celery task id) instead of a new one.
        """
        return _provider().create_task(name, **fields)

    @classmethod
    def attach(cls, ref: str, *, name: str | None = None, id: str | None = None) -> Task:
        """A handle on a task known by its reference (``task.ref`` in another process), without any I/O.

        Updates go to that task by reference, whether or not its creator's create has reached the service
        yet. ``id``, if known, lets a service that has no references (a stock server of the API) find the
        task; ``name`` names the task this process must create there when it can't (and is what ``task.name``
        says here meanwhile).
        """
        return _provider().attach(ref, name=name, task_id=id)

    @classmethod
    def get(cls, task_id: str) -> Task:
        """A handle on an existing task, fetched now (a synchronous GET), to update it from this process."""
        return _provider().fetch(task_id)

    # -- reading -----------------------------------------------------------------------------------
    @property
    def entry(self) -> Entry:
        """What delivery knows of this task (its reference, the service's id): plumbing for integrations and
        the client, not for everyday use."""
        return self._entry

    @property
    def ref(self) -> str:
        """This task's reference: known from creation, usable in another process (``Task.attach(ref)``,
        ``parent=``, ``TASKREPORT_PARENT``)."""
        return self._entry.ref

    @property
    def id(self) -> str | None:
        """The service's id for this task, or None until the service has answered its create. Never
        waits: use :meth:`wait_id` to wait for it, or :attr:`ref` to name the task at once."""
        return self._entry.id

    def wait_id(self, timeout: float | None = None) -> str | None:
        """The service's id, asking the flusher to send now and waiting at most ``timeout`` seconds (None:
        the request timeout). None if the task could not be created in that time."""
        entry = self._entry
        if entry.id is not None or entry.failed:
            return entry.id
        pending = self._pending.latest()
        waiter = pending.wait_for
        if waiter is None:
            return None
        return waiter(entry, timeout)

    @property
    def name(self) -> str:
        return str(self._view.get("name", ""))

    @property
    def status(self) -> Status:
        return Status(self._view.get("status") or "pending")

    @property
    def value(self) -> int | None:
        value = self._view.get("value")
        return value if isinstance(value, int) else None

    @property
    def value_max(self) -> int:
        value = self._view.get("value_max")
        return value if isinstance(value, int) else 100

    @property
    def data(self) -> Any:
        return self._view.get("data")

    @property
    def tags(self) -> dict[str, str]:
        return dict(self._view.get("tags") or {})

    @property
    def parent(self) -> Task | str | None:
        """The parent given at creation: a handle, or the id it was given as."""
        return self._parent

    @property
    def record(self) -> TaskRecord | None:
        """The task as the service returned it to the last :meth:`refresh` (None before one)."""
        return self._record

    def refresh(self, timeout: float | None = None) -> TaskRecord:
        """Fetch the task from the service now (synchronous; raises on failure)."""
        task_id = self.wait_id(timeout)
        if task_id is None:
            from ._errors import TransportError

            raise TransportError("the task has not been created on the service yet")
        record = TaskRecord.from_api(_provider().transport.get_task(task_id))
        self._record = record
        return record

    def __repr__(self) -> str:
        return f"<Task {self._entry.id or self._entry.ref} {self.name!r} {self._view.get('status', 'pending')}>"

    # -- the hot path ------------------------------------------------------------------------------
    def _current(self) -> Pending:
        """Where this handle reports now: a replaced client hands its handles on to its successor."""
        pending = self._pending = self._pending.latest()
        return pending

    def update(self, value: Any = _UNSET, **fields: Any) -> None:
        """Merge fields into the task's pending state. ``data`` and ``tags`` merge into what is there."""
        if fields or self._strict:
            if value is not _UNSET:
                fields["value"] = value
            self._merge(fields)
            return
        if value is _UNSET:
            return
        # the commonest call, inlined: no dict built, one lock, two stores. No function is called while the
        # lock is held on this path: the interpreter hands the GIL to another thread only at a call (or a loop),
        # so the holder is never descheduled with the lock taken, and many threads never queue on it
        pending = self._pending
        if pending.closed:
            pending = self._current()
        with pending.lock:
            self._view["value"] = value
            pending.merged += 1
            try:
                pending.changes[self._entry]["value"] = value
                return
            except KeyError:  # its first change since the last send (once a round)
                changes = pending.admit(self._entry)
                if changes is not None:
                    changes["value"] = value
        if pending.on_change is not None:
            pending.on_change(False)

    def increment(self, n: int = 1) -> None:
        """Add ``n`` to the value."""
        pending = self._pending
        if pending.closed:
            pending = self._current()
        entry = self._entry
        # as in update(): no function called with the lock held, but on a task's first change of a round
        with pending.lock:
            view = self._view
            try:
                value = ((view["value"] if "value" in view else 0) or 0) + n  # noqa: SIM401 (a call: see above)
            except TypeError:  # a bad value or n: the flusher logs the invalid field, we never raise
                value = n
            view["value"] = value
            pending.merged += 1
            waiting = pending.changes
            added = entry not in waiting
            if not added:
                waiting[entry]["value"] = value
            else:
                changes = pending.admit(entry)
                if changes is not None:
                    changes["value"] = value
        if added and pending.on_change is not None:
            pending.on_change(False)

    def set_total(self, total: int) -> None:
        """Set ``value_max``, the value at which the task is 100% done."""
        self.update(value_max=total)

    def iter(self, iterable: Iterable[_T], total: int | None = None) -> Iterator[_T]:
        """Iterate ``iterable``, adding each item to the value; ``total`` (default ``len(iterable)``) is added
        to ``value_max``. Costs a few ns per item: the value is published every so often and at the end."""
        return counted(self, iterable, total_of(iterable, total), None)

    def _merge(self, fields: dict[str, Any]) -> None:
        if self._strict:
            check_client_status(fields)
            fields = validate_task(fields, partial=True)
            if "parent" in fields:
                raise ValidationError("is set when a task is created; it can't be changed.", attr="parent")
        pending = self._pending
        if pending.closed:
            pending = self._current()
        entry = self._entry
        terminal = False
        moved: str | None = None
        with pending.lock:
            if not _SPECIAL.isdisjoint(fields):
                previous = self._view.get("status")
                terminal = self._merge_special(fields)
                status = fields.get("status")
                if isinstance(status, str) and status != previous and status in STATUS_VALUES:
                    moved = status
            actions = fields.pop("actions", None)
            self._view.update(fields)
            changes = pending.changes.get(entry)
            added = changes is None
            if added:
                changes = pending.force(entry) if terminal or actions else pending.admit(entry)
            if changes is not None:
                changes.update(fields)
                if actions is not None:
                    queued = changes.get("actions")
                    changes["actions"] = [*queued, *actions] if isinstance(queued, list) else actions
            pending.merged += 1
        if moved is not None and _hooks.status_changed:
            _hooks.task_status(self, moved, fields)
        if pending.closed:
            if terminal and pending.on_orphan_end is not None:
                pending.on_orphan_end(entry, {})
            return
        if (added or terminal) and pending.on_change is not None:
            pending.on_change(terminal)

    def _merge_special(self, fields: dict[str, Any]) -> bool:
        """Fold status times and data/tags merging into ``fields``; True if terminal."""
        terminal = False
        view = self._view
        if "status" in fields:
            status = getattr(fields["status"], "value", fields["status"])
            fields["status"] = status
            if not isinstance(status, str):
                return False  # invalid: the flusher logs it and drops the field; the hot path never raises
            now = time.time()
            if status in RUNNING and view.get("start_time") is None and "start_time" not in fields:
                fields["start_time"] = now
                if self._created_at is not None and view.get("time_to_start") is None:
                    # measured here: the service only learns of the task when the flusher creates it
                    fields.setdefault("time_to_start", max(0.0, now - self._created_at))
            if status in TERMINAL:
                terminal = True
                if "end_time" not in fields:
                    fields["end_time"] = now
        for key in ("data", "tags"):
            if key in fields:
                new, old = fields[key], view.get(key)
                # dicts first: an ABC check costs more than the rest of a small data update (a log record's)
                if (type(new) is dict or isinstance(new, Mapping)) and (
                    type(old) is dict or isinstance(old, Mapping)
                ):
                    fields[key] = {**old, **new}
        return terminal

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
            if self._strict:
                raise ValidationError(f"must be a number of seconds, not {every!r}.", attr="heartbeat")
            _log.log(40, "heartbeat", "taskreport: ignoring heartbeat=%r: not a number of seconds", every)
            return
        pending = self._pending
        if pending.closed:
            pending = self._current()
        pending.set_heartbeat(self._entry, seconds)


class DisabledTask(Task):
    """What the API hands out when reporting is off: every method is a cheap no-op."""

    __slots__ = ()

    def __init__(self, name: str = "") -> None:
        # no reference: nothing may name this task in another process (an empty ref is not a valid one)
        super().__init__(_DISABLED, Entry("", {"name": name}, born_here=False))

    def update(self, value: Any = _UNSET, **fields: Any) -> None:
        pass

    def increment(self, n: int = 1) -> None:
        pass

    def heartbeat(self, every: float | None) -> None:
        pass

    def wait_id(self, timeout: float | None = None) -> str | None:
        return None

    def iter(self, iterable: Iterable[_T], total: int | None = None) -> Iterator[_T]:
        return iter(iterable)


_DISABLED = Pending(max_pending=0)
