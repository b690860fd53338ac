"""Actions: what the service does (an integration) when a task reaches a point (a trigger).

``create_action(..., idempotency_key=K)``: a repeat with the same key on the same task returns the action the
first one made, so a POST retried after a lost answer adds nothing twice.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from .._errors import NotFound
from ._db import Cursor, Row
from ._rows import Scope, dump_json, load_json, task_row

_ID_MAX = 2**63 - 1


def action_out(row: Row, task_public_id: str) -> Row:
    return {
        "id": row["id"],
        "task": task_public_id,
        "trigger": row["trigger"],
        "integration": row["integration"],
        "status": row["status"],
        "config": load_json(row["config"]),
        "created": row["created"],
        "updated": row["updated"],
    }


def insert_action(
    cur: Cursor,
    task_pk: int,
    fields: Mapping[str, Any],
    now: float,
    *,
    unless_present: bool = False,
    idempotency_key: str | None = None,
) -> int | None:
    """Add an action; returns its id, or None when ``unless_present`` found it there already.

    ``unless_present``: actions that come inside a task's body are identified by what they do (trigger,
    integration, config), so a body sent again after a lost answer adds nothing twice. ``idempotency_key``:
    the action an earlier call with this key made is returned instead of a new one."""
    config = dump_json(fields.get("config"))
    if unless_present and cur.one(
        'SELECT id FROM actions WHERE task_id = ? AND "trigger" = ? AND integration = ? AND status = ?'
        " AND COALESCE(config, '') = ?",
        (task_pk, fields["trigger"], fields["integration"], "active", config or ""),
    ):
        return None
    row = cur.one(
        'INSERT INTO actions (task_id, "trigger", integration, status, config, created, updated, idempotency_key)'
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (task_id, idempotency_key) DO NOTHING RETURNING id",
        (task_pk, fields["trigger"], fields["integration"], "active", config, now, now, idempotency_key),
    )
    if row is not None:
        return int(row["id"])
    # the key was used before (or by a concurrent request, whose commit the insert waited for)
    found = cur.scalar("SELECT id FROM actions WHERE task_id = ? AND idempotency_key = ?", (task_pk, idempotency_key))
    return int(found)


class ActionOps:
    cur: Cursor

    def _action_row(self, scope: Scope, task_id: str, action_id: int | str) -> tuple[Row, Row]:
        task = task_row(self.cur, scope, task_id)
        try:
            pk = int(action_id)
        except (TypeError, ValueError):
            raise NotFound("Not found.") from None
        if not 0 < pk <= _ID_MAX:
            # no action has such an id, and the database could not even compare it
            raise NotFound("Not found.")
        row = self.cur.one("SELECT * FROM actions WHERE id = ? AND task_id = ?", (pk, task["id"]))
        if row is None:
            raise NotFound("Not found.")
        return task, row

    def list_actions(self, scope: Scope, task_id: str) -> list[Row]:
        task = task_row(self.cur, scope, task_id)
        rows = self.cur.all("SELECT * FROM actions WHERE task_id = ? ORDER BY id", (task["id"],))
        return [action_out(r, task["public_id"]) for r in rows]

    def create_action(
        self,
        scope: Scope,
        task_id: str,
        fields: Mapping[str, Any],
        *,
        now: float | None = None,
        idempotency_key: str | None = None,
    ) -> Row:
        now = time.time() if now is None else now
        task = task_row(self.cur, scope, task_id)
        action_id = insert_action(self.cur, task["id"], fields, now, idempotency_key=idempotency_key)
        assert action_id is not None
        return self.get_action(scope, task_id, action_id)

    def get_action(self, scope: Scope, task_id: str, action_id: int | str) -> Row:
        task, row = self._action_row(scope, task_id, action_id)
        return action_out(row, task["public_id"])

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
            changed["config"] = dump_json(fields["config"])
        if "status" in fields:
            changed["status"] = fields["status"]
        changed["updated"] = now
        assignments = ", ".join(f"{k} = ?" for k in changed)
        self.cur.execute(f"UPDATE actions SET {assignments} WHERE id = ?", [*changed.values(), row["id"]])
        return self.get_action(scope, task_id, row["id"])

    def cancel_action(self, scope: Scope, task_id: str, action_id: int | str) -> None:
        self.update_action(scope, task_id, action_id, {"status": "cancelled"})
