"""Tasks and actions in the store, with the rules the service applies on every write."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import secrets
import string
import time
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from .._errors import NotFound, ValidationError
from .._models import value_percent
from .._status import RUNNING, TERMINAL
from .._status import VALUES as STATUS_VALUES
from ._db import Cursor, Row
from ._triggers import queue_firings

_ID_ALPHABET = string.ascii_letters + string.digits
#: plain columns copied from validated fields as they are
_PLAIN = (
    "name",
    "queue",
    "external_id",
    "status",
    "value",
    "value_max",
    "start_time",
    "end_time",
    "time_to_start",
    "max_runtime",
    "stale_timeout",
)
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50


def new_task_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))


@dataclasses.dataclass(frozen=True)
class Scope:
    """One project of one organization: everything a task belongs to."""

    organization_id: int
    organization: str
    project_id: int
    project: str


@dataclasses.dataclass
class Page:
    results: list[Row]
    next_cursor: str | None = None
    previous_cursor: str | None = None


def _encode_cursor(direction: str, key: int) -> str:
    return base64.urlsafe_b64encode(f"{direction}:{key}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        direction, key = raw.split(":", 1)
        if direction not in ("n", "p"):
            raise ValueError(direction)
        return direction, int(key)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationError("Invalid cursor", attr="cursor", code="invalid_cursor") from None


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


class TaskOps:
    cur: Cursor

    # -- reading -----------------------------------------------------------------------------------
    def _task_out(self, row: Row, scope: Scope) -> Row:
        data = row["data"]
        tags = row["tags"]
        return {
            "id": row["public_id"],
            "organization": scope.organization,
            "project": scope.project,
            "name": row["name"],
            "queue": row["queue"],
            "external_id": row["external_id"],
            "status": row["status"],
            "value": row["value"],
            "value_max": row["value_max"],
            "value_percent": value_percent(row["value"], row["value_max"]),
            "data": None if data is None else json.loads(data),
            "tags": json.loads(tags) if tags else {},
            "parent": row["parent"],
            "created": row["created"],
            "updated": row["updated"],
            "start_time": row["start_time"],
            "end_time": row["end_time"],
            "time_to_start": row["time_to_start"],
            "max_runtime": row["max_runtime"],
            "stale_timeout": row["stale_timeout"],
        }

    def _task_row(self, scope: Scope, task_id: str, *, for_update: bool = False) -> Row:
        lock = " FOR UPDATE" if for_update and self.cur.dialect.name == "postgresql" else ""
        row = self.cur.one(
            "SELECT * FROM tasks WHERE project_id = ? AND public_id = ?" + lock, (scope.project_id, task_id)
        )
        if row is None:
            raise NotFound("Not found.")
        return row

    def get_task(self, scope: Scope, task_id: str) -> Row:
        # in a write transaction the row stays locked until commit, so an update based on it can't be lost
        return self._task_out(self._task_row(scope, str(task_id), for_update=self.cur.write), scope)

    def list_tasks(
        self,
        scope: Scope,
        *,
        status: str | Iterable[str] | None = None,
        name: str | None = None,
        tag: str | Iterable[str] | Mapping[str, str] | None = None,
        parent: str | None = None,
        external_id: str | None = None,
        cursor: str | None = None,
        page_size: int | None = None,
    ) -> Page:
        """Newest first, keyset-paginated: a page costs the same wherever it is in the list."""
        size = DEFAULT_PAGE_SIZE if page_size is None else page_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValidationError("must be a positive integer.", attr="page_size")
        size = min(size, MAX_PAGE_SIZE)
        where = ["project_id = ?"]
        params: list[Any] = [scope.project_id]
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            statuses = [s.strip() for item in statuses for s in str(getattr(item, "value", item)).split(",")]
            for wanted in statuses:
                if wanted not in STATUS_VALUES:
                    raise ValidationError(f"{wanted!r} is not a valid status.", attr="status", code="invalid_choice")
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        for column, equal in (("name", name), ("parent", parent), ("external_id", external_id)):
            if equal is not None:
                where.append(f"{column} = ?")
                params.append(equal)
        if tag is not None:
            # every tag must match: a mapping, one "key:value" or several
            if isinstance(tag, Mapping):
                tags = dict(tag)
            else:
                tags = dict(_split_tag(t) for t in ([tag] if isinstance(tag, str) else tag))
            for tag_key, tag_value in tags.items():
                where.append("id IN (SELECT task_id FROM task_tags WHERE tag_key = ? AND tag_value = ?)")
                params.extend([tag_key, tag_value])
        direction, key = _decode_cursor(cursor) if cursor else ("n", None)
        if key is not None:
            where.append("id < ?" if direction == "n" else "id > ?")
            params.append(key)
        order = "DESC" if direction == "n" else "ASC"
        rows = self.cur.all(
            f"SELECT * FROM tasks WHERE {' AND '.join(where)} ORDER BY id {order} LIMIT ?",
            [*params, size + 1],
        )
        more = len(rows) > size
        rows = rows[:size]
        if direction == "p":
            rows.reverse()
        page = Page([self._task_out(r, scope) for r in rows])
        if rows:
            first, last = rows[0]["id"], rows[-1]["id"]
            if (direction == "n" and more) or (direction == "p" and key is not None):
                page.next_cursor = _encode_cursor("n", last)
            if (direction == "p" and more) or (direction == "n" and key is not None):
                page.previous_cursor = _encode_cursor("p", first)
        elif key is not None:
            # an empty page past either end still lets the caller walk back
            page.previous_cursor = _encode_cursor("p", key) if direction == "n" else None
            page.next_cursor = _encode_cursor("n", key) if direction == "p" else None
        return page

    # -- writing -----------------------------------------------------------------------------------
    def _check_parent(self, scope: Scope, parent: str, child_id: int | None) -> None:
        row = self.cur.one(
            "SELECT id, parent FROM tasks WHERE project_id = ? AND public_id = ?", (scope.project_id, parent)
        )
        if row is None:
            raise ValidationError(
                f"Invalid pk {parent!r} - object does not exist.", attr="parent", code="does_not_exist"
            )
        if row["parent"] is not None:
            raise ValidationError("Tasks nest one level deep: the parent already has a parent.", attr="parent")
        if child_id is not None:
            if row["id"] == child_id:
                raise ValidationError("A task can not be its own parent.", attr="parent")
            has_children = self.cur.scalar(
                "SELECT 1 FROM tasks WHERE project_id = ? AND parent = (SELECT public_id FROM tasks WHERE id = ?)"
                " LIMIT 1",
                (scope.project_id, child_id),
            )
            if has_children:
                raise ValidationError("Tasks nest one level deep: this task has children.", attr="parent")

    def _write_tags(self, task_pk: int, tags: Mapping[str, str], *, replace: bool) -> None:
        if replace:
            self.cur.execute("DELETE FROM task_tags WHERE task_id = ?", (task_pk,))
        for key, value in tags.items():
            self.cur.execute(
                "INSERT INTO task_tags (task_id, tag_key, tag_value) VALUES (?, ?, ?)", (task_pk, key, value)
            )

    def create_task(
        self, scope: Scope, fields: Mapping[str, Any], *, now: float | None = None, idempotency_key: str | None = None
    ) -> Row:
        """Insert a task from validated fields, applying the service's rules for times.

        With ``idempotency_key``, a second create with the same key (a retry whose first answer was lost)
        updates and returns the task the first one made instead of making another.
        """
        now = time.time() if now is None else now
        if idempotency_key is not None:
            existing = self._by_idempotency_key(scope, idempotency_key)
            if existing is not None:
                return self._replay_create(scope, existing, fields, now)
        row: Row = dict.fromkeys(_PLAIN)
        row.update({k: fields[k] for k in _PLAIN if k in fields})
        row["status"] = row["status"] or "pending"
        if row["value_max"] is None:
            row["value_max"] = 100
        _apply_status_rules(row, None, fields, now, created=now)
        parent = fields.get("parent")
        if parent is not None:
            self._check_parent(scope, parent, None)
        tags = dict(fields.get("tags") or {})
        public_id = new_task_id()
        inserted = self.cur.one(
            "INSERT INTO tasks (public_id, project_id, name, queue, external_id, status, value, value_max, data,"
            " tags, parent, created, updated, start_time, end_time, time_to_start, max_runtime, stale_timeout,"
            " idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            # a concurrent create with the same key (PostgreSQL) waits for it, then finds its task below
            " ON CONFLICT (project_id, idempotency_key) DO NOTHING RETURNING id",
            (
                public_id,
                scope.project_id,
                row["name"],
                row["queue"],
                row["external_id"],
                row["status"],
                row["value"],
                row["value_max"],
                _dump(fields.get("data")),
                _dump(tags),
                parent,
                now,
                now,
                row["start_time"],
                row["end_time"],
                row["time_to_start"],
                row["max_runtime"],
                row["stale_timeout"],
                idempotency_key,
            ),
        )
        if inserted is None:
            assert idempotency_key is not None
            existing = self._by_idempotency_key(scope, idempotency_key)
            assert existing is not None
            return self._replay_create(scope, existing, fields, now)
        pk = int(inserted["id"])
        if tags:
            self._write_tags(pk, tags, replace=False)
        row.update(
            id=pk,
            public_id=public_id,
            data=_dump(fields.get("data")),
            tags=_dump(tags),
            parent=parent,
            created=now,
            updated=now,
        )
        for action in fields.get("actions") or ():
            self._insert_action(pk, action, now)
        out = self._task_out(row, scope)
        queue_firings(self.cur, pk, None, out, now=now)
        return out

    def _by_idempotency_key(self, scope: Scope, key: str) -> str | None:
        row = self.cur.one(
            "SELECT public_id FROM tasks WHERE project_id = ? AND idempotency_key = ?", (scope.project_id, key)
        )
        return None if row is None else str(row["public_id"])

    def _replay_create(self, scope: Scope, task_id: str, fields: Mapping[str, Any], now: float) -> Row:
        # the retry carries the latest state; actions the first attempt already made are not made twice
        current = self._task_row(scope, task_id, for_update=True)
        if current["status"] in TERMINAL and fields.get("status") not in TERMINAL:
            # a late copy of an earlier state (a spool delivered after the task finished) must not undo its end
            return self._task_out(current, scope)
        return self.update_task(scope, task_id, fields, now=now)

    def update_task(
        self,
        scope: Scope,
        task_id: str,
        fields: Mapping[str, Any],
        *,
        now: float | None = None,
        events: Collection[str] = (),
    ) -> Row:
        """Apply validated fields to a task. ``data`` and ``tags`` replace what was there, as the API does.

        ``events`` are trigger points this write stands for besides its fields (the sweeper's
        ``max_runtime_exceeded``).
        """
        now = time.time() if now is None else now
        old = self._task_row(scope, str(task_id), for_update=True)
        new = dict(old)
        changed: dict[str, Any] = {}
        for key in _PLAIN:
            if key in fields:
                changed[key] = fields[key]
        new.update(changed)
        _apply_status_rules(new, old, fields, now, created=old["created"])
        for key in ("start_time", "end_time", "time_to_start"):
            if new[key] != old[key]:
                changed[key] = new[key]
        if "data" in fields:
            changed["data"] = new["data"] = _dump(fields["data"])
        if "tags" in fields:
            changed["tags"] = new["tags"] = _dump(fields["tags"])
        if "parent" in fields and fields["parent"] != old["parent"]:
            if old["parent"] is not None:
                raise ValidationError("A task's parent can not be changed once set.", attr="parent")
            if fields["parent"] is not None:
                self._check_parent(scope, fields["parent"], old["id"])
                changed["parent"] = new["parent"] = fields["parent"]
        changed["updated"] = new["updated"] = now
        assignments = ", ".join(f"{k} = ?" for k in changed)
        self.cur.execute(f"UPDATE tasks SET {assignments} WHERE id = ?", [*changed.values(), old["id"]])
        if "tags" in fields:
            self._write_tags(old["id"], fields["tags"] or {}, replace=True)
        for action in fields.get("actions") or ():
            self._insert_action(old["id"], action, now, unless_present=True)
        out = self._task_out(new, scope)
        before = {
            "value": old["value"],
            "value_percent": value_percent(old["value"], old["value_max"]),
            "status": old["status"],
        }
        queue_firings(self.cur, old["id"], before, out, events=events, now=now)
        return out

    def cancel_task(self, scope: Scope, task_id: str, *, now: float | None = None) -> Row:
        return self.update_task(scope, task_id, {"status": "cancelled"}, now=now)

    def sweep(self, now: float | None = None) -> list[tuple[Scope, Row, str]]:
        """Mark running tasks that stopped updating as stale, and over-running ones as errors.

        Returns ``(scope, task, reason)`` for each task changed, reason ``stale`` or ``max_runtime_exceeded``.
        """
        now = time.time() if now is None else now
        running = tuple(sorted(RUNNING))
        marks = ", ".join("?" * len(running))
        rows = self.cur.all(
            "SELECT t.*, o.id AS org_pk, o.slug AS org_slug, p.slug AS project_slug FROM tasks t"
            " JOIN projects p ON p.id = t.project_id JOIN organizations o ON o.id = p.organization_id"
            f" WHERE t.status IN ({marks}) AND ("
            " (t.max_runtime IS NOT NULL AND COALESCE(t.start_time, t.created) + t.max_runtime < ?)"
            " OR (t.stale_timeout IS NOT NULL AND t.updated + t.stale_timeout < ?))",
            (*running, now, now),
        )
        out: list[tuple[Scope, Row, str]] = []
        for row in rows:
            scope = Scope(row["org_pk"], row["org_slug"], row["project_id"], row["project_slug"])
            started = row["start_time"] if row["start_time"] is not None else row["created"]
            if row["max_runtime"] is not None and started + row["max_runtime"] < now:
                data = json.loads(row["data"]) if row["data"] else {}
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

    # -- actions -----------------------------------------------------------------------------------
    def _action_out(self, row: Row, task_public_id: str) -> Row:
        return {
            "id": row["id"],
            "task": task_public_id,
            "trigger": row["trigger"],
            "integration": row["integration"],
            "status": row["status"],
            "config": None if row["config"] is None else json.loads(row["config"]),
            "created": row["created"],
            "updated": row["updated"],
        }

    def _insert_action(
        self, task_pk: int, fields: Mapping[str, Any], now: float, *, unless_present: bool = False
    ) -> int | None:
        """Add an action. ``unless_present``: actions that come inside a task's body are identified by what
        they do (trigger, integration, config), so a body sent again after a lost answer adds nothing twice."""
        if unless_present and self.cur.one(
            'SELECT id FROM actions WHERE task_id = ? AND "trigger" = ? AND integration = ? AND status = ?'
            " AND COALESCE(config, '') = ?",
            (task_pk, fields["trigger"], fields["integration"], "active", _dump(fields.get("config")) or ""),
        ):
            return None
        return self.cur.insert(
            'INSERT INTO actions (task_id, "trigger", integration, status, config, created, updated)'
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                task_pk,
                fields["trigger"],
                fields["integration"],
                "active",
                _dump(fields.get("config")),
                now,
                now,
            ),
        )

    def list_actions(self, scope: Scope, task_id: str) -> list[Row]:
        task = self._task_row(scope, str(task_id))
        rows = self.cur.all("SELECT * FROM actions WHERE task_id = ? ORDER BY id", (task["id"],))
        return [self._action_out(r, task["public_id"]) for r in rows]

    def create_action(self, scope: Scope, task_id: str, fields: Mapping[str, Any], *, now: float | None = None) -> Row:
        now = time.time() if now is None else now
        task = self._task_row(scope, str(task_id))
        action_id = self._insert_action(task["id"], fields, now)
        assert action_id is not None
        return self.get_action(scope, task_id, action_id)

    def _action_row(self, scope: Scope, task_id: str, action_id: int | str) -> tuple[Row, Row]:
        task = self._task_row(scope, str(task_id))
        try:
            pk = int(action_id)
        except (TypeError, ValueError):
            raise NotFound("Not found.") from None
        row = self.cur.one("SELECT * FROM actions WHERE id = ? AND task_id = ?", (pk, task["id"]))
        if row is None:
            raise NotFound("Not found.")
        return task, row

    def get_action(self, scope: Scope, task_id: str, action_id: int | str) -> Row:
        task, row = self._action_row(scope, task_id, action_id)
        return self._action_out(row, task["public_id"])

    def update_action(
        self,
        scope: Scope,
        task_id: str,
        action_id: int | str,
        fields: Mapping[str, Any],
        *,
        now: float | None = None,
    ) -> Row:
        now = time.time() if now is None else now
        _task, row = self._action_row(scope, task_id, action_id)
        changed: dict[str, Any] = {}
        for key in ("trigger", "integration"):
            if key in fields:
                changed[f'"{key}"' if key == "trigger" else key] = fields[key]
        if "config" in fields:
            changed["config"] = _dump(fields["config"])
        if "status" in fields:
            changed["status"] = fields["status"]
        changed["updated"] = now
        assignments = ", ".join(f"{k} = ?" for k in changed)
        self.cur.execute(f"UPDATE actions SET {assignments} WHERE id = ?", [*changed.values(), row["id"]])
        return self.get_action(scope, task_id, row["id"])

    def cancel_action(self, scope: Scope, task_id: str, action_id: int | str) -> None:
        self.update_action(scope, task_id, action_id, {"status": "cancelled"})


def _split_tag(tag: str) -> tuple[str, str]:
    key, sep, value = str(tag).partition(":")
    if not sep or not key:
        raise ValidationError("must be namespace:value.", attr="tag")
    return key, value


def _apply_status_rules(row: Row, old: Row | None, fields: Mapping[str, Any], now: float, *, created: float) -> None:
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
