"""The sending loop: one daemon thread per client that takes what is pending and delivers it in rounds.

A round takes the whole pending map (one swap), plans it into operations, sends them through the
transport (batched where the service allows) and settles each answer: ids are learned, failures go back
under newer changes, refusals are logged and dropped, and the retry policy decides when the next round may
go. Waiting (for the interval, a backoff, a flush) always sleeps on an event or a condition.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from . import _internal, _spool
from ._backlog import Backlog
from ._errors import NotFound, TaskReportError, TransportError
from ._pending import BATCH_WAKE, Entry, Pending, merge_fields
from ._plan import Planned, Planner
from ._ratelog import RateLimitedLog
from ._retry import RetryPolicy, Verdict, judge
from ._status import TERMINAL
from ._transport import BatchUnsupported, Row, Transport

logger = logging.getLogger("taskreport")

#: spooled changes of earlier processes sent per round, after this process's own
BACKLOG_ROUND = 1000
#: operations per send: settled one chunk at a time, so an exit finds only one chunk still on its way
CHUNK = 1000
Item = tuple[Entry, dict[str, Any], bool]


@dataclasses.dataclass(frozen=True)
class Settings:
    """What delivery needs to know, taken from the configuration by the client."""

    interval: float = 1.0
    strict: bool = False
    request_timeout: float = 10.0
    #: where undeliverable changes are spooled at exit; None: not spooled (and the loss is logged)
    spool_dir: Path | None = None
    #: names where tasks go, so that a spool is only delivered to the place it was meant for
    target: str = ""
    #: False: no thread; changes are delivered only when someone flushes (tests' in-memory recorders)
    threaded: bool = True


_live: weakref.WeakSet[Sender] = weakref.WeakSet()


class Sender:
    def __init__(self, pending: Pending, transport: Transport, settings: Settings) -> None:
        self.pending = pending
        self.transport = transport
        self.settings = settings
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
            if wait > 0:
                self.event.wait(wait)
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

    def _deliver(self, items: list[Item]) -> None:
        todo = items
        while todo:
            refs = self.transport.refs is not False
            planned, later = self.planner.plan(todo, refs)
            if not planned:
                self._put_back(later)
                return
            todo = later
            size = getattr(self.transport, "max_ops", CHUNK) or CHUNK
            for start in range(0, len(planned), size):
                chunk = planned[start : start + size]
                self.policy.attempted()
                try:
                    results = self.transport.send([p.op for p in chunk])
                except BatchUnsupported:
                    # the transport now knows: plan what is not sent yet again, by id (a create and the update
                    # that followed it become one item again, so the task is not created twice)
                    todo = _regroup([(p.entry, p.fields, p.backlog) for p in planned[start:]]) + later
                    break
                except TaskReportError as exc:
                    results = [exc] * len(chunk)
                except Exception as exc:  # a transport bug: keep the data, report it, retry later
                    _internal.report("sending failed", exc)
                    results = [TransportError(f"{type(exc).__name__}: {exc}")] * len(chunk)
                went_through = self._settle(chunk, results)
                self._settled(chunk)
                if not went_through:
                    # the service failed or asked us to wait: what is not sent yet waits for the next round
                    self._put_back([(p.entry, p.fields, p.backlog) for p in planned[start + size :]] + later)
                    return

    def _settled(self, chunk: list[Planned]) -> None:
        """Answered: no longer in flight (an exit spools only what is still on its way)."""
        done = {p.entry for p in chunk}
        with self.inflight_lock:
            self.inflight = [item for item in self.inflight if item[0] not in done]

    def _settle(self, planned: list[Planned], results: list[Row | TaskReportError]) -> bool:
        """Apply each answer; True if the round went through (the next round may follow at once)."""
        now = time.monotonic()
        again: list[Item] = []
        any_ok = retry = paused = False
        for p, result in zip(planned, results, strict=True):
            entry = p.entry
            if isinstance(result, TaskReportError):
                if result.status_code:
                    self.requests += 1
                verdict = judge(result)
                if verdict is Verdict.RETRY:
                    retry = True
                    self.retries += 1
                    if self.policy.asks_pause(result):
                        self.policy.pause(result)
                        paused = True
                    # a create goes again from the entry's frozen fields; an update from its own
                    again.append((entry, p.fields if p.op.kind == "update" else {}, p.backlog))
                    self.log.log(logging.WARNING, f"retry:{type(result).__name__}",
                                 "taskreport: delivery failed (%s); will retry", result)
                elif verdict is Verdict.STOP:
                    self._stop_reporting(result)
                else:
                    self._refused(p, result, again)
                continue
            any_ok = True
            self.requests += 1
            task_id = result.get("id") if isinstance(result, dict) else None
            if task_id is not None:
                entry.id = str(task_id)
            if p.op.kind == "create":
                entry.acked = True
                entry.birth = None
            entry.last_sent = now
        self._put_back(again)
        if any_ok:
            self.policy.round_succeeded()
        elif retry and not paused:
            self.policy.round_failed()
        return not retry

    def _refused(self, p: Planned, exc: TaskReportError, again: list[Item]) -> None:
        """The service refused one operation and always will. A bad parent or a bad field never loses the
        rest of the task: it is sent again without them."""
        entry, op = p.entry, p.op
        attr = (exc.attr or "").removeprefix("fields.").split(".")[0]
        if self.settings.strict and self.delivery_error is None:
            self.delivery_error = exc
        self.failed += 1
        if op.kind == "create" and attr in ("parent", "parent_ref") and (entry.parent or entry.parent_id):
            self.log.log(logging.WARNING, "badparent",
                         "taskreport: the service refused the parent of task %s (%s); it is recorded without one",
                         entry.ref, exc)
            entry.parent, entry.parent_id = None, None
            again.append((entry, {}, p.backlog))
            return
        if attr and attr != "name" and attr in op.fields:
            self.log.log(logging.ERROR, f"drop:{attr}",
                         "taskreport: the service refused field %r of task %s; the rest is sent without it: %s",
                         attr, entry.ref, exc)
            if op.kind == "create" and entry.birth is not None:
                entry.birth = {k: v for k, v in entry.birth.items() if k != attr}
                again.append((entry, {}, p.backlog))
            else:
                rest = {k: v for k, v in p.fields.items() if k != attr}
                if rest:
                    again.append((entry, rest, p.backlog))
            return
        if op.kind == "create" or isinstance(exc, NotFound):
            entry.failed = True
        self.log.log(logging.ERROR, f"drop:{exc.status_code}",
                     "taskreport: the service rejected a change of task %s and it was dropped: %s", entry.ref, exc)

    def _stop_reporting(self, exc: TaskReportError) -> None:
        if not self.disabled:
            self.log.log(logging.ERROR, "unauthorized",
                         "taskreport: the service refused the API token (%s); reporting is off for this process",
                         exc.detail)
        self.disabled = True
        self.failed += 1
        if self.settings.strict and self.delivery_error is None:
            self.delivery_error = exc

    def _put_back(self, items: list[Item]) -> None:
        own = [(e, f) for e, f, backlog in items if not backlog]
        if own:
            self.pending.latest().put_back(own)
        spooled = [(e, f) for e, f, backlog in items if backlog]
        if spooled and self.backlog is not None:
            self.backlog.put_back(spooled)

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

    # -- the end --------------------------------------------------------------------------------------
    def _stop(self, wait: float) -> list[Item]:
        """Stop the thread, letting a round in flight finish for at most ``wait`` seconds. Returns what a
        round that is still hanging carries (it may yet arrive: a replay is harmless)."""
        self._stop_requested.set()
        self.event.set()
        finished = self.cycle_lock.acquire(timeout=max(0.0, wait))
        try:
            with self.inflight_lock:
                hanging = [] if finished else list(self.inflight)
        finally:
            if finished:
                self.cycle_lock.release()
        thread = self.thread
        if thread is not None and thread is not threading.current_thread() and self.pid == os.getpid():
            thread.join(timeout=0.5 if finished else 0.0)
        return hanging

    def close(self, timeout: float) -> bool:
        """Flush with a deadline, spool whatever is left, stop. True if everything was delivered."""
        if self.closed:
            return True
        deadline = time.monotonic() + max(0.0, timeout)
        failure: BaseException | None = None
        try:
            delivered = self.flush(timeout) if not self.disabled else False
        except TaskReportError as exc:  # strict mode re-raises a delivery error: after closing, not instead
            failure, delivered = exc, False
        hanging = self._stop(min(1.0, max(0.0, deadline - time.monotonic())))
        with self.pending.lock:
            self.closed = self.pending.closed = True
            self.pending.on_orphan_end = self._spool_late_end
        left = [(e, f) for e, f, backlog in hanging if not backlog] + list(self.pending.take().items())
        backlog, files = self.backlog.drain() if self.backlog is not None else ([], [])
        backlog += [(e, f) for e, f, b in hanging if b]
        if left and not self.disabled:
            delivered = False
        self._spool(left if not self.disabled else [], backlog, files)
        try:
            self.transport.close()
        except Exception as exc:  # closing must not fail an exit
            _internal.report("closing the transport failed", exc)
        if failure is not None:
            raise failure
        return delivered

    def hand_over(self, successor: Sender, wait: float) -> None:
        """Stop, moving what is pending and every handle's later changes to ``successor`` (``init()``
        again). Spooled changes claimed here go back to the spool for the successor to claim."""
        hanging = self._stop(wait)
        self.closed = True
        self.pending.hand_over(successor.pending)
        successor.pending.put_back([(e, f) for e, f, backlog in hanging if not backlog])
        backlog, files = self.backlog.drain() if self.backlog is not None else ([], [])
        backlog += [(e, f) for e, f, b in hanging if b]
        if successor.backlog is not None and successor.settings.target == self.settings.target:
            successor.backlog.adopt(backlog, files)  # the claim stays this process's: no copy on disk
        else:
            self._spool([], backlog, files)
        try:
            self.transport.close()
        except Exception as exc:
            _internal.report("closing the transport failed", exc)

    def _spool(self, own: list[tuple[Entry, dict[str, Any]]], backlog: list[tuple[Entry, dict[str, Any]]],
               claimed: list[Path]) -> None:
        items = own + backlog
        directory = self.settings.spool_dir
        if items and directory is None:
            logger.warning("taskreport: %d task change(s) not delivered before exit were dropped (spool is off)",
                           len(own))
            return
        if items and directory is not None:
            try:
                path = _spool.write(directory, self.settings.target, [_spool.record_of(e, f) for e, f in items])
            except OSError as exc:
                logger.error("taskreport: %d task change(s) could not be delivered nor spooled: %s", len(own), exc)
                return  # the claimed files stay: their next owner delivers them
            self.spooled += len(own)
            if own:
                logger.warning("taskreport: %d task(s) not delivered before exit; spooled to %s", len(own), path)
        for path in claimed:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _spool_late_end(self, entry: Entry, fields: dict[str, Any]) -> None:
        """A task of this closed client ended: with nobody left to send it, the end goes to the spool."""
        with self.pending.lock:
            changes = self.pending.changes.pop(entry, None)
        if changes is None:
            return
        self._spool([(entry, {**fields, **changes})], [], [])

    def after_fork_child(self) -> None:
        self._reset()
        # the child's own counts: what the parent sent is the parent's
        self.requests = self.retries = self.failed = self.spooled = 0
        self.pending.merged = self.pending.overflowed = 0
        self.log = RateLimitedLog(self.log.interval)
        self.planner.log = self.log
        self.transport.after_fork()

    def deliver_backlog(self, timeout: float) -> tuple[int, bool]:
        """Claim the spool and deliver it from this thread (``taskreport flush-spool``): (records claimed,
        everything delivered)."""
        if self.backlog is None:
            return 0, True
        count = self.backlog.claim()
        deadline = time.monotonic() + max(0.0, timeout)
        while len(self.backlog) and not self.disabled and time.monotonic() < deadline:
            if self.policy.paused_until > deadline:
                break
            self.waiters += 1
            try:
                self._wait_round(deadline)
            finally:
                self.waiters -= 1
        return count, not len(self.backlog) and not self.disabled

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


def _regroup(items: list[Item]) -> list[Item]:
    """One item per entry, its fields merged in order."""
    merged: dict[Entry, Item] = {}
    for entry, fields, backlog in items:
        if entry in merged:
            _, older, _ = merged[entry]
            fields = merge_fields(older, fields)
        merged[entry] = (entry, fields, backlog)
    return list(merged.values())


def after_fork_child() -> None:
    for sender in list(_live):
        sender.after_fork_child()
