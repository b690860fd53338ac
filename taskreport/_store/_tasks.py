"""Writing tasks: create, update (by id or by reference), cancel and sweep, with the rules the service applies
on every write (times, parents, tags, trigger firings).

The three writes, as the embedded transport and the server call them::

    row = tx.create_task(scope, fields, idempotency_key=ref, parent_ref=None)   # the task's birth
    row = tx.update_task_by_ref(scope, ref, fields, parent_ref=None)           # from a process holding the ref
    row = tx.update_task(scope, task_id, fields)                               # by the service's id

``fields`` are validated (:func:`taskreport._validation.validate_task`). Each returns a :class:`TaskRow`, the
task as the API renders it; ``row.replayed`` says a create found its task already born and changed nothing.
The reference rules (placeholders, fill-in, flattening parents) are described in ``_refs``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Collection, Mapping
from typing import Any

from .._errors import ValidationError
from .._models import value_percent
from .._status import RUNNING, TERMINAL
from ._actions import insert_action
from ._db import Cursor, Row
from ._refs import check_parent, fill_in, has_children, insert_placeholder, reparent_children, resolve_parent_ref
from ._rows import PLAIN, Scope, TaskRow, dump_json, find_task, load_json, lock_clause, new_task_id, task_out, task_row
from ._triggers import queue_firings

_INSERT = (
    "INSERT INTO tasks (public_id, project_id, name, queue, external_id, status, value, value_max, data, tags,"
    " parent, created, updated, start_time, end_time, time_to_start, max_runtime, stale_timeout, idempotency_key)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    # a concurrent create with the same reference (PostgreSQL) waits for it, then finds its task
    " ON CONFLICT (project_id, idempotency_key) DO NOTHING RETURNING id"
)


def _trigger_state(row: Row) -> Row:
    return {
        "value": row["value"],
        "value_percent": value_percent(row["value"], row["value_max"]),
        "status": row["status"],
    }


def _replayed(row: Row, scope: Scope) -> TaskRow:
    """A create whose task was born already (a retry, a spool delivered twice): the task as it is."""
    out = task_out(row, scope)
    out.replayed = True
    return out


def _parent_args(fields: Mapping[str, Any], parent_ref: str | None, ref: str | None) -> None:
    if parent_ref is None:
        return
    if fields.get("parent") is not None:
        raise ValidationError("Give parent or parent_ref, not both.", attr="parent_ref")
    if parent_ref == ref:
        raise ValidationError("A task can not be its own parent.", attr="parent_ref")


#: the advisory lock that keeps sweeps of one database one at a time
_SWEEP_LOCK = 7346216


class TaskOps:
    cur: Cursor

    def lock_tasks(self, scope: Scope, *, ids: Collection[str] = (), refs: Collection[str] = ()) -> None:
        """Before a write that touches several tasks, take a lock for each id and reference in one fixed order,
        so that two such writes wait for each other instead of deadlocking (which a task yet to be made by
        reference, a row no ``FOR UPDATE`` can lock, would allow). PostgreSQL's transaction-scoped advisory
        locks, one 64-bit key per name; SQLite's write transactions hold the whole database already."""
        if self.cur.dialect.name != "postgresql" or not self.cur.write or not (ids or refs):
            return
        names = {f"i{scope.project_id}:{i}" for i in ids} | {f"r{scope.project_id}:{r}" for r in refs}
        keys = sorted({int.from_bytes(hashlib.blake2b(n.encode(), digest_size=8).digest(), "big", signed=True)
                       for n in names})  # fmt: skip
        # the sort feeds the aggregate row by row, so the locks are taken in key order
        self.cur.scalar("SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT unnest(?::bigint[]) AS k ORDER BY k) s",
                        (keys,))  # fmt: skip

    def lock_task_rows(self, tasks: Collection[tuple[Scope, str]]) -> None:
        """Lock the rows of several tasks (``(scope, task id)``; unknown ones are skipped) in the order of their
        key, as the bulk progress statement does, so that writes which each lock one of them, run in one
        transaction, wait for other such transactions instead of deadlocking with them. PostgreSQL only:
        SQLite's write transactions hold the whole database already."""
        if self.cur.dialect.name != "postgresql" or not self.cur.write:
            return
        # an id with a NUL names no task (PostgreSQL text can't hold one): its own write is refused, alone
        pairs = sorted({(scope.project_id, str(task_id)) for scope, task_id in tasks if "\x00" not in str(task_id)})
        if len(pairs) < 2:
            return
        self.cur.execute(
            "SELECT id FROM tasks WHERE (project_id, public_id) IN"
            " (SELECT * FROM unnest(?::bigint[], ?::text[])) ORDER BY id FOR UPDATE",
            ([project for project, _ in pairs], [task_id for _, task_id in pairs]),
        )

    def get_task(self, scope: Scope, task_id: str) -> TaskRow:
        # in a write transaction the row stays locked until commit, so an update based on it can't be lost
        return task_out(task_row(self.cur, scope, str(task_id), lock="update"), scope)

    def _write_tags(self, task_pk: int, tags: Mapping[str, str], *, replace: bool) -> None:
        if replace:
            self.cur.execute("DELETE FROM task_tags WHERE task_id = ?", (task_pk,))
        for key, value in tags.items():
            self.cur.execute(
                "INSERT INTO task_tags (task_id, tag_key, tag_value) VALUES (?, ?, ?)", (task_pk, key, value)
            )

    # -- create --------------------------------------------------------------------------------------
    # Locks are taken parent first, then the task (then its children), in every write: two processes
    # writing one task and its parent by reference must not each hold what the other waits for.
    def _parent(self, scope: Scope, fields: Mapping[str, Any], parent_ref: str | None, now: float) -> str | None:
        """The parent a write names, resolved (``parent_ref``) or checked (an explicit ``parent`` id)."""
        if parent_ref is not None:
            return resolve_parent_ref(self.cur, scope, parent_ref, now)
        parent = fields.get("parent")
        if parent is not None:
            check_parent(self.cur, scope, parent, None)
        return None if parent is None else str(parent)

    def create_task(
        self,
        scope: Scope,
        fields: Mapping[str, Any],
        *,
        now: float | None = None,
        idempotency_key: str | None = None,
        parent_ref: str | None = None,
    ) -> TaskRow:
        """Create a task from validated fields. ``idempotency_key`` is its reference: a second create with it
        changes nothing (``replayed``), and a placeholder made by an update by reference is filled in.
        ``parent_ref``: the parent by its reference (instead of ``fields["parent"]``), flattened to one level."""
        now = time.time() if now is None else now
        _parent_args(fields, parent_ref, idempotency_key)
        ref = idempotency_key
        if ref is not None:
            # a replay changes nothing, so it needs no lock (and makes no placeholder parent)
            seen = find_task(self.cur, scope, ref=ref)
            if seen is not None and seen["born"]:
                return _replayed(seen, scope)
        parent = self._parent(scope, fields, parent_ref, now)
        if ref is not None:
            existing = find_task(self.cur, scope, ref=ref, lock="update")
            if existing is not None:
                return self._create_existing(scope, existing, fields, parent, parent_ref is not None, now)
        row: Row = dict.fromkeys(PLAIN)
        row.update({k: fields[k] for k in PLAIN if k in fields})
        row["status"] = row["status"] or "pending"
        if row["value_max"] is None:
            row["value_max"] = 100
        apply_status_rules(row, None, fields, now, created=now)
        tags = dict(fields.get("tags") or {})
        row.update(
            public_id=new_task_id(),
            data=dump_json(fields.get("data")),
            tags=dump_json(tags),
            parent=parent,
            created=now,
            updated=now,
            idempotency_key=ref,
        )
        columns = ("public_id", "name", "queue", "external_id", "status", "value", "value_max", "data", "tags",
                   "parent", "created", "updated", "start_time", "end_time", "time_to_start", "max_runtime",
                   "stale_timeout", "idempotency_key")  # fmt: skip
        values = [row[c] for c in columns]
        inserted = self.cur.one(_INSERT, [values[0], scope.project_id, *values[1:]])
        if inserted is None:
            # another transaction made this reference meanwhile (and has committed)
            assert ref is not None
            existing = find_task(self.cur, scope, ref=ref, lock="update")
            assert existing is not None
            return self._create_existing(scope, existing, fields, parent, parent_ref is not None, now)
        row["id"] = pk = int(inserted["id"])
        if tags:
            self._write_tags(pk, tags, replace=False)
        for action in fields.get("actions") or ():
            insert_action(self.cur, pk, action, now)
        out = task_out(row, scope)
        queue_firings(self.cur, pk, None, out, now=now)
        return out

    def _create_existing(
        self, scope: Scope, old: Row, fields: Mapping[str, Any], parent: str | None, by_ref: bool, now: float
    ) -> TaskRow:
        if old["born"]:
            return _replayed(old, scope)
        changed = fill_in(old, fields)
        new = {**old, **changed}
        apply_status_rules(new, old, fields, now, created=old["created"])
        for key in ("start_time", "end_time", "time_to_start"):
            if new[key] != old[key]:
                changed[key] = new[key]
        if parent is not None and old["parent"] is None:
            self._adopt(scope, old, parent, now, attr="parent_ref" if by_ref else "parent")
            changed["parent"] = new["parent"] = parent
        return self._save(scope, old, new, changed, fields, now, born=True)

    # -- update --------------------------------------------------------------------------------------
    def update_task(
        self,
        scope: Scope,
        task_id: str,
        fields: Mapping[str, Any],
        *,
        now: float | None = None,
        events: Collection[str] = (),
        parent_ref: str | None = None,
        merge: bool = False,
    ) -> TaskRow:
        """Apply validated fields to a task. ``data`` and ``tags`` replace what was there, as the API's PATCH
        does; with ``merge`` (the batch operation's ``"merge": true``), objects are merged key by key into what
        is there, so a process that knows only part of a task's data adds to it without erasing the rest.

        ``events`` are trigger points this write stands for besides its fields (the sweeper's
        ``max_runtime_exceeded``). ``parent_ref``: set the parent by its reference (flattened to one level;
        the task's children, if any, move there too); like ``parent``, it can not change once set.
        """
        now = time.time() if now is None else now
        _parent_args(fields, parent_ref, None)
        parent = self._parent(scope, fields, parent_ref, now)
        old = task_row(self.cur, scope, str(task_id), lock="update")
        return self._update(scope, old, fields, now, events, parent_ref, parent, merge)

    def update_task_by_ref(
        self,
        scope: Scope,
        ref: str,
        fields: Mapping[str, Any],
        *,
        now: float | None = None,
        parent_ref: str | None = None,
        merge: bool = False,
    ) -> TaskRow:
        """Apply validated fields to the task with reference ``ref``, as :meth:`update_task` does. With no such
        task yet (its create has not arrived), a placeholder is made for the create to fill in: named
        ``fields["name"]`` or the reference, pending."""
        now = time.time() if now is None else now
        _parent_args(fields, parent_ref, ref)
        parent = self._parent(scope, fields, parent_ref, now)
        row = find_task(self.cur, scope, ref=ref, lock="update")
        if row is None:
            insert_placeholder(self.cur, scope, ref, str(fields.get("name") or ref), now)
            row = find_task(self.cur, scope, ref=ref, lock="update")
            assert row is not None
        return self._update(scope, row, fields, now, (), parent_ref, parent, merge)

    def _update(
        self,
        scope: Scope,
        old: Row,
        fields: Mapping[str, Any],
        now: float,
        events: Collection[str],
        parent_ref: str | None,
        parent: str | None,
        merge: bool = False,
    ) -> TaskRow:
        if parent_ref is not None and parent_ref == old["idempotency_key"]:
            raise ValidationError("A task can not be its own parent.", attr="parent_ref")
        new = dict(old)
        changed: dict[str, Any] = {k: fields[k] for k in PLAIN if k in fields}
        new.update(changed)
        apply_status_rules(new, old, fields, now, created=old["created"])
        for key in ("start_time", "end_time", "time_to_start"):
            if new[key] != old[key]:
                changed[key] = new[key]
        for key in ("data", "tags"):
            if key in fields:
                changed[key] = fields[key] if key == "data" else (fields[key] or {})
                if merge and isinstance(changed[key], dict) and old[key]:
                    before = load_json(old[key])
                    if isinstance(before, dict):
                        changed[key] = {**before, **changed[key]}
        attr = "parent" if parent_ref is None else "parent_ref"
        if parent is None and "parent" in fields and old["parent"] is not None:
            raise ValidationError("A task's parent can not be removed.", attr="parent")
        if parent is not None and parent != old["parent"]:
            if old["parent"] is not None:
                raise ValidationError("A task's parent can not be changed once set.", attr=attr)
            if parent_ref is not None:
                self._adopt(scope, old, parent, now)  # flattened: its children move there too
            elif parent == old["public_id"]:
                raise ValidationError("A task can not be its own parent.", attr="parent")
            elif has_children(self.cur, scope, old["id"]):
                raise ValidationError("Tasks nest one level deep: this task has children.", attr="parent")
            changed["parent"] = new["parent"] = parent
        return self._save(scope, old, new, changed, fields, now, events=events)

    def _adopt(self, scope: Scope, task: Row, parent: str, now: float, *, attr: str = "parent_ref") -> None:
        """``task`` gets ``parent``; its children, if it has any, move there too (tasks nest one level deep)."""
        if parent == task["public_id"]:
            raise ValidationError("A task can not be its own parent.", attr=attr)
        if has_children(self.cur, scope, task["id"]):
            reparent_children(self.cur, scope, task["public_id"], parent, now)

    def _save(
        self,
        scope: Scope,
        old: Row,
        new: Row,
        changed: dict[str, Any],
        fields: Mapping[str, Any],
        now: float,
        *,
        born: bool = False,
        events: Collection[str] = (),
    ) -> TaskRow:
        """Write ``changed`` columns (``data`` and ``tags`` as values), the actions in ``fields``, and the
        firings the change causes."""
        columns = dict(changed)
        for key in ("data", "tags"):
            if key in columns:
                columns[key] = new[key] = dump_json(columns[key])
        if born:
            columns["born"] = new["born"] = 1
        columns["updated"] = new["updated"] = now
        assignments = ", ".join(f"{k} = ?" for k in columns)
        self.cur.execute(f"UPDATE tasks SET {assignments} WHERE id = ?", [*columns.values(), old["id"]])
        if "tags" in changed:
            self._write_tags(old["id"], changed["tags"], replace=True)
        for action in fields.get("actions") or ():
            insert_action(self.cur, old["id"], action, now, unless_present=True)
        out = task_out(new, scope)
        queue_firings(self.cur, old["id"], _trigger_state(old), out, events=events, now=now)
        return out

    def cancel_task(self, scope: Scope, task_id: str, *, now: float | None = None) -> TaskRow:
        return self.update_task(scope, task_id, {"status": "cancelled"}, now=now)

    # -- sweep ---------------------------------------------------------------------------------------
    def sweep(self, now: float | None = None) -> list[tuple[Scope, Row, str]]:
        """Mark running tasks that stopped updating as stale, and over-running ones as errors.

        Returns ``(scope, task, reason)`` for each task changed, reason ``stale`` or ``max_runtime_exceeded``.
        """
        now = time.time() if now is None else now
        if not self.cur.try_exclusive(_SWEEP_LOCK):
            # another server on this database is sweeping now: one sweep at a time marks each task once
            return []
        running = tuple(sorted(RUNNING))
        marks = ", ".join("?" * len(running))
        rows = self.cur.all(
            "SELECT t.*, o.id AS org_pk, o.slug AS org_slug, p.slug AS project_slug FROM tasks t"
            " JOIN projects p ON p.id = t.project_id JOIN organizations o ON o.id = p.organization_id"
            f" WHERE t.status IN ({marks}) AND ("
            " (t.max_runtime IS NOT NULL AND COALESCE(t.start_time, t.created) + t.max_runtime < ?)"
            " OR (t.stale_timeout IS NOT NULL AND t.updated + t.stale_timeout < ?))"
            # a task a concurrent writer holds is being updated now: not stale, and never marked over it
            + lock_clause(self.cur, "update of t skip locked"),
            (*running, now, now),
        )
        out: list[tuple[Scope, Row, str]] = []
        for row in rows:
            scope = Scope(row["org_pk"], row["org_slug"], row["project_id"], row["project_slug"])
            started = row["start_time"] if row["start_time"] is not None else row["created"]
            if row["max_runtime"] is not None and started + row["max_runtime"] < now:
                data = load_json(row["data"]) or {}
                if not isinstance(data, dict):
                    data = {"data": data}
                data["error"] = f"max_runtime exceeded: running longer than {row['max_runtime']} s"
                task = self.update_task(
                    scope,
                    row["public_id"],
                    {"status": "error", "data": data},
                    now=now,
                    events=("max_runtime_exceeded",),
                )
                out.append((scope, task, "max_runtime_exceeded"))
            else:
                task = self.update_task(scope, row["public_id"], {"status": "stale"}, now=now)
                out.append((scope, task, "stale"))
        return out


def apply_status_rules(row: Row, old: Row | None, fields: Mapping[str, Any], now: float, *, created: float) -> None:
    """start_time when a task first runs, end_time when it ends, time_to_start when it leaves pending."""
    status = row["status"]
    if old is not None and status == old["status"]:
        return
    if status in RUNNING and row["start_time"] is None and "start_time" not in fields:
        row["start_time"] = now
    if (
        status in TERMINAL
        and "end_time" not in fields
        and (old is None or old["end_time"] is None or old["status"] not in TERMINAL)
    ):
        row["end_time"] = now
    leaving_pending = status != "pending" and row["time_to_start"] is None and "time_to_start" not in fields
    if leaving_pending and (row["start_time"] is not None or status in TERMINAL):
        began = row["start_time"] if row["start_time"] is not None else now
        row["time_to_start"] = max(0.0, began - created)
