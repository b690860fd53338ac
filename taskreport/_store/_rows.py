"""What every part of the task store shares: scopes, rows as the API renders them, JSON columns, locking reads.

Functions here take the transaction's :class:`Cursor`; the operations in ``_tasks``, ``_refs``,
``_listing`` and ``_actions`` are built from them.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import string
from typing import Any

from .._errors import NotFound
from .._models import value_percent
from ._db import Cursor, Row

_ID_ALPHABET = string.ascii_letters + string.digits
#: plain columns copied from validated fields as they are
PLAIN = (
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
#: a JSON text holding a UTF-16 surrogate escape: only then can decoding it give a string that is not valid text
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def new_task_id() -> str:
    """22 random letters and digits. One call to the OS for all of them: a choice per character cost a
    third of an embedded create."""
    number = int.from_bytes(secrets.token_bytes(17), "big")  # 136 bits, more than 22 digits of base 62 hold
    chars = []
    for _ in range(22):
        number, digit = divmod(number, 62)
        chars.append(_ID_ALPHABET[digit])
    return "".join(chars)


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


class TaskRow(dict[str, Any]):
    """A task as the API renders it (a plain dict), plus what the write that returned it did.

    ``replayed`` is True when a create found its reference already born (a retry after a lost answer, a spool
    delivered twice): nothing was changed, and the task is returned as it is.
    """

    replayed: bool = False


def dump_json(value: Any) -> str | None:
    # ensure_ascii=False: text is stored as text, so a string that is not valid Unicode (a lone surrogate)
    # fails here, at the write, instead of being stored as an escape that breaks every later read
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def scrub(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings (keys included) replaced by U+FFFD."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [scrub(item) for item in value]
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    return value


def load_json(text: str | None) -> Any:
    """A JSON column's value. Rows written before text was checked may hold escaped lone surrogates: they
    are read as U+FFFD, so that no stored value can break a read."""
    if text is None:
        return None
    value = json.loads(text)
    return scrub(value) if _SURROGATE_ESCAPE.search(text) else value


def task_out(row: Row, scope: Scope) -> TaskRow:
    """A ``tasks`` row as the API renders it (times still epoch seconds)."""
    tags = row["tags"]
    return TaskRow(
        id=row["public_id"],
        ref=row.get("idempotency_key"),
        organization=scope.organization,
        project=scope.project,
        name=row["name"],
        queue=row["queue"],
        external_id=row["external_id"],
        status=row["status"],
        value=row["value"],
        value_max=row["value_max"],
        value_percent=value_percent(row["value"], row["value_max"]),
        data=load_json(row["data"]),
        tags=load_json(tags) if tags and tags != "{}" else {},
        parent=row["parent"],
        created=row["created"],
        updated=row["updated"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        time_to_start=row["time_to_start"],
        max_runtime=row["max_runtime"],
        stale_timeout=row["stale_timeout"],
    )


def lock_clause(cur: Cursor, mode: str | None) -> str:
    """`` FOR UPDATE`` / `` FOR SHARE`` on PostgreSQL inside a write transaction; SQLite's write transactions
    hold the database lock already."""
    if mode is None or not cur.write or cur.dialect.name != "postgresql":
        return ""
    return f" FOR {mode.upper()}"


def find_task(
    cur: Cursor, scope: Scope, *, public_id: str | None = None, ref: str | None = None, lock: str | None = None
) -> Row | None:
    """The ``tasks`` row with this public id or reference in ``scope``, locked (``lock``: ``update`` or
    ``share``) until the transaction ends."""
    column, key = ("public_id", public_id) if ref is None else ("idempotency_key", ref)
    return cur.one(
        f"SELECT * FROM tasks WHERE project_id = ? AND {column} = ?" + lock_clause(cur, lock),
        (scope.project_id, key),
    )


def task_row(cur: Cursor, scope: Scope, public_id: str, *, lock: str | None = None) -> Row:
    """Like :func:`find_task` by public id, raising NotFound when there is none."""
    row = find_task(cur, scope, public_id=str(public_id), lock=lock)
    if row is None:
        raise NotFound("Not found.")
    return row
