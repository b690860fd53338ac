"""The background sender: coalesces task changes and delivers the latest state of each task.

One daemon thread per process, started on first use. Each cycle swaps the set of tasks with pending changes
out under the lock and sends outside it, one request per changed task. Failures keep the state pending
(newer fields win) and back off; a 429 pauses all sending until its Retry-After; what is still undelivered
at exit goes to the on-disk spool.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
import uuid
import weakref
from typing import TYPE_CHECKING, Any

from . import _spool
from ._errors import (
    NotFound,
    RateLimited,
    ServerError,
    TaskReportError,
    TransportError,
    Unauthorized,
    ValidationError,
    is_transient,
)
from ._models import TaskRecord
from ._ratelog import RateLimitedLog
from ._status import TERMINAL
from ._transport import Op
from ._validation import validate_actions, validate_task_field

if TYPE_CHECKING:
    from ._client import Client
    from ._task import Task

logger = logging.getLogger("taskreport")

#: wake the thread early once this many tasks wait
BATCH_WAKE = 256
#: retry backoff after connection errors and 5xx, in seconds
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
#: the longest pause a Retry-After can impose, in seconds
MAX_RETRY_AFTER = 300.0
#: while someone waits in flush() (or at exit), retry this often at most despite a longer backoff
URGENT_RETRY = 0.25


def _retryable(exc: TaskReportError) -> bool:
    # a 500 is retried too: the latest state is kept and sent again, never thrown away on a server bug
    return is_transient(exc) or (exc.status_code or 0) >= 500


class Flusher:
    """Owns the lock every Task method takes, the map of tasks with pending changes, and the thread."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.strict = client.config.strict
        self.interval = client.config.flush_interval
        self.max_pending = client.config.max_pending
        self.log = RateLimitedLog()
        #: every live handle bound to this flusher, so that init() can move them all to its successor
        self.handles: weakref.WeakSet[Task] = weakref.WeakSet()
        #: the flusher that replaced this one (init() was called again); None for a closed or live one
        self.successor: Flusher | None = None
        self._reset()
        # counters, read by stats(); updated under the lock or only by the flusher thread
        self.merged = 0
        self.requests = 0
        self.retries = 0
        self.dropped = 0
        self.spooled = 0
        self.failed = 0
        self.closed = False
        self.disabled = False
        self.delivery_error: TaskReportError | None = None

    def _reset(self) -> None:
        """Fresh synchronisation state: at start, and in a forked child."""
        self.lock = threading.Lock()
        self.pending: dict[Task, None] = {}
        self.event = threading.Event()
        self.cycle_done = threading.Condition(threading.Lock())
        self.cycle_lock = threading.Lock()
        #: notified after every cycle, for Task.wait_id
        self.ids = threading.Condition(self.lock)
        # identity token: Task handles compare it to notice they crossed a fork
        self.gen = object()
        self.inflight: list[tuple[Task, dict[str, Any]]] = []
        self.heartbeats: weakref.WeakKeyDictionary[Task, float] = weakref.WeakKeyDictionary()
        #: tasks whose heartbeat is due: sent with no fields, which only moves ``updated`` on the service
        self.touches: set[Task] = set()
        self.thread: threading.Thread | None = None
        self.pid = os.getpid()
        self.paused_until = 0.0
        self.backoff_until = 0.0
        self.last_failure = 0.0
        self.failures = 0
        self.urgent = False
        self.spool_claims: list[tuple[Any, list[Task]]] = []
        #: tasks a close() spooled: a late answer for them must not spool them again
        self.spooled_at_close: weakref.WeakSet[Task] = weakref.WeakSet()

    # -- called from Task methods, under self.lock ----------------------------------------------------
    def add(self, task: Task, terminal: bool) -> None:
        if self.closed:
            self._hand_over(task, terminal)
            return
        if self.disabled:
            return
        if len(self.pending) >= self.max_pending and not terminal:
            # memory stays bounded by the number of tasks: this task waits, its changes kept on it, until a
            # later change (or its end) finds room, and then carries them all
            self.dropped += 1
            return
        self.pending[task] = None
        if self.thread is None or len(self.pending) >= BATCH_WAKE:
            self._ensure_thread()
            if len(self.pending) >= BATCH_WAKE:
                self.event.set()

    def _hand_over(self, task: Task, terminal: bool) -> None:
        """A change to a handle of this closed flusher: the flusher that replaced it takes it; with none (a
        client closed or shut down), an end is spooled for the next process and anything else dropped."""
        new = self.successor
        while new is not None and new.closed and new.successor is not None:
            new = new.successor
        if new is None or new.closed or new.disabled:
            if terminal and self.client.config.spool and not self.disabled and not (
                task in self.spooled_at_close and not task._dirty
            ):
                fields = {**task._state, **task._dirty} if task._id is None else dict(task._dirty)
                try:
                    _spool.write(self.client.config, [(task, fields)])
                    task._fold_dirty()
                    self.spooled += 1
                    return
                except OSError:
                    pass
            self.dropped += 1
            return
        task._client, task._fl = new.client, new
        with new.lock:
            task._gen = new.gen
            new.handles.add(task)
            new.add(task, terminal)

    def wake(self) -> None:
        self.event.set()

    def request_flush(self) -> None:
        with self.lock:
            self._ensure_thread()
        self.urgent = True
        self.event.set()

    def _ensure_thread(self) -> None:
        if self.thread is not None and self.pid == os.getpid():
            return
        if self.closed:
            return
        if self.pid != os.getpid():  # a fork that register_at_fork did not see (e.g. os.fork from C)
            self.after_fork_child()
        thread = threading.Thread(target=self._run, name="taskreport-flusher", daemon=True)
        self.thread = thread
        try:
            thread.start()
        except RuntimeError:
            # interpreter shutting down: the exit hook flushes synchronously instead
            self.thread = None

    def set_heartbeat(self, task: Task, every: float | None) -> None:
        with self.lock:
            if every is None or every <= 0:
                self.heartbeats.pop(task, None)
            else:
                self.heartbeats[task] = float(every)
                self._ensure_thread()
        self.event.set()

    # -- fork ---------------------------------------------------------------------------------------
    def before_fork(self) -> None:
        self.lock.acquire()

    def after_fork_parent(self) -> None:
        self.lock.release()

    def after_fork_child(self) -> None:
        # the parent keeps sending what was pending, and keeps its tasks' heartbeats: a child's would say a
        # task is alive after the parent ended it
        self._reset()
        self.log = RateLimitedLog(self.log.interval)
        self.client.transport.after_fork()

    # -- the thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        self._claim_spool()
        while True:
            try:
                wait = self.interval * random.uniform(0.9, 1.1)
                with self.lock:
                    shortest = min(self.heartbeats.values(), default=None)
                if shortest is not None:
                    wait = min(wait, shortest / 2)
                self.event.wait(wait)
                self.event.clear()
                if self.closed:
                    break
                self.cycle()
            except Exception:  # pragma: no cover - a bug in taskreport must not stop reporting
                logger.exception("taskreport: flusher cycle failed")
                if self.strict:
                    raise

    def cycle(self, *, honour_backoff: bool = True) -> bool:
        """Send everything that is due. True when nothing is left pending."""
        with self.cycle_lock:
            try:
                return self._cycle(honour_backoff)
            finally:
                with self.cycle_done:
                    self.cycle_done.notify_all()
                with self.ids:
                    self.ids.notify_all()

    def _cycle(self, honour_backoff: bool) -> bool:
        now = time.monotonic()
        urgent, self.urgent = self.urgent, False
        if now < self.paused_until:
            return False
        if now < self.backoff_until:
            if honour_backoff and not urgent:
                return False
            if now < self.last_failure + URGENT_RETRY:
                return False
        self._queue_heartbeats(now)
        with self.lock:
            if not self.pending:
                return True
            tasks = list(self.pending)
            self.pending = {}
            batch: list[tuple[Task, dict[str, Any]]] = []
            for task in tasks:
                dirty = task._dirty
                task._dirty = {}
                actions = dirty.pop("actions", None)
                task._state.update(dirty)
                # not created yet: the create carries the whole current state
                fields = dict(task._state) if task._id is None else dirty
                if actions is not None:
                    fields["actions"] = actions
                batch.append((task, fields))
            self.inflight = batch
        try:
            self._deliver(batch)
        finally:
            with self.lock:
                self.inflight = []
                self.touches.clear()
                left = bool(self.pending)
        self._release_spool_claims()
        return not left

    def _deliver(self, batch: list[tuple[Task, dict[str, Any]]]) -> None:
        try:
            self._deliver_rounds(batch)
        except Exception:
            # a bug or an odd answer must not lose the batch: what is not settled goes back to pending
            logger.exception("taskreport: delivery failed unexpectedly; the changes are kept")
            with self.lock:
                unsettled = list(self.inflight)
            for task, fields in unsettled:
                self._requeue(task, fields)
            self._settle([task for task, _ in unsettled])
            if self.strict:
                raise

    def _deliver_rounds(self, batch: list[tuple[Task, dict[str, Any]]]) -> None:
        # parents are created before their children: each round sends what has no unsent parent
        remaining = batch
        in_batch = {id(t) for t, _ in batch}
        while remaining:
            ready: list[tuple[Task, Op]] = []
            later: list[tuple[Task, dict[str, Any]]] = []
            skipped: list[Task] = []
            for task, fields in remaining:
                parent = fields.get("parent")
                if parent is not None and not isinstance(parent, str):
                    if parent._id is None and not parent._orphaned():
                        later.append((task, fields))
                        if id(parent) not in in_batch:
                            # a parent left out (a full pending map) must not hold its child back forever
                            with self.lock:
                                self.pending[parent] = None
                        continue
                    fields = {**fields, "parent": parent._id}
                    if parent._id is None:
                        del fields["parent"]
                        self.log.log(
                            logging.WARNING,
                            "parent",
                            "taskreport: %r is sent without its parent %r, which could not be created from this "
                            "process (rejected, or made before a fork and never sent from here)",
                            task,
                            parent,
                        )
                op = self._op(task, fields)
                if op is None:
                    skipped.append(task)
                else:
                    ready.append((task, op))
            self._settle(skipped)
            if ready:
                self._send(ready)
            if not ready or time.monotonic() < max(self.paused_until, self.backoff_until):
                # parents still pending elsewhere, or the service failed or asked us to wait: next cycle
                for task, fields in later:
                    self._requeue(task, fields)
                self._settle([task for task, _ in later])
                return
            remaining = later

    def _settle(self, tasks: list[Task]) -> None:
        """Drop tasks whose op got its answer from ``inflight``, so an exit spools only what is unsettled."""
        if not tasks:
            return
        done = {id(t) for t in tasks}
        with self.lock:
            self.inflight = [(t, f) for t, f in self.inflight if id(t) not in done]

    def _op(self, task: Task, fields: dict[str, Any]) -> Op | None:
        clean: dict[str, Any] = {}
        for key, value in fields.items():
            try:
                if key == "actions":
                    clean[key] = validate_actions(value)
                else:
                    clean[key] = validate_task_field(key, value)
            except ValidationError as exc:
                self.failed += 1
                self.log.log(
                    logging.ERROR, f"invalid:{exc.attr}", "taskreport: ignoring an invalid field of %r: %s", task, exc
                )
        if task._id is None and "name" not in clean:
            task._failed = True
            return None
        if task._id is not None and not clean and task not in self.touches:
            return None
        if task._id is None and task._key is None:
            task._key = uuid.uuid4().hex
        return Op(task._id, clean, task._key if task._id is None else None)

    def _send(self, ready: list[tuple[Task, Op]]) -> None:
        ops = [op for _, op in ready]
        try:
            results = self.client.transport.send(ops)
        except TaskReportError as exc:
            results = [exc] * len(ops)
        except Exception as exc:  # a transport bug or an unexpected error: keep the data, log, retry later
            logger.exception("taskreport: sending failed")
            results = [TransportError(f"{type(exc).__name__}: {exc}")] * len(ops)
        self.requests += len([r for r in results if not isinstance(r, TaskReportError) or r.status_code])
        any_ok = backoff = False
        for (task, op), result in zip(ready, results, strict=True):
            if not isinstance(result, TaskReportError) and not (isinstance(result, dict) and result.get("id")):
                result = ServerError(f"the service answered without a task: {str(result)[:100]!r}", status_code=502)
            if isinstance(result, TaskReportError):
                backoff |= self._failed_op(task, op, result)
            else:
                any_ok = True
                self._sent(task, result)
        self._settle([task for task, _ in ready])
        if any_ok:
            self.failures = 0
            self.backoff_until = 0.0
        elif backoff:
            # one step per failed round, however many tasks it carried
            self.failures += 1
            now = self.last_failure = time.monotonic()
            cap = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(self.failures - 1, 16))
            self.backoff_until = now + random.uniform(cap / 2, cap)

    def _sent(self, task: Task, row: dict[str, Any]) -> None:
        task._last_sent = time.monotonic()
        if task._id is None:
            task._id = str(row["id"])
        try:
            task._record = TaskRecord.from_api(row)
        except Exception:  # a service answering oddly (a year 99999, say) must not break delivery
            task._record = None

    def _failed_op(self, task: Task, op: Op, exc: TaskReportError) -> bool:
        """Handle one failed op; True when it calls for backing off."""
        if _retryable(exc):
            self.retries += 1
            self._requeue(task, op.fields)
            self.log.log(
                logging.WARNING, f"retry:{type(exc).__name__}", "taskreport: delivery failed (%s); will retry", exc
            )
            if isinstance(exc, RateLimited) or exc.retry_after is not None:
                now = time.monotonic()
                # honoured, up to a point: one odd header must not silence reporting for a day
                wait = min(exc.retry_after or self.interval, MAX_RETRY_AFTER)
                self.paused_until = max(self.paused_until, now + wait)
                return False
            return True
        if isinstance(exc, Unauthorized):
            self.disabled = True
            with self.lock:
                abandoned = [task, *self.pending]
                self.pending = {}
            self.failed += len(abandoned)
            for each in abandoned:
                if each._id is None:
                    each._failed = True
            self.log.log(
                logging.ERROR,
                "unauthorized",
                "taskreport: the service refused the API token (%s); reporting is off for this process",
                exc.detail,
            )
        else:
            self.failed += 1
            self.log.log(
                logging.ERROR,
                f"drop:{exc.status_code}",
                "taskreport: the service rejected an update of %r and it was dropped: %s",
                task,
                exc,
            )
            if task._id is None or isinstance(exc, NotFound):
                task._failed = True
        if self.strict and self.delivery_error is None:
            self.delivery_error = exc
        return False

    def _requeue(self, task: Task, fields: dict[str, Any]) -> None:
        with self.lock:
            if self.closed and task in self.spooled_at_close:
                return  # the close that ended this flusher spooled these very changes
            dirty = task._dirty
            actions = [*(fields.get("actions") or ()), *(dirty.get("actions") or ())]
            if task._id is not None:
                # newer changes made meanwhile win over the ones that failed
                task._dirty = {**fields, **dirty}
            if actions:
                task._dirty["actions"] = actions
            if not self.closed:
                self.pending[task] = None
                return
        self._hand_over(task, task._get("status") in TERMINAL)

    def _queue_heartbeats(self, now: float) -> None:
        if not self.heartbeats:
            return
        with self.lock:
            for task, every in list(self.heartbeats.items()):
                status = task._get("status")
                if status in TERMINAL or task._failed:
                    del self.heartbeats[task]
                    continue
                if task._id is not None and now - task._last_sent >= every and task not in self.pending:
                    self.touches.add(task)
                    self.pending[task] = None

    # -- flushing and closing ------------------------------------------------------------------------
    def flush(self, timeout: float) -> bool:
        """Deliver everything pending, waiting at most ``timeout`` seconds. True if nothing is left."""
        deadline = time.monotonic() + max(0.0, timeout)
        alive = self.thread is not None and self.thread.is_alive() and self.pid == os.getpid()
        if threading.current_thread() is self.thread:
            alive = False
        while True:
            with self.lock:
                done = not self.pending and not self.inflight
            if done:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.disabled:
                break
            if time.monotonic() < self.paused_until and self.paused_until > deadline:
                break  # the service asked us to wait past the deadline
            if alive:
                with self.cycle_done:
                    self.urgent = True
                    self.event.set()
                    self.cycle_done.wait(min(remaining, 0.1))
            else:
                # no thread (never started, or the interpreter is exiting): send from this thread
                transport = self.client.transport
                transport.set_timeout(min(remaining, self.client.config.request_timeout))
                try:
                    finished = self.cycle(honour_backoff=False)
                finally:
                    transport.set_timeout(None)
                if not finished:
                    time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        with self.lock:
            left = bool(self.pending) or bool(self.inflight) or self.disabled
        if self.strict and self.delivery_error is not None:
            exc, self.delivery_error = self.delivery_error, None
            raise exc
        return not left

    def undelivered(self) -> list[tuple[Task, dict[str, Any]]]:
        """What is still pending or in flight, with the fields a new process would need to send it.
        Call with the lock held."""
        out: list[tuple[Task, dict[str, Any]]] = []
        seen: set[int] = set()
        for task, fields in self.inflight:
            seen.add(id(task))
            dirty = task._dirty
            merged = {**fields, **dirty}
            actions = [*(fields.get("actions") or ()), *(dirty.get("actions") or ())]
            if actions:
                merged["actions"] = actions
            out.append((task, merged))
        for task in self.pending:
            if id(task) not in seen:
                out.append((task, {**task._state, **task._dirty} if task._id is None else dict(task._dirty)))
        return out

    def close(self) -> None:
        self.closed = True
        self.event.set()
        with self.ids:
            self.ids.notify_all()
        thread = self.thread
        if thread is not None and thread is not threading.current_thread() and self.pid == os.getpid():
            thread.join(timeout=1.0)

    # -- the spool ------------------------------------------------------------------------------------
    def _claim_spool(self) -> None:
        config = self.client.config
        if not config.spool or self.disabled:
            return
        try:
            claims = _spool.claim(config)
        except (OSError, ValueError) as exc:
            self.log.log(logging.WARNING, "spool", "taskreport: cannot read the spool: %s", exc)
            return
        for path, entries in claims:
            tasks = _spool.tasks_from_entries(self.client, entries)
            with self.lock:
                for task in tasks:
                    self.pending[task] = None
                self.spool_claims.append((path, tasks))
        if claims:
            self.event.set()

    def _release_spool_claims(self) -> None:
        if not self.spool_claims:
            return
        with self.lock:
            done = [c for c in self.spool_claims if all(t not in self.pending and not t._dirty for t in c[1])]
            self.spool_claims = [c for c in self.spool_claims if c not in done]
        for path, _ in done:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def deliver_spool_now(self, timeout: float) -> tuple[int, bool]:
        """Claim spooled tasks and deliver them from this thread. Returns (tasks claimed, all delivered)."""
        self._claim_spool()
        with self.lock:
            count = sum(len(tasks) for _, tasks in self.spool_claims)
        return count, self.flush(timeout)
