"""What is pending: one record of changes per task, owned by delivery, filled by Task handles.

Handles merge their changes into :attr:`Pending.changes` under :attr:`Pending.lock` and return; the sender
takes the whole map with one swap (O(1) under the lock, however many tasks wait) and walks it outside the
lock. A failed send puts its fields back under whatever changed meanwhile (newer values win).

An :class:`Entry` is one task of this process as delivery sees it: its reference, the service's id once
known, and what its create needs. The handle holds the entry and reads ``entry.id``; only delivery writes it.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

#: wake the sender early once this many tasks have changes waiting
BATCH_WAKE = 256


class Entry:
    """One task, as delivery knows it."""

    __slots__ = (
        "__weakref__",
        "acked",
        "birth",
        "failed",
        "id",
        "last_sent",
        "name_hint",
        "overflow",
        "parent",
        "parent_id",
        "pid",
        "ref",
        "view",
    )

    def __init__(
        self,
        ref: str,
        view: dict[str, Any],
        *,
        born_here: bool,
        task_id: str | None = None,
        parent: Entry | None = None,
        parent_id: str | None = None,
        name_hint: str | None = None,
    ) -> None:
        self.ref = ref
        #: the service's id, once a response has named it
        self.id = task_id
        #: the task's whole state in this process: the handle's, shared so that a change that found no room
        #: in the pending map is sent whole later instead of being lost
        self.view = view
        #: the process that sends this task's create; None when the create is another process's to send
        self.pid: int | None = os.getpid() if born_here else None
        #: the create was acknowledged by the service
        self.acked = False
        #: the fields of a create sent without a clear answer: sent again exactly so, so that a replay
        #: changes nothing; what changed since goes as an update
        self.birth: dict[str, Any] | None = None
        self.parent = parent
        self.parent_id = parent_id
        #: the service refused this task's create: later changes have nowhere to go
        self.failed = False
        #: changes were merged into the view only (the pending map was full): send the whole view
        self.overflow = False
        #: a name for the task if this process must create it without having made it (see Task.attach)
        self.name_hint = name_hint
        self.last_sent = 0.0

    @property
    def creates(self) -> bool:
        """Whether this process still has to send the task's create."""
        return self.pid == os.getpid() and not self.acked

    def __repr__(self) -> str:
        return f"<Entry {self.ref} id={self.id}>"


def merge_fields(older: dict[str, Any], newer: dict[str, Any]) -> dict[str, Any]:
    """``older`` under ``newer``: newer values win, queued actions of both are kept in order."""
    merged = {**older, **newer}
    if "actions" in older and "actions" in newer:
        merged["actions"] = [*older["actions"], *newer["actions"]]
    return merged


_live: weakref.WeakSet[Pending] = weakref.WeakSet()


class Pending:
    """The changes waiting to be sent, one dict per entry, and the lock every handle takes."""

    def __init__(self, max_pending: int = 100_000) -> None:
        self.max_pending = max_pending
        #: the sender: told when a task first has changes waiting, or ends
        self.on_change: Callable[[bool], None] | None = None
        #: the sender: waits until an entry's id is known (Task.wait_id)
        self.wait_for: Callable[[Entry, float | None], str | None] | None = None
        #: the Pending that replaced this one (``init()`` was called again): handles move there
        self.successor: Pending | None = None
        #: closed with no successor: a late end is handed to this (the closing client spools it)
        self.on_orphan_end: Callable[[Entry, dict[str, Any]], None] | None = None
        self.closed = False
        self.merged = 0
        #: changes that found the map full (kept in the task's view and sent whole at the next take)
        self.overflowed = 0
        self._reset()
        _live.add(self)

    def _reset(self) -> None:
        self.lock = threading.Lock()
        self.changes: dict[Entry, dict[str, Any]] = {}
        #: tasks whose changes found the map full: the next take sends their whole view
        self.overflow: set[Entry] = set()
        #: entries that keep their task fresh while it runs: seconds between touches
        self.heartbeats: weakref.WeakKeyDictionary[Entry, float] = weakref.WeakKeyDictionary()

    # -- called by handles, with the lock held ---------------------------------------------------------
    def admit(self, entry: Entry) -> dict[str, Any] | None:
        """The change dict of a task that has none in the map yet, or None when the map is full: the change
        then lives in the task's view only, and the next take sends the view whole. Call with the lock
        held, after checking ``entry in changes``."""
        if entry.overflow or len(self.changes) >= self.max_pending:
            entry.overflow = True
            self.overflow.add(entry)
            self.overflowed += 1
            return None
        fields: dict[str, Any] = {}
        self.changes[entry] = fields
        return fields

    def force(self, entry: Entry) -> dict[str, Any]:
        """Like :meth:`admit`, for an end or queued actions: admitted whatever the map's size (a task that
        overflowed before comes back with its whole view)."""
        fields: dict[str, Any] = {}
        if entry.overflow:
            entry.overflow = False
            self.overflow.discard(entry)
            fields = {k: v for k, v in entry.view.items() if k != "actions"}
        self.changes[entry] = fields
        return fields

    # -- called by the sender -------------------------------------------------------------------------
    def take(self) -> dict[Entry, dict[str, Any]]:
        """Everything pending, leaving the map empty: one swap under the lock."""
        with self.lock:
            taken, self.changes = self.changes, {}
            if self.overflow:
                # rare (a map of max_pending tasks filled up): each such task's view, sent whole
                for entry in self.overflow:
                    entry.overflow = False
                    taken[entry] = {k: v for k, v in entry.view.items() if k != "actions"}
                self.overflow = set()
        return taken

    def put_back(self, items: list[tuple[Entry, dict[str, Any]]]) -> None:
        """Fields whose send failed go back under the changes made since (newer values win)."""
        if not items:
            return
        with self.lock:
            changes = self.changes
            for entry, fields in items:
                newer = changes.get(entry)
                changes[entry] = fields if newer is None else merge_fields(fields, newer)

    def count(self) -> int:
        with self.lock:
            return len(self.changes) + len(self.overflow)

    def due_heartbeats(self) -> list[tuple[Entry, float]]:
        with self.lock:
            return list(self.heartbeats.items())

    def set_heartbeat(self, entry: Entry, every: float | None) -> None:
        with self.lock:
            if every is None or every <= 0:
                self.heartbeats.pop(entry, None)
            else:
                self.heartbeats[entry] = every
        if self.on_change is not None:
            self.on_change(False)

    def touch(self, entries: list[Entry]) -> None:
        """Queue an empty update for each entry (a heartbeat): it only moves the task's ``updated``."""
        with self.lock:
            for entry in entries:
                if entry not in self.changes:
                    self.changes[entry] = {}

    # -- lifecycle ------------------------------------------------------------------------------------
    def hand_over(self, successor: Pending) -> None:
        """Close, moving what is pending (and every later change to a handle) to ``successor``."""
        with self.lock:
            self.closed = True
            self.successor = successor
            taken, self.changes = self.changes, {}
            for entry in self.overflow:
                entry.overflow = False
                taken[entry] = {k: v for k, v in entry.view.items() if k != "actions"}
            self.overflow = set()
            heartbeats = dict(self.heartbeats)
            self.heartbeats.clear()
        with successor.lock:
            for entry, fields in taken.items():
                newer = successor.changes.get(entry)
                successor.changes[entry] = fields if newer is None else merge_fields(fields, newer)
            for entry, every in heartbeats.items():
                successor.heartbeats[entry] = every
        if taken and successor.on_change is not None:
            successor.on_change(True)

    def latest(self) -> Pending:
        """The Pending that handles of this one report to now (itself unless replaced)."""
        current = self
        while current.successor is not None:
            current = current.successor
        return current

    def after_fork_child(self) -> None:
        # what was pending is the parent's to send; its heartbeats say its tasks are alive, not ours
        self._reset()


def before_fork() -> None:
    for pending in list(_live):
        pending.lock.acquire()


def after_fork_parent() -> None:
    for pending in list(_live):
        pending.lock.release()


def after_fork_child() -> None:
    for pending in list(_live):
        pending.after_fork_child()
