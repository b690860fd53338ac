"""The sending loop: one daemon thread per client that takes what is pending and delivers it in rounds.

A round takes the whole pending map (one swap), this process's changes first and then a batch of the
spool's backlog, and hands each to :class:`~taskreport._rounds.Rounds` to plan, send and settle. This module
is the thread (when it wakes: the interval, an end, a full map, a heartbeat, a waiter), the waiting (flush,
wait_id: always sleeping on an event or a condition) and the ending (close with a deadline and the spool,
hand-over to a successor, fork).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import weakref

from . import _internal
from ._backlog import Backlog
from ._delivery import Settings
from ._ending import Ending
from ._errors import TaskReportError
from ._pending import BATCH_WAKE, Entry, Pending
from ._plan import Planner
from ._ratelog import RateLimitedLog
from ._retry import RetryPolicy
from ._rounds import Item, Rounds
from ._status import TERMINAL
from ._transport import Transport

logger = logging.getLogger("taskreport")

#: after an end wakes the sender, how long other ends may join its round (seconds)
LINGER = 0.05
#: spooled changes of earlier processes sent per round, after this process's own
BACKLOG_ROUND = 1000


_live: weakref.WeakSet[Sender] = weakref.WeakSet()


class Sender(Rounds, Ending):
    def __init__(self, pending: Pending, transport: Transport, settings: Settings) -> None:
        self.pending = pending
        self.transport = transport
        self.settings = settings
        self.strict = settings.strict
        self.policy = RetryPolicy(settings.interval)
        self.log = RateLimitedLog()
        self.planner = Planner(self.log)
        self.closed = False
        #: the service refused our credentials: nothing more is sent
        self.disabled = False
        self.delivery_error: TaskReportError | None = None
        # counters for stats(), written by whichever thread runs a round (one at a time)
        self.requests = 0
        self.retries = 0
        self.failed = 0
        self.spooled = 0
        self._reset()
        pending.on_change = self.notify
        pending.wait_for = self.wait_for
        _live.add(self)

    def _reset(self) -> None:
        """Fresh threads and locks: at start, and in a forked child (whose parent delivers what it had)."""
        self.thread: threading.Thread | None = None
        self.pid = os.getpid()
        self.event = threading.Event()
        self.done = threading.Condition()
        self.cycle_lock = threading.Lock()
        self.start_lock = threading.Lock()
        self.inflight_lock = threading.Lock()
        self.inflight: list[Item] = []
        self.waiters = 0
        self._stop_requested = threading.Event()
        spool_dir = self.settings.spool_dir
        self.backlog = Backlog(spool_dir, self.settings.target) if spool_dir is not None else None

    def __repr__(self) -> str:
        return f"<Sender {self.transport!r}>"

    @property
    def stopping(self) -> bool:
        return self._stop_requested.is_set()

    # -- waking -------------------------------------------------------------------------------------
    def notify(self, terminal: bool) -> None:
        """A handle added a task to the pending map (or ended one): make sure someone sends it."""
        if self.thread is None:
            self._ensure_thread()
        if (terminal or len(self.pending.changes) >= BATCH_WAKE) and not self.event.is_set():
            self.event.set()

    def _ensure_thread(self) -> None:
        if not self.settings.threaded:
            return
        with self.start_lock:
            if self.thread is not None or self.closed or self.stopping:
                return
            thread = threading.Thread(target=self._run, name="taskreport-sender", daemon=True)
            self.thread = thread
            try:
                thread.start()
            except RuntimeError:
                self.thread = None  # the interpreter is exiting: the exit hook sends from its own thread

    def _alive(self) -> bool:
        thread = self.thread
        return thread is not None and thread.is_alive() and thread is not threading.current_thread()

    # -- the thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        if self.backlog is not None:
            try:
                self.backlog.claim()
            except (OSError, ValueError) as exc:
                self.log.log(logging.WARNING, "spool", "taskreport: cannot read the spool: %s", exc)
        while not self._stop_requested.is_set():
            wait = self._next_wait()
            woken = self.event.wait(wait) if wait > 0 else False
            if woken and not self.waiters and len(self.pending.changes) < BATCH_WAKE:
                # woken by an end: ends of the same moment (a busy worker's tasks) join this round
                self._stop_requested.wait(LINGER)
            self.event.clear()
            if self._stop_requested.is_set():
                break
            if time.monotonic() < self.policy.earliest(urgent=self.waiters > 0):
                continue  # woken while backing off: sleep on, don't spin
            try:
                self.cycle()
            except Exception as exc:  # a bug in taskreport must not stop reporting
                _internal.report("a delivery round failed", exc)

    def _next_wait(self) -> float:
        now = time.monotonic()
        wait = self.settings.interval * random.uniform(0.9, 1.1)
        beats = [every for _, every in self.pending.due_heartbeats()]
        if beats:
            wait = min(wait, min(beats) / 2)
        if self.backlog is not None and len(self.backlog):
            wait = 0.0  # drain at the service's pace, round after round
        if self.waiters:
            wait = 0.0
        earliest = self.policy.earliest(urgent=self.waiters > 0)
        return max(wait, earliest - now)

    # -- a round ------------------------------------------------------------------------------------
    def cycle(self) -> None:
        """Send everything that is due now (a no-op while backing off)."""
        with self.cycle_lock:
            try:
                self._cycle()
            finally:
                with self.done:
                    self.done.notify_all()

    def _cycle(self) -> None:
        if time.monotonic() < self.policy.earliest(urgent=self.waiters > 0):
            return
        self._queue_heartbeats()
        with self.inflight_lock:
            own: list[Item] = [(e, f, False) for e, f in self.pending.take().items()]
            self.inflight = own
        self._round(own)
        # then some of the backlog, as a round of its own: this process's changes never wait behind it
        backlog = self.backlog
        if backlog is not None and len(backlog) and not self.disabled:
            if time.monotonic() >= self.policy.earliest(urgent=False):
                with self.inflight_lock:
                    spooled: list[Item] = [(e, f, True) for e, f in backlog.take(BACKLOG_ROUND)]
                    self.inflight = spooled
                self._round(spooled)
            backlog.release_if_done(busy=False)

    def _round(self, items: list[Item]) -> None:
        if not items:
            return
        try:
            if self.disabled:
                self.failed += len(items)
            else:
                self._deliver(items)
        finally:
            with self.inflight_lock:
                self.inflight = []

    def _queue_heartbeats(self) -> None:
        beats = self.pending.due_heartbeats()
        if not beats:
            return
        now = time.monotonic()
        due: list[Entry] = []
        for entry, every in beats:
            if entry.view.get("status") in TERMINAL or entry.failed:
                self.pending.set_heartbeat(entry, None)
            elif now - entry.last_sent >= every:
                due.append(entry)
        if due:
            self.pending.touch(due)

    # -- waiting --------------------------------------------------------------------------------------
    def _idle(self) -> bool:
        with self.inflight_lock:
            own_inflight = any(not backlog for _, _, backlog in self.inflight)
            return not (self.pending.changes or self.pending.overflow or own_inflight)

    def _wait_round(self, deadline: float) -> None:
        """Let one more round happen (on the thread, or here when there is none), sleeping meanwhile."""
        remaining = deadline - time.monotonic()
        if self._alive():
            with self.done:
                self.event.set()
                self.done.wait(remaining)
            return
        earliest = self.policy.earliest(urgent=True)
        if earliest > time.monotonic():
            time.sleep(max(0.0, min(earliest, deadline) - time.monotonic()))
            return
        self.transport.set_timeout(min(remaining, self.settings.request_timeout))
        try:
            self.cycle()
        finally:
            self.transport.set_timeout(None)

    def flush(self, timeout: float) -> bool:
        """Deliver everything pending, waiting at most ``timeout`` seconds. True if nothing is left."""
        if self._idle():
            return not self.disabled  # nothing to send: no thread started, no spool claimed
        if threading.current_thread() is self.thread:
            # called from inside a round (a logging handler on the library's own records): waiting for the
            # round to end would wait for ever
            return False
        deadline = time.monotonic() + max(0.0, timeout)
        if self.thread is None and not self.closed:
            self._ensure_thread()
        self.waiters += 1
        try:
            while not self._idle():
                if self.disabled or time.monotonic() >= deadline:
                    break
                if self.policy.paused_until > deadline:
                    break  # the service asked us to wait past the deadline
                self._wait_round(deadline)
        finally:
            self.waiters -= 1
        done = self._idle() and not self.disabled
        if self.settings.strict and self.delivery_error is not None:
            exc, self.delivery_error = self.delivery_error, None
            raise exc
        return done

    def wait_for(self, entry: Entry, timeout: float | None) -> str | None:
        """Wait until ``entry``'s id is known (or it failed), at most ``timeout`` seconds. An entry whose
        create is another process's, with nothing of this one's on the way, has nothing to wait for."""
        if not entry.creates:
            with self.pending.lock:
                waiting = entry in self.pending.changes or entry.overflow
            if not waiting:
                return entry.id
        if threading.current_thread() is self.thread:
            return entry.id  # from inside a round: see flush()
        deadline = time.monotonic() + (self.settings.request_timeout if timeout is None else max(0.0, timeout))
        if self.thread is None and not self.closed:
            self._ensure_thread()
        self.waiters += 1
        try:
            while entry.id is None and not entry.failed and not self.disabled and not self.closed:
                if time.monotonic() >= deadline:
                    break
                self._wait_round(deadline)
        finally:
            self.waiters -= 1
        return entry.id

    def after_fork_child(self) -> None:
        self._reset()
        # the child's own counts: what the parent sent is the parent's
        self.requests = self.retries = self.failed = self.spooled = 0
        self.pending.merged = self.pending.overflowed = 0
        self.log = RateLimitedLog(self.log.interval)
        self.planner.log = self.log
        self.transport.after_fork()

    def stats(self) -> dict[str, int]:
        return {
            "merged": self.pending.merged,
            "requests": self.requests,
            "retries": self.retries,
            "overflowed": self.pending.overflowed,
            "failed": self.failed + self.planner.invalid,
            "spooled": self.spooled,
            "pending": self.pending.count(),
        }


def after_fork_child() -> None:
    for sender in list(_live):
        sender.after_fork_child()
