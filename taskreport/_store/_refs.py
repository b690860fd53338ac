"""Task references: the rules that let several processes name one task before the service has seen it.

A task's reference (``ref``, stored in ``tasks.idempotency_key``, unique per project) is chosen by the process
that creates the task. Other processes may update the task, or name it as a parent, by that reference alone,
and their writes may reach the store before the create does. So:

- a write by reference that finds no task makes a **placeholder** (``born = 0``, named after the reference or
  the update's ``name``, ``pending``) and applies itself to it;
- the create, when it arrives, **fills the placeholder in** (:func:`fill_in`) and marks it born: its ``name``
  wins, other columns only where the placeholder has nothing, its ``status`` only if it ranks higher, so a
  create arriving after the task finished never reopens it;
- a create whose reference is already born is a **replay** (a retry, a spool delivered twice) and changes
  nothing;
- a parent named by reference is resolved to its task (a placeholder if need be); tasks nest one level deep,
  so a parent that has a parent of its own gives way to that one (:func:`resolve_parent_ref`).

Concurrent inserts of one reference meet on the unique index: the loser's ``INSERT ... ON CONFLICT DO
NOTHING`` waits for the winner's commit (PostgreSQL) and then reads its row.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .._errors import ValidationError
from ._db import Cursor, Row
from ._rows import Scope, dump_json, find_task, new_task_id

#: how far a status has come; a create fills in a placeholder's status only with a higher rank
RANK = {
    "pending": 0,
    "pre_processing": 1,
    "processing": 1,
    "post_processing": 1,
    "stale": 1,
    "success": 2,
    "error": 2,
    "cancelled": 2,
}
DEFAULT_VALUE_MAX = 100
#: columns a create fills in only where the placeholder has none (NULL; value_max: the default)
_FILLED = ("queue", "external_id", "value", "value_max", "start_time", "end_time", "time_to_start",
           "max_runtime", "stale_timeout")  # fmt: skip


def insert_placeholder(cur: Cursor, scope: Scope, ref: str, name: str, now: float) -> None:
    """A task for ``ref`` that no create has reached yet; nothing if one exists (or is being made)."""
    cur.execute(
        "INSERT INTO tasks (public_id, project_id, name, status, value_max, tags, created, updated,"
        " idempotency_key, born) VALUES (?, ?, ?, 'pending', ?, '{}', ?, ?, ?, 0)"
        " ON CONFLICT (project_id, idempotency_key) DO NOTHING",
        (new_task_id(), scope.project_id, name, DEFAULT_VALUE_MAX, now, now, ref),
    )


def check_parent(cur: Cursor, scope: Scope, parent: str, child_pk: int | None) -> None:
    """A ``parent`` given by id: it must exist and have no parent, and the child must have no children."""
    row = find_task(cur, scope, public_id=parent, lock="share")
    if row is None:
        raise ValidationError(f"Invalid pk {parent!r} - object does not exist.", attr="parent", code="does_not_exist")
    if row["parent"] is not None:
        raise ValidationError("Tasks nest one level deep: the parent already has a parent.", attr="parent")
    if child_pk is not None:
        if row["id"] == child_pk:
            raise ValidationError("A task can not be its own parent.", attr="parent")
        if has_children(cur, scope, child_pk):
            raise ValidationError("Tasks nest one level deep: this task has children.", attr="parent")


def has_children(cur: Cursor, scope: Scope, task_pk: int) -> bool:
    return bool(
        cur.scalar(
            "SELECT 1 FROM tasks WHERE project_id = ? AND parent = (SELECT public_id FROM tasks WHERE id = ?) LIMIT 1",
            (scope.project_id, task_pk),
        )
    )


def resolve_parent_ref(cur: Cursor, scope: Scope, parent_ref: str, now: float) -> str:
    """The public id of the task a child naming ``parent_ref`` goes under: that task (a placeholder if there
    is none yet), or its own parent when it has one (one level deep)."""
    # locked for share: a create filling this placeholder in (which may give it a parent and move its
    # children there) waits for this child to commit, and this child sees that create's result if it came first
    row = find_task(cur, scope, ref=parent_ref, lock="share")
    if row is None:
        insert_placeholder(cur, scope, parent_ref, parent_ref, now)
        row = find_task(cur, scope, ref=parent_ref, lock="share")
        assert row is not None
    return str(row["parent"] or row["public_id"])


def reparent_children(cur: Cursor, scope: Scope, public_id: str, parent: str, now: float) -> None:
    """Move the children of ``public_id`` under ``parent``: it has just got a parent, and tasks nest one level."""
    cur.execute(
        "UPDATE tasks SET parent = ?, updated = ? WHERE project_id = ? AND parent = ?",
        (parent, now, scope.project_id, public_id),
    )


def _merged(placeholder: str | None, create: Any) -> Any:
    """A JSON column filled in: objects merged key by key with the placeholder's keys winning, else the
    placeholder's value unless it has none."""
    if placeholder is None:
        return create
    mine = json.loads(placeholder)
    if isinstance(mine, dict) and isinstance(create, Mapping):
        return {**create, **mine}
    return mine


def fill_in(old: Row, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The columns a create's ``fields`` change on the placeholder ``old``; ``data`` and ``tags`` as values,
    not JSON text. ``parent`` is not handled here: the caller resolves it (and moves children) first."""
    changed: dict[str, Any] = {}
    if "name" in fields and fields["name"] != old["name"]:
        changed["name"] = fields["name"]
    for column in _FILLED:
        if column not in fields or fields[column] is None:
            continue
        empty = old[column] == DEFAULT_VALUE_MAX if column == "value_max" else old[column] is None
        if empty and fields[column] != old[column]:
            changed[column] = fields[column]
    status = fields.get("status")
    if status is not None and RANK.get(status, 0) > RANK.get(old["status"], 0):
        changed["status"] = status
    if "data" in fields:
        data = _merged(old["data"], fields["data"])
        if dump_json(data) != old["data"]:
            changed["data"] = data
    if fields.get("tags"):
        tags = _merged(old["tags"] or "{}", fields["tags"])
        if tags != json.loads(old["tags"] or "{}"):
            changed["tags"] = tags
    return changed
