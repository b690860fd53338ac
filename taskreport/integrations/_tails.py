"""Bounded tails of records kept on tasks, for the logging integration.

A record is appended to its task's tail in memory (a deque, under one lock: a few hundred ns). The tail is
handed to the task (``task.update(data={key: [...]})``, which the flusher then delivers like any update) at
once when the task's tail was last handed over more than ``every`` seconds ago, otherwise within ``every``
seconds by a small daemon thread; and always when the task ends, when a client flushes or closes, and at
the interpreter's exit. So a burst of records costs one update per task per ``every`` seconds instead of
one per record, and a flush or an end never misses a record.

A tail is seeded from what the task's data already holds, so forgetting a tail (the task ended, or more
than ``LIMIT`` tasks have tails) loses nothing: the next record picks up where the task's data left off.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

from .. import _hooks
from .._internal import report
from .._pending import Entry
from .._status import TERMINAL
from .._task import Task

#: tasks with a tail in memory; past it, the oldest is handed over and forgotten
LIMIT = 10_000


class Owner(Protocol):
    """What says how a tail is kept (the logging integration)."""

    key: str
    error_key: str
    tail: int


class Tail:
    __slots__ = ("error", "every", "owner", "pushed", "records", "status", "task", "waiting")

    def __init__(self, task: Task, owner: Owner, every: float) -> None:
        self.task = task
        self.owner = owner
        self.every = every
        seed: Any = None
        data = task.data
        if isinstance(data, Mapping):
            seed = data.get(owner.key)
        self.records: deque[dict[str, Any]] = deque(seed if isinstance(seed, list) else (), maxlen=owner.tail)
        #: when the tail was last handed to the task
        self.pushed = 0.0
        #: records arrived since
        self.waiting = False
        #: an error record to hand over with the tail, and the status to set with it (error_status=True)
        self.error: dict[str, Any] | None = None
        self.status: str | None = None


_lock = threading.Lock()
_start_lock = threading.Lock()
_tails: dict[Entry, Tail] = {}
_wake = threading.Event()
_thread: threading.Thread | None = None


class Busy(threading.local):
    #: this thread is handing tails over (or keeping a record): records it logs meanwhile are not kept
    active = False


#: per thread: whether it is handing tails over now
busy_state = Busy()
_busy = busy_state


def busy() -> bool:
    return _busy.active


def add(task: Task, record: dict[str, Any], owner: Owner, every: float, threaded: bool) -> None:
    """Append ``record`` to ``task``'s tail (kept as ``owner`` says); hand the tail over if it is due.

    The common case takes no lock: a deque's append is atomic, and a hand-over marks the tail as no longer
    waiting *before* it copies the records, so a record appended meanwhile is either in the copy or marks
    the tail waiting again."""
    tail = _tails.get(task.entry)
    if tail is None or tail.owner is not owner or not threaded:
        add_locked(task, record, owner, every, threaded)
        return
    tail.records.append(record)
    if record["time"] - tail.pushed >= every:
        hand_over(tail)
    elif not tail.waiting:
        tail.waiting = True
        _schedule()


def add_locked(task: Task, record: dict[str, Any], owner: Owner, every: float, threaded: bool,
               error: dict[str, Any] | None = None, status: str | None = None) -> None:
    """:func:`add` for the rarer cases: a task's first record, an error record (handed over at once, with
    ``status`` to set, if any), a client with no sender thread (nothing waits: a flush hands over)."""
    busy = _busy
    active, busy.active = busy.active, True
    try:
        with _lock:
            tail = _tails.get(task.entry)
            if tail is None or tail.owner is not owner:
                tail = _start(task, owner, every)
                if tail is None:
                    return
            tail.records.append(record)
            if error is not None:
                tail.error, tail.status = error, status
                _push(tail)
            elif not threaded:
                tail.waiting = True
            elif record["time"] - tail.pushed >= every:
                _push(tail)
            elif not tail.waiting:
                tail.waiting = True
                _schedule()
    except Exception as exc:  # never into the caller's logging call
        report("could not keep a log record on its task", exc)
    finally:
        busy.active = active


def hand_over(tail: Tail) -> None:
    """Hand ``tail`` to its task now."""
    busy = _busy
    active, busy.active = busy.active, True
    try:
        with _lock:
            _push(tail)
    except Exception as exc:
        report("could not hand log records to their task", exc)
    finally:
        busy.active = active


def _start(task: Task, owner: Owner, every: float) -> Tail | None:
    data = task.data
    if data is not None and not isinstance(data, Mapping):
        return None  # the task's data is not an object: there is no place for a tail
    tail = _tails[task.entry] = Tail(task, owner, every)
    if len(_tails) > LIMIT:
        oldest = _tails.pop(next(iter(_tails)))
        if oldest.waiting:
            _push(oldest)
    return tail


def _push(tail: Tail) -> None:
    """Hand ``tail`` to its task. Call with the lock held."""
    owner = tail.owner
    tail.waiting = False  # before the copy: a record appended meanwhile without the lock waits again
    tail.pushed = time.time()
    changes: dict[str, Any] = {owner.key: list(tail.records)}
    if tail.error is not None:
        changes[owner.error_key] = tail.error
    status, tail.error, tail.status = tail.status, None, None
    if status is None:
        tail.task.update(data=changes)
    else:
        tail.task.update(status=status, data=changes)


def push_all() -> None:
    """Hand every waiting tail to its task now (before a flush, a close, the exit)."""
    if not _tails:
        return
    active = busy()
    _busy.active = True
    try:
        with _lock:
            for tail in list(_tails.values()):
                if tail.waiting:
                    _push(tail)
    except Exception as exc:
        report("could not hand log records to their tasks", exc)
    finally:
        _busy.active = active


def ended(task: Task, status: str, fields: Mapping[str, Any]) -> None:
    """A status hook: a task that ends gets what is waiting of its tail, and its tail is forgotten."""
    if status not in TERMINAL or busy():
        return
    entry = task.entry
    if entry not in _tails:
        return
    _busy.active = True
    try:
        with _lock:
            tail = _tails.pop(entry, None)
            if tail is not None and tail.waiting:
                _push(tail)
    finally:
        _busy.active = False


# -- the thread that hands over what waits ------------------------------------------------------------
def _schedule() -> None:
    if not _wake.is_set():
        _wake.set()
    if _thread is None:
        _start_thread()


def _start_thread() -> None:
    global _thread
    with _start_lock:
        if _thread is None:
            thread = threading.Thread(target=_run, name="taskreport-log-tails", daemon=True)
            _thread = thread
            try:
                thread.start()
            except RuntimeError:  # the interpreter is exiting: the exit hook hands tails over
                _thread = None


def _run() -> None:
    while True:
        _wake.wait()
        try:
            with _lock:
                waits = [t.every for t in _tails.values() if t.waiting]
            time.sleep(min(waits) if waits else 0.05)  # let the records of a burst gather
            _wake.clear()
            push_all()
        except Exception as exc:  # a bug here must not stop the thread: the next records would wait for an end
            report("handing log records to their tasks failed", exc)
            time.sleep(1.0)


def _after_fork_child() -> None:
    """What the parent held is the parent's to hand over: the child starts empty, with its own lock."""
    global _lock, _start_lock, _wake, _thread, _tails
    _lock = threading.Lock()
    _start_lock = threading.Lock()
    _wake = threading.Event()
    _thread = None
    _tails = {}


def install() -> None:
    """Once per process (the logging integration's setup)."""
    _hooks.status_changed.append(ended)
    _hooks.flushing.append(push_all)
    # registered after the library's own exit hook, so it runs before it: tails first, then the flush
    atexit.register(push_all)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_child)
