"""How a sender ends: close with a deadline (what is left goes to the spool), hand over to a successor
(``init()`` again), a late end after closing, and delivering the spool on demand (``flush-spool``).

:class:`Ending` is the sender's half that does this; the thread and the waiting are in ``_sender``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import _internal, _spool
from ._backlog import Backlog
from ._delivery import Settings
from ._errors import TaskReportError
from ._pending import Entry, Pending
from ._retry import RetryPolicy
from ._rounds import Item
from ._transport import Transport

logger = logging.getLogger("taskreport")


class Ending:
    pending: Pending
    transport: Transport
    settings: Settings
    policy: RetryPolicy
    backlog: Backlog | None
    inflight: list[Item]
    inflight_lock: threading.Lock
    cycle_lock: threading.Lock
    event: threading.Event
    thread: threading.Thread | None
    pid: int
    closed: bool
    disabled: bool
    waiters: int
    spooled: int
    _stop_requested: threading.Event
    flush: Callable[[float], bool]
    _wait_round: Callable[[float], None]

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

    def hand_over(self, successor: Ending, wait: float) -> None:
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
                records = [_spool.record_of(e, f) for e, f in items]
                kept = {id(r) for r in _spool.worth_keeping(records)}
                path = _spool.write(directory, self.settings.target, [r for r in records if id(r) in kept])
            except OSError as exc:
                logger.error("taskreport: %d task change(s) could not be delivered nor spooled: %s", len(own), exc)
                return  # the claimed files stay: their next owner delivers them
            own_kept = sum(1 for r in records[: len(own)] if id(r) in kept)
            self.spooled += own_kept
            if own_kept:
                logger.warning("taskreport: %d task(s) not delivered before exit; spooled to %s", own_kept, path)
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

