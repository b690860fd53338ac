"""The process-wide client: configuration, transport and flusher, plus the functions that reach it."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from . import _context
from ._config import Config, resolve
from ._errors import ConfigurationError, ValidationError
from ._flusher import Flusher
from ._models import ActionRecord, TaskRecord
from ._status import RUNNING, TERMINAL
from ._task import DisabledTask, Task
from ._transport import PageResult, Transport
from ._validation import validate_action, validate_task

logger = logging.getLogger("taskreport")

_UNSET: Any = object()
LIST_FILTERS = ("status", "name", "tag", "parent", "external_id", "page_size")


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


class Client:
    """Everything one configuration needs. Most code uses the module functions instead."""

    def __init__(self, config: Config, transport: Transport | None = None) -> None:
        self.config = config
        self.transport: Transport = transport if transport is not None else make_transport(config)
        self.flusher = Flusher(self)
        self.disabled = config.disabled
        #: whether multiprocessing's exit hook will flush this client in a child process
        self.mp_hooked = False

    def __repr__(self) -> str:
        return f"<taskreport.Client {self.transport!r}{' disabled' if self.disabled else ''}>"

    # -- tasks -------------------------------------------------------------------------------------
    def create_task(self, name: str, *, parent: Any = _UNSET, heartbeat: float | None = None, **fields: Any) -> Task:
        if self.disabled:
            return DisabledTask(self, {"name": name})
        fields["name"] = name
        if parent is _UNSET:
            parent = _context.current.get()
        if isinstance(parent, Task) and parent._get("parent") is not None:
            # tasks nest one level deep: a grandchild becomes its parent's sibling
            parent = parent._get("parent")
        if parent is not None:
            fields["parent"] = parent
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
        if isinstance(parent, DisabledTask):
            fields.pop("parent")
        hook = self.config.before_create
        if hook is not None:
            changed = hook(dict(fields))
            if changed is None:
                return DisabledTask(self, {"name": name})
            fields = dict(changed)
        state = validate_task(fields, partial=False)
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
        task = Task(self, state)
        if heartbeat is not None:
            task.heartbeat(heartbeat)
        with self.flusher.lock:
            if actions:
                task._dirty["actions"] = actions
            self.flusher.merged += 1
            self.flusher.add(task, status in TERMINAL)
        if status in TERMINAL:
            self.flusher.wake()
        return task

    def attach(self, task_id: str) -> Task:
        self._check_enabled()
        record = TaskRecord.from_api(self.transport.get_task(task_id))
        state = {
            k: v
            for k, v in record.to_api().items()
            if k in ("name", "status", "value", "value_max", "data", "tags", "parent")
        }
        return Task(self, state, task_id=record.id, record=record)

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
        return ActionRecord.from_api(self.transport.create_action(task_id, validate_action(fields, partial=False)))

    def list_actions(self, task_id: str) -> list[ActionRecord]:
        self._check_enabled()
        return [ActionRecord.from_api(a) for a in self.transport.list_actions(task_id)]

    def _check_enabled(self) -> None:
        if self.disabled:
            raise ConfigurationError("taskreport is disabled (TASKREPORT_DISABLED is set)")

    # -- lifecycle ---------------------------------------------------------------------------------
    def flush(self, timeout: float = 5.0) -> bool:
        return self.flusher.flush(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush with a deadline, spool whatever is left, stop the thread. True if all was delivered."""
        if self.flusher.closed:
            return True
        timeout = self.config.exit_timeout if timeout is None else timeout
        fl = self.flusher
        failure: BaseException | None = None
        delivered = True
        try:
            if not self.disabled:
                delivered = fl.flush(timeout)
        except Exception as exc:  # strict mode re-raises a delivery error: after closing, not instead
            failure, delivered = exc, False
        with fl.lock:
            # closed and snapshot in one step: a change made from now on is handed on (or, with nobody to
            # take it, spooled on its own), never left in a pending map nobody sends
            fl.closed = True
            left = fl.undelivered() if self.config.spool and not self.disabled else []
            fl.pending = {}
            for task, _ in left:
                # the spool owns these changes now: a later change must not carry them a second time
                task._fold_dirty()
                fl.spooled_at_close.add(task)
        if left:
            self._spool_undelivered(left)
            delivered = False
        fl.close()
        with contextlib.suppress(Exception):  # closing must not fail an exit
            self.transport.close()
        if failure is not None:
            raise failure
        return delivered

    def replace_with(self, successor: Client) -> None:
        """Stop this client and move every handle, with what it has not sent, to ``successor``."""
        fl, new = self.flusher, successor.flusher
        # let a cycle in flight finish, and start no other: its answers settle before anything moves
        finished = fl.cycle_lock.acquire(timeout=self.config.exit_timeout)
        try:
            with fl.lock:
                # one step: no change can land between the close and the move
                fl.closed = True
                fl.successor = new
                handles = list(fl.handles)
                waiting = {id(t) for t in fl.pending}
                if not finished:
                    # a request that hangs: what it carries travels with the handle (it may arrive twice)
                    for task, fields in fl.inflight:
                        waiting.add(id(task))
                        if task._id is not None:
                            task._dirty = {**fields, **task._dirty}
                heartbeats = dict(fl.heartbeats)
                fl.pending = {}
                for task in handles:
                    task._client, task._fl, task._gen = successor, new, new.gen
                # a change already waiting on the old lock compares generations next: they must agree
                fl.gen = new.gen
            with new.lock:
                for task in handles:
                    new.handles.add(task)
                    if id(task) in waiting:
                        new.add(task, task._get("status") in TERMINAL)
            for task, every in heartbeats.items():
                new.set_heartbeat(task, every)
        finally:
            if finished:
                fl.cycle_lock.release()
        fl.close()
        with contextlib.suppress(Exception):
            self.transport.close()

    def _spool_undelivered(self, items: list[tuple[Task, dict[str, Any]]]) -> None:
        from . import _spool

        try:
            path = _spool.write(self.config, items)
        except OSError as exc:
            logger.error("taskreport: %d task(s) could not be delivered nor spooled: %s", len(items), exc)
            return
        # what this process claimed from the spool and could not deliver is in the new file now
        for claimed, _ in self.flusher.spool_claims:
            with contextlib.suppress(FileNotFoundError):
                claimed.unlink()
        self.flusher.spool_claims = []
        self.flusher.spooled += len(items)
        logger.warning("taskreport: %d task(s) not delivered before exit; spooled to %s", len(items), path)

    def stats(self) -> dict[str, int]:
        fl = self.flusher
        with fl.lock:
            pending = len(fl.pending)
        return {
            "merged": fl.merged,
            "requests": fl.requests,
            "retries": fl.retries,
            "dropped": fl.dropped,
            "failed": fl.failed,
            "spooled": fl.spooled,
            "pending": pending,
        }


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


def init(
    url: str | None = None,
    token: str | None = None,
    *,
    organization: str | None = None,
    project: str | None = None,
    tags: Mapping[str, str] | None = None,
    transport: Transport | None = None,
    **options: Any,
) -> Client:
    """Configure reporting for this process. Without a URL (argument, ``TASKREPORT_URL`` or the config file)
    tasks go to the embedded store. Calling it again replaces the client: what the old one had not sent
    yet, and every later change to its handles, goes through the new one."""
    global _client
    config = resolve(url, token, organization=organization, project=project, tags=tags, **options)
    client = _new_client(config, transport)
    with _lock:
        old, _client = _client, client
    if old is not None:
        old.replace_with(client)
    return client


def _new_client(config: Config, transport: Transport | None = None) -> Client:
    client = Client(config, transport)
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        import multiprocessing

        if multiprocessing.parent_process() is not None:
            # made inside a multiprocessing child, which will leave through os._exit: flush on its exit hook
            util.Finalize(None, _at_exit, exitpriority=100)
            client.mp_hooked = True
    return client


def get_client() -> Client:
    global _client
    client = _client
    if client is not None:
        return client
    with _lock:
        if _client is None:
            try:
                _client = _new_client(resolve())
            except Exception as exc:
                # nobody called init(): a broken environment or config file must not break the user's code
                logger.error("taskreport: reporting is off for this process: %s", exc)
                _client = Client(Config(disabled=True))
        return _client


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
    """Counters of this process's reporting: merged, requests, retries, dropped, failed, spooled, pending."""
    client = _client
    if client is None:
        return dict.fromkeys(("merged", "requests", "retries", "dropped", "failed", "spooled", "pending"), 0)
    return client.stats()


def get_task(task_id: str) -> TaskRecord:
    """Fetch a task (synchronously)."""
    return get_client().get_task(task_id)


def list_tasks(**filters: Any) -> TaskList:
    """Tasks filtered by ``status``, ``name``, ``tag`` (``"key:value"`` or a mapping), ``parent`` or
    ``external_id``; iterate it for every match, or use ``.pages()``/``.page()``."""
    return get_client().list_tasks(**filters)


def _at_exit() -> None:
    client = _client
    if client is not None:
        try:
            client.close()
        except Exception:  # pragma: no cover - never fail the interpreter's exit
            logger.exception("taskreport: flushing at exit failed")


def _before_fork() -> None:
    client = _client
    if client is not None:
        _watch_multiprocessing(client)
        client.flusher.before_fork()


def _after_fork_parent() -> None:
    client = _client
    if client is not None:
        client.flusher.after_fork_parent()


def _after_fork_child() -> None:
    global _lock
    _lock = threading.Lock()
    client = _client
    if client is not None:
        client.flusher.after_fork_child()


def _watch_multiprocessing(client: Client) -> None:
    """multiprocessing's children leave through os._exit, past atexit: flush through its own exit hook."""
    util = sys.modules.get("multiprocessing.util")
    if util is not None and not client.mp_hooked:
        client.mp_hooked = True
        # runs in each new multiprocessing child, which then flushes when the child's run() returns
        util.register_after_fork(client, _hook_multiprocessing_exit)


def _hook_multiprocessing_exit(client: Client) -> None:
    if client is not _client:
        return
    util = sys.modules["multiprocessing.util"]
    # tied to no object: a finalizer tied to one would also fire when that object is collected, mid-job
    util.Finalize(None, _at_exit, exitpriority=100)


atexit.register(_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child)
