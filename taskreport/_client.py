"""The client: a thin assembly of configuration, transport and delivery, and the functions that reach it.

A client reads its configuration, builds a transport and a delivery (the pending map and the sender thread)
from it, and hands out Task handles. Nothing below it holds it. The process has one current client, made on
first use from the environment and the config file, or by :func:`init`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

from . import _context, _hooks, _task
from ._config import Config, resolve
from ._delivery import Settings
from ._errors import ConfigurationError, ValidationError
from ._integration import Integration
from ._integration import setup as setup_integrations
from ._models import ActionRecord, TaskRecord
from ._pending import Entry, Pending
from ._refs import is_ref, new_ref
from ._sender import Sender
from ._status import RUNNING, TERMINAL
from ._task import DisabledTask, Task, check_client_status
from ._transport import PageResult, Transport
from ._validation import validate_action, validate_task

logger = logging.getLogger("taskreport")

_UNSET: Any = object()
_I = TypeVar("_I", bound=Integration)
LIST_FILTERS = ("status", "name", "tag", "parent", "external_id", "ref", "page_size")
#: the environment variable that names this process's parent task (``taskreport run`` sets it)
PARENT_ENV = "TASKREPORT_PARENT"


def make_transport(config: Config) -> Transport:
    if config.embedded:
        from ._local import LocalTransport

        return LocalTransport(config.store_url, config.organization, config.project)
    from ._http import HttpTransport

    assert config.url is not None
    return HttpTransport(
        config.url,
        config.token,
        config.organization,
        config.project,
        timeout=config.request_timeout,
        retries=config.request_retries,
        allow_insecure_http=config.allow_insecure_http,
    )


def delivery_settings(config: Config, threaded: bool = True) -> Settings:
    return Settings(
        threaded=threaded,
        interval=config.flush_interval,
        strict=config.strict,
        request_timeout=config.request_timeout,
        spool_dir=config.home / "spool" if config.spool else None,
        target=config.target,
    )


class Client:
    """Everything one configuration needs. Most code uses the module functions instead."""

    def __init__(
        self,
        config: Config,
        transport: Transport | None = None,
        integrations: Iterable[Integration] = (),
        *,
        threaded: bool = True,
    ) -> None:
        """``threaded=False``: no sender thread; changes wait until :meth:`flush` delivers them from the
        calling thread (what an in-memory recorder for tests wants)."""
        self.config = config
        self.disabled = config.disabled
        self.transport: Transport = transport if transport is not None else make_transport(config)
        self.pending = Pending(max_pending=config.max_pending)
        self.sender = Sender(self.pending, self.transport, delivery_settings(config, threaded))
        self.integrations = setup_integrations(integrations)
        self._env_parent: Task | None = _UNSET
        #: why reporting is off, when a configuration was refused (said again by every call that needs it)
        self.disabled_reason: str | None = None

    def __repr__(self) -> str:
        return f"<taskreport.Client {self.transport!r}{' disabled' if self.disabled else ''}>"

    def integration(self, kind: type[_I]) -> _I | None:
        """This client's instance of an integration class, or None (not enabled, or reporting is off)."""
        if self.disabled:
            return None
        found = self.integrations.get(kind.identifier or kind.__qualname__)
        return found if isinstance(found, kind) else None

    # -- tasks -------------------------------------------------------------------------------------
    def _handle(self, entry: Entry, parent: Task | str | None = None, record: TaskRecord | None = None) -> Task:
        return Task(self.pending, entry, strict=self.config.strict, parent=parent, record=record)

    def env_parent(self) -> Task | None:
        """The parent named by ``TASKREPORT_PARENT``, for tasks made while no task is current."""
        parent = self._env_parent
        if parent is _UNSET:
            ref = os.environ.get(PARENT_ENV) or None
            parent = None
            if ref is not None:
                if is_ref(ref):
                    parent = self.attach(ref)
                else:
                    logger.warning("taskreport: ignoring %s=%r: not a task reference", PARENT_ENV, ref)
            self._env_parent = parent
        return parent

    def create_task(
        self, name: str, *, parent: Any = _UNSET, heartbeat: float | None = None, ref: str | None = None, **fields: Any
    ) -> Task:
        if self.disabled:
            return DisabledTask(name)
        if ref is not None and not is_ref(ref):
            raise ValidationError("must be a task reference (16-64 letters, digits, '-' or '_').", attr="ref")
        fields["name"] = name
        if parent is _UNSET:
            parent = _context.current.get()
            if parent is None:
                parent = self.env_parent()
        if isinstance(parent, DisabledTask):
            parent = None
        if isinstance(parent, Task) and parent.parent is not None:
            # tasks nest one level deep: a grandchild becomes its parent's sibling
            parent = parent.parent
        if parent is not None and not isinstance(parent, (Task, str)):
            raise ValidationError("must be a Task or a task id.", attr="parent")
        if heartbeat is not None:
            if isinstance(heartbeat, bool) or not isinstance(heartbeat, (int, float)) or not (
                0 < heartbeat < 2**30
            ):
                raise ValidationError(f"must be a positive number of seconds, not {heartbeat!r}.", attr="heartbeat")
            if fields.get("stale_timeout") is None:
                fields["stale_timeout"] = max(1, round(heartbeat * 2))
        given_tags = fields.get("tags") or {}
        if not isinstance(given_tags, Mapping):
            raise ValidationError("must be a mapping of namespace to value.", attr="tags")
        scoped = _context.scope_fields.get()
        tags = {**self.config.tags, **(scoped[1] if scoped else {}), **given_tags}
        if tags:
            fields["tags"] = tags
        if scoped and scoped[0]:
            data = fields.get("data")
            if data is None or isinstance(data, Mapping):
                fields["data"] = {**scoped[0], **(data or {})}
        if isinstance(parent, str):
            fields["parent"] = parent
        hook = self.config.before_create
        if hook is not None:
            if isinstance(parent, Task):
                fields["parent"] = parent
            changed = hook(dict(fields))
            if changed is None:
                return DisabledTask(name)
            fields = dict(changed)
            parent = fields.pop("parent", None)
            if parent is not None and not isinstance(parent, (Task, str)):
                raise ValidationError("must be a Task or a task id.", attr="parent")
        check_client_status(fields)
        state = validate_task(fields, partial=False)
        state.pop("parent", None)
        status = state.get("status")
        if status is not None:
            # the times are the client's: they say when it happened, not when the flusher sent it
            now = time.time()
            if status in RUNNING and "start_time" not in state:
                state["start_time"] = now
                state.setdefault("time_to_start", 0.0)
            if status in TERMINAL and "end_time" not in state:
                state["end_time"] = now
        actions = state.pop("actions", None)
        entry = Entry(
            ref or new_ref(),
            state,
            born_here=True,
            parent=parent.entry if isinstance(parent, Task) else None,
            parent_id=parent if isinstance(parent, str) else None,
        )
        task = self._handle(entry, parent)
        if _hooks.created:
            _hooks.task_created(task, state)  # integrations may add to the data it is born with
        if heartbeat is not None:
            task.heartbeat(heartbeat)
        birth = dict(state)
        if actions:
            birth["actions"] = actions
        pending = self.pending
        with pending.lock:
            if len(pending.changes) < pending.max_pending or status in TERMINAL or actions:
                pending.changes[entry] = birth
            else:
                entry.overflow = True  # the view is the birth: the next take sends it whole
                pending.overflow.add(entry)
                pending.overflowed += 1
            pending.merged += 1
        self.sender.notify(status in TERMINAL)
        return task

    def attach(self, ref: str, *, name: str | None = None, task_id: str | None = None) -> Task:
        """A handle on the task with reference ``ref``, without I/O (see :meth:`Task.attach`)."""
        if self.disabled:
            return DisabledTask(name or "")
        if not is_ref(ref):
            raise ValidationError("must be a task reference (16-64 letters, digits, '-' or '_').", attr="ref")
        if task_id is not None and not isinstance(task_id, str):
            raise ValidationError("must be a task id (a string).", attr="id")
        view: dict[str, Any] = {"name": name} if name else {}
        return self._handle(Entry(ref, view, born_here=False, task_id=task_id, name_hint=name))

    def fetch(self, task_id: str) -> Task:
        """A handle on an existing task, fetched now."""
        self._check_enabled()
        record = TaskRecord.from_api(self.transport.get_task(str(task_id)))
        state = {k: v for k, v in record.to_api().items() if k in ("name", "status", "value", "value_max", "data",
                                                                     "tags")}
        entry = Entry(record.ref or new_ref(), state, born_here=False, task_id=record.id)
        return self._handle(entry, record.parent, record)

    def get_task(self, task_id: str) -> TaskRecord:
        self._check_enabled()
        return TaskRecord.from_api(self.transport.get_task(str(task_id)))

    def list_tasks(self, **filters: Any) -> TaskList:
        self._check_enabled()
        for name in filters:
            if name not in LIST_FILTERS:
                raise ValidationError(f"unknown filter; expected one of {', '.join(LIST_FILTERS)}.", attr=name)
        return TaskList(self.transport, filters)

    def create_action(self, task_id: str, trigger: str, integration: str, config: Any = None) -> ActionRecord:
        self._check_enabled()
        fields: dict[str, Any] = {"trigger": trigger, "integration": integration}
        if config is not None:
            fields["config"] = config
        # one key for every attempt: a retry after a lost answer never adds the action twice
        row = self.transport.create_action(task_id, validate_action(fields, partial=False), os.urandom(16).hex())
        return ActionRecord.from_api(row)

    def list_actions(self, task_id: str) -> list[ActionRecord]:
        self._check_enabled()
        return [ActionRecord.from_api(a) for a in self.transport.list_actions(task_id)]

    def _check_enabled(self) -> None:
        if self.disabled:
            raise ConfigurationError(self.disabled_reason or "taskreport is disabled (TASKREPORT_DISABLED is set)")

    # -- lifecycle ---------------------------------------------------------------------------------
    def flush(self, timeout: float = 5.0) -> bool:
        if self.disabled:
            return True
        if _hooks.flushing:
            _hooks.before_flush()
        return self.sender.flush(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush with a deadline, spool whatever is left, stop the thread. True if all was delivered."""
        timeout = self.config.exit_timeout if timeout is None else timeout
        if _hooks.flushing and not self.disabled:
            _hooks.before_flush()
        return self.sender.close(0.0 if self.disabled else timeout)

    def replace_with(self, successor: Client) -> None:
        """Stop this client and move what it has not sent, and every later change to its handles, to
        ``successor``."""
        self.sender.hand_over(successor.sender, self.config.exit_timeout)

    def deliver_spool(self, timeout: float) -> tuple[int, bool]:
        """Claim the spool and deliver it now: (records claimed, all delivered)."""
        return self.sender.deliver_backlog(timeout)

    def stats(self) -> dict[str, int]:
        return self.sender.stats()


class TaskList:
    """The tasks matching some filters, newest first. Iterating fetches pages as it goes."""

    def __init__(self, transport: Transport, filters: Mapping[str, Any], page_size: int | None = None) -> None:
        self._transport = transport
        self.page_size = filters.get("page_size", page_size)
        self.filters = {k: v for k, v in filters.items() if k != "page_size"}

    def pages(self, cursor: str | None = None) -> Iterator[list[TaskRecord]]:
        while True:
            page: PageResult = self._transport.list_tasks(self.filters, cursor, self.page_size)
            yield [TaskRecord.from_api(row) for row in page.results]
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def page(self, cursor: str | None = None) -> tuple[list[TaskRecord], str | None, str | None]:
        """One page: (tasks, next cursor, previous cursor)."""
        result = self._transport.list_tasks(self.filters, cursor, self.page_size)
        return [TaskRecord.from_api(r) for r in result.results], result.next_cursor, result.previous_cursor

    def __iter__(self) -> Iterator[TaskRecord]:
        for page in self.pages():
            yield from page


# -- the process-wide client -------------------------------------------------------------------------
_client: Client | None = None
_lock = threading.Lock()
#: called with each new process-wide client (the lifecycle module hooks exits of forked children here)
on_new_client: list[Any] = []


def init(
    url: str | None = None,
    token: str | None = None,
    *,
    organization: str | None = None,
    project: str | None = None,
    tags: Mapping[str, str] | None = None,
    transport: Transport | None = None,
    integrations: Iterable[Integration] = (),
    **options: Any,
) -> Client:
    """Configure reporting for this process. Without a URL (argument, ``TASKREPORT_URL`` or the config file)
    tasks go to the embedded store. Calling it again replaces the client: what the old one had not sent
    yet, and every later change to its handles, goes through the new one."""
    global _client
    config = resolve(url, token, organization=organization, project=project, tags=tags, **options)
    client = Client(config, transport, integrations)
    with _lock:
        old, _client = _client, client
    if old is not None:
        old.replace_with(client)
    for hook in on_new_client:
        hook(client)
    return client


def get_client() -> Client:
    global _client
    client = _client
    if client is not None:
        return client
    with _lock:
        if _client is None:
            try:
                _client = Client(resolve())
            except Exception as exc:
                # nobody called init(): a broken environment or config file must not break the user's code
                logger.error("taskreport: reporting is off for this process: %s", exc)
                _client = Client(Config(disabled=True))
                _client.disabled_reason = f"reporting is off for this process: {exc}"
            client = _client
        else:
            return _client
    for hook in on_new_client:
        hook(client)
    return client


def current_client() -> Client | None:
    """The process-wide client if one was made (never makes one)."""
    return _client


def swap_client(client: Client | None) -> Client | None:
    """Make ``client`` the process-wide client without closing the one it replaces, which is returned (for
    tools that put it back afterwards, such as ``taskreport.testing``)."""
    global _client
    with _lock:
        old, _client = _client, client
    return old


def reset_lock() -> None:
    """A forked child starts with a fresh lock: another thread of the parent may have held it."""
    global _lock
    _lock = threading.Lock()


def flush(timeout: float = 5.0) -> bool:
    """Deliver everything pending within ``timeout`` seconds; True if nothing is left."""
    client = _client
    return True if client is None else client.flush(timeout)


def shutdown(timeout: float | None = None) -> bool:
    """Flush with a deadline, spool what is left and forget the client (the next call starts afresh)."""
    global _client
    with _lock:
        client, _client = _client, None
    return True if client is None else client.close(timeout)


def stats() -> dict[str, int]:
    """Counters of this process's reporting: merged, requests, retries, overflowed (changes
    that found the pending map full: kept, and sent whole later), failed, spooled, pending."""
    client = _client
    if client is None:
        return dict.fromkeys(("merged", "requests", "retries", "overflowed", "failed", "spooled", "pending"), 0)
    return client.stats()


def get_task(task_id: str) -> TaskRecord:
    """Fetch a task (synchronously)."""
    return get_client().get_task(task_id)


def list_tasks(**filters: Any) -> TaskList:
    """Tasks filtered by ``status``, ``name``, ``tag`` (``"key:value"`` or a mapping), ``parent``,
    ``external_id`` or ``ref``; iterate it for every match, or use ``.pages()``/``.page()``."""
    return get_client().list_tasks(**filters)


_task.provider = get_client
