"""Assert, in your own tests, what your code reported.

::

    from taskreport.testing import capture_tasks

    def test_import_reports_its_progress():
        with capture_tasks() as tasks:
            run_import(["a", "b"])
        job = tasks.get("import")
        assert job.status == "success" and job.value == 2

:func:`capture_tasks` points the library at an in-memory recorder for a block: no thread, no network, no
file, and the user's real store or server is never touched. The pytest plugin that ships with the package
gives the same recorder, fresh for each test, as the ``taskreport_tasks`` fixture.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, overload

from . import _client
from ._config import Config
from ._memory import MemoryTransport
from ._models import ActionRecord, TaskRecord
from ._task import Task

if TYPE_CHECKING:
    from ._integration import Integration

__all__ = ["TaskRecorder", "capture_tasks"]


class TaskRecorder:
    """The tasks reported while it was installed. Reading it delivers what is pending first.

    As a sequence it holds the tasks that **ended**, in the order they ended, as
    :class:`~taskreport.TaskRecord` (``name``, ``status``, ``value``, ``data``, ``tags``, ``parent``: the
    parent's ``id``, and the rest of what a service stores). :meth:`all` also has the tasks still running.
    """

    def __init__(self, client: _client.Client, transport: MemoryTransport) -> None:
        #: the client that records (made with ``threaded=False``: changes are delivered when read)
        self.client = client
        self.transport = transport

    def __repr__(self) -> str:
        return f"<TaskRecorder {len(self.transport.ended())} ended>"

    def flush(self) -> None:
        """Deliver every change made so far to the recorder (reading does it for you)."""
        self.client.flush(5.0)

    # -- the ended tasks, as a sequence ------------------------------------------------------------
    @property
    def ended(self) -> list[TaskRecord]:
        """The tasks that ended, in the order they ended."""
        self.flush()
        return [TaskRecord.from_api(row) for row in self.transport.ended()]

    @overload
    def __getitem__(self, index: int) -> TaskRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[TaskRecord]: ...

    def __getitem__(self, index: int | slice) -> TaskRecord | list[TaskRecord]:
        return self.ended[index]

    def __len__(self) -> int:
        return len(self.ended)

    def __iter__(self) -> Iterator[TaskRecord]:
        return iter(self.ended)

    def __bool__(self) -> bool:
        return bool(self.ended)

    # -- lookups ------------------------------------------------------------------------------------
    def all(self) -> list[TaskRecord]:
        """Every task, ended or not, in the order they were made."""
        self.flush()
        return [TaskRecord.from_api(row) for row in self.transport.tasks()]

    def named(self, name: str) -> list[TaskRecord]:
        """Every task called ``name`` (ended or not), in the order they were made."""
        return [t for t in self.all() if t.name == name]

    def get(self, task: str | Task) -> TaskRecord:
        """The one task called ``task``, or the record of a :class:`~taskreport.Task` handle. Raises
        AssertionError, saying what was recorded, when there is none or (by name) more than one."""
        everything = self.all()
        if isinstance(task, Task):
            found = [t for t in everything if t.ref == task.ref]
            what = f"task {task.ref} ({task.name!r})"
        else:
            found = [t for t in everything if t.name == task]
            what = f"a task named {task!r}"
        if len(found) != 1:
            names = ", ".join(repr(t.name) for t in everything) or "none"
            raise AssertionError(f"expected one {what}, found {len(found)}; recorded: {names}")
        return found[0]

    def children(self, parent: TaskRecord | Task | str) -> list[TaskRecord]:
        """The tasks whose parent is ``parent`` (a record, a handle or a name), in the order they were made."""
        record = parent if isinstance(parent, TaskRecord) else self.get(parent)
        return [t for t in self.all() if t.parent == record.id]

    def actions(self, task: TaskRecord | Task | str) -> list[ActionRecord]:
        """The actions added to ``task`` (a record, a handle or a name)."""
        record = task if isinstance(task, TaskRecord) else self.get(task)
        return [ActionRecord.from_api(a) for a in self.transport.list_actions(record.id)]

    def clear(self) -> None:
        """Forget what was recorded (what is pending is delivered first, then forgotten too)."""
        self.flush()
        self.transport.clear()


@contextlib.contextmanager
def capture_tasks(
    *,
    integrations: Iterable[Integration] | None = None,
    tags: Mapping[str, str] | None = None,
    strict: bool | None = None,
) -> Iterator[TaskRecorder]:
    """Record every task reported in the block, in memory; the process's client is put back afterwards.

    The settings that shape what is reported follow the client in place, if there is one (made by
    ``taskreport.init()`` or by a first use): its integrations, default ``tags``, ``strict`` and
    ``before_create`` hook; pass ``integrations``, ``tags`` or ``strict`` to choose others. Where tasks
    go does not follow: nothing reaches a store, a server or the spool, and no thread is started.

    Don't call ``taskreport.init()`` inside the block: it would replace the recorder with a real client.
    """
    previous = _client.current_client()
    before = previous.config if previous is not None else Config()
    if integrations is None:
        integrations = previous.integrations.values() if previous is not None else ()
    config = Config(
        organization="memory",
        project="default",
        tags=dict(before.tags if tags is None else tags),
        strict=before.strict if strict is None else strict,
        before_create=before.before_create,
        spool=False,
    )
    transport = MemoryTransport(config.organization, config.project)
    client = _client.Client(config, transport, integrations, threaded=False)
    _client.swap_client(client)
    try:
        yield TaskRecorder(client, transport)
    finally:
        ours = _client.swap_client(previous)
        if ours is not client and ours is not None:
            # init() ran inside the block: its client stays, as the caller asked, and ours is let go
            _client.swap_client(ours)
        client.close(5.0)  # delivers what is pending (in memory: at once), and lets the client go

