"""The outbox of action firings: claimed by a deliverer, then marked delivered, retried or failed.

Several server processes may share one database, so a firing is claimed by moving its ``next_attempt``
forward with a compare-and-set: only the process whose UPDATE matched delivers it.
"""

from __future__ import annotations

from typing import Any

from ._db import Cursor, Row
from ._rows import load_json


def list_firings(cur: Cursor, action_id: int | None = None) -> list[Row]:
    """Firings, oldest first (for tests and the admin CLI)."""
    if action_id is None:
        return cur.all("SELECT * FROM action_firings ORDER BY id")
    return cur.all("SELECT * FROM action_firings WHERE action_id = ? ORDER BY id", (action_id,))


class OutboxOps:
    cur: Cursor

    def has_due_firings(self, now: float) -> bool:
        """Cheap enough for a read transaction, so that an idle poll never takes SQLite's write lock."""
        return bool(
            self.cur.scalar(
                "SELECT 1 FROM action_firings WHERE state = 'pending' AND next_attempt <= ? LIMIT 1", (now,)
            )
        )

    def claim_firings(self, now: float, *, lease: float, limit: int = 20) -> list[Row]:
        """Pending firings that are due, with their action's integration and config and the task's project,
        leased for ``lease`` seconds."""
        rows = self.cur.all(
            "SELECT f.id, f.action_id, f.point, f.payload, f.attempts, f.next_attempt, a.integration, a.config,"
            " t.project_id FROM action_firings f JOIN actions a ON a.id = f.action_id JOIN tasks t ON t.id = f.task_id"
            " WHERE f.state = 'pending' AND f.next_attempt <= ? ORDER BY f.next_attempt, f.id LIMIT ?",
            (now, limit),
        )
        claimed: list[Row] = []
        for row in rows:
            taken = self.cur.execute(
                "UPDATE action_firings SET next_attempt = ?, updated = ? WHERE id = ? AND state = 'pending'"
                " AND next_attempt = ?",
                (now + lease, now, row["id"], row["next_attempt"]),
            )
            if taken.rowcount == 1:
                row["payload"] = load_json(row["payload"])
                row["config"] = load_json(row["config"])
                claimed.append(row)
        return claimed

    def record_attempt(self, firing: Row, now: float, *, error: str | None, retry_at: float | None) -> None:
        """Record one delivery attempt. ``error`` None: delivered; else retried at ``retry_at``, or failed for
        good when that is None, which also marks the action ``failed: <error>``."""
        _record_attempt(self.cur, firing, now, error=error, retry_at=retry_at)


def _record_attempt(cur: Cursor, firing: Row, now: float, *, error: str | None, retry_at: float | None) -> None:
    attempts = int(firing["attempts"]) + 1
    if error is None:
        state, next_attempt = "delivered", now
    elif retry_at is not None:
        state, next_attempt = "pending", retry_at
    else:
        state, next_attempt = "failed", now
    cur.execute(
        "UPDATE action_firings SET state = ?, attempts = ?, next_attempt = ?, last_error = ?, updated = ? WHERE id = ?",
        (state, attempts, next_attempt, error, now, firing["id"]),
    )
    params: tuple[Any, ...]
    if state == "failed":
        query = "UPDATE actions SET status = ?, updated = ? WHERE id = ? AND status <> 'cancelled'"
        params = (f"failed: {error}", now, firing["action_id"])
    elif state == "delivered":
        # a later success clears an earlier failure. The pattern is a parameter: a literal % in the SQL
        # would reach psycopg, which reads it as a placeholder once ? has become %s
        query = "UPDATE actions SET status = 'active', updated = ? WHERE id = ? AND status LIKE ?"
        params = (now, firing["action_id"], "failed%")
    else:
        return
    cur.execute(query, params)
