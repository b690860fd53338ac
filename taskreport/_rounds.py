"""What a round does: plan what was taken, send it a chunk at a time, and settle every answer.

Settling learns ids, puts retryable failures back under newer changes, drops what the service refuses for
good (a refused parent or field never loses the rest of its task), turns reporting off when the token is
refused, and tells the retry policy how the round went. :class:`Rounds` is the sender's half that does this;
the thread, the waiting and the ending are in ``_sender``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from . import _internal
from ._backlog import Backlog
from ._errors import NotFound, TaskReportError, TransportError
from ._pending import Entry, Pending, merge_fields
from ._plan import Planned, Planner
from ._ratelog import RateLimitedLog
from ._retry import RetryPolicy, Verdict, judge
from ._transport import BatchUnsupported, Row, Transport

#: operations per send unless the transport says otherwise (``max_ops``): settled a chunk at a time, so an
#: exit finds only one chunk still on its way
CHUNK = 1000
#: (entry, its changes, whether they came from the spool of an earlier process)
Item = tuple[Entry, dict[str, Any], bool]


class Rounds:
    pending: Pending
    transport: Transport
    policy: RetryPolicy
    planner: Planner
    log: RateLimitedLog
    backlog: Backlog | None
    inflight: list[Item]
    inflight_lock: threading.Lock
    strict: bool
    disabled: bool
    delivery_error: TaskReportError | None
    requests: int
    retries: int
    failed: int

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
        if self.strict and self.delivery_error is None:
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
        if self.strict and self.delivery_error is None:
            self.delivery_error = exc

    def _put_back(self, items: list[Item]) -> None:
        own = [(e, f) for e, f, backlog in items if not backlog]
        if own:
            self.pending.latest().put_back(own)
        spooled = [(e, f) for e, f, backlog in items if backlog]
        if spooled and self.backlog is not None:
            self.backlog.put_back(spooled)


def _regroup(items: list[Item]) -> list[Item]:
    """One item per entry, its fields merged in order."""
    merged: dict[Entry, Item] = {}
    for entry, fields, backlog in items:
        if entry in merged:
            _, older, _ = merged[entry]
            fields = merge_fields(older, fields)
        merged[entry] = (entry, fields, backlog)
    return list(merged.values())
