"""Progress in bulk: many tasks' ``value``/``value_max`` written with a few statements.

The commonest write by far is a progress update of a running task. Written one by one (a savepoint, a read,
an update, a look for actions to fire, a rendered row), 10,000 live tasks cost more than a second of one
thread's time per round; written here, a round is three statements per 500 tasks and one statement per
2,000, most of it in the database's own code (on SQLite, without the GIL). Only writes
that can't change anything else qualify: fields within ``value``/``value_max`` (no status, so no time rules)
to tasks with no live action (so nothing can fire). The caller writes every other one the ordinary way.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ._db import Cursor, Row
from ._rows import Scope

#: the fields a bulk write may carry
FIELDS = frozenset({"value", "value_max"})
_CHUNK = 500
#: rows per ``UPDATE ... FROM (VALUES ...)`` on SQLite: at most 3 parameters a row, well under its limit of 32,766
_VALUES_CHUNK = 2000


def qualifies(fields: Mapping[str, Any]) -> bool:
    return bool(fields) and FIELDS.issuperset(fields)


#: the task has an action that may yet fire: its writes go the ordinary way, which fires it
_LIVE_ACTION = "EXISTS (SELECT 1 FROM actions a WHERE a.task_id = tasks.id AND a.status <> 'cancelled')"


def _by_columns(items: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[tuple[str, ...], list[list[Any]]]:
    """The items grouped by the fields they set, each as its values (in the columns' order), then its id."""
    groups: dict[tuple[str, ...], list[list[Any]]] = {}
    for task_id, fields in items:
        columns = tuple(sorted(fields))
        groups.setdefault(columns, []).append([*(fields[c] for c in columns), str(task_id)])
    return groups


def _values(dialect: str, columns: tuple[str, ...], count: int) -> str:
    """``(VALUES (...), ...) AS v`` for ``count`` rows of the columns then an id (``v.column1``...)."""
    # PostgreSQL types a VALUES list from its first row: say what each column is
    casts = ["::bigint"] * len(columns) + ["::text"] if dialect == "postgresql" else [""] * (len(columns) + 1)
    marks = "(" + ", ".join(f"?{cast}" for cast in casts) + ")"
    return f"(VALUES {', '.join([marks] * count)}) AS v"


def _assignments(columns: tuple[str, ...]) -> str:
    return ", ".join(f"{c} = v.column{n}" for n, c in enumerate(columns, start=1))


def update_values(cur: Cursor, scope: Scope, items: Sequence[tuple[str, Mapping[str, Any]]],
                  now: float | None = None) -> set[str]:
    """Write the qualifying ``(task id, fields)`` items; returns the ids of those written. Items of unknown
    tasks, or of tasks with a live action, are left for the caller (their ids are absent)."""
    now = time.time() if now is None else now
    # the project's tasks with a live action: usually none or a few, looked up once for the whole round
    busy = {
        row["public_id"]
        for row in cur.all(
            "SELECT DISTINCT t.public_id FROM actions a JOIN tasks t ON t.id = a.task_id"
            " WHERE t.project_id = ? AND a.status <> 'cancelled'",
            (scope.project_id,),
        )
    }
    written: set[str] = set()
    for columns, rows in _by_columns([(task_id, fields) for task_id, fields in items if task_id not in busy]).items():
        if cur.dialect.name == "postgresql" or sqlite3.sqlite_version_info >= (3, 33):
            matched = _update_from_values(cur, scope, columns, rows, now)
        else:
            assignments = ", ".join(f"{c} = ?" for c in columns)
            query = f"UPDATE tasks SET {assignments}, updated = ? WHERE project_id = ? AND public_id = ?"
            matched = cur.executemany(query, [[*row[:-1], now, scope.project_id, row[-1]] for row in rows])
        ids = [row[-1] for row in rows]
        if matched != len(rows):
            # some ids are unknown here (rare: a task deleted, an id from elsewhere): keep those that exist
            ids = _existing(cur, scope, ids)
        written.update(ids)
    return written


def update_one(cur: Cursor, scope: Scope, task_id: str, fields: Mapping[str, Any], now: float) -> Row | None:
    """One task's qualifying progress in one statement (a request's PATCH of ``value``): the row as written,
    or None when the task is unknown or has a live action, for the caller to write the ordinary way."""
    columns = sorted(fields)
    assignments = ", ".join(f"{c} = ?" for c in columns)
    return cur.one(
        f"UPDATE tasks SET {assignments}, updated = ? WHERE project_id = ? AND public_id = ? AND NOT {_LIVE_ACTION}"
        " RETURNING *",
        [*(fields[c] for c in columns), now, scope.project_id, str(task_id)],
    )


def update_returning(cur: Cursor, scope: Scope, items: Sequence[tuple[str, Mapping[str, Any]]],
                     now: float) -> dict[str, Row]:
    """Several requests' qualifying progress (distinct task ids) in one statement per set of columns: the rows
    as written, by task id. A task that is unknown or has a live action is absent, for the caller to write the
    ordinary way. The server's writer groups the PATCHes of one batch here: one statement instead of a
    savepoint, an update and a release for each (on PostgreSQL, three round trips a request)."""
    out: dict[str, Row] = {}
    for query, params in returning_statements(cur.dialect.name, scope, items, now):
        for row in cur.all(query, params):
            out[row["public_id"]] = row
    return out


def returning_statements(dialect: str, scope: Scope, items: Sequence[tuple[str, Mapping[str, Any]]],
                         now: float) -> Iterator[tuple[str, list[Any]]]:  # fmt: skip
    """The statements of :func:`update_returning` (``?`` for their parameters) and their parameters, one per
    set of columns: for a caller with a connection of its own (the server's event loop)."""
    for columns, rows in _by_columns(items).items():
        yield _returning_statement(dialect, scope, columns, rows, now)


def _returning_statement(dialect: str, scope: Scope, columns: tuple[str, ...], rows: Sequence[Sequence[Any]],
                         now: float) -> tuple[str, list[Any]]:  # fmt: skip
    """One set of columns' statement: ``rows`` are each the columns' values, then the task id (distinct ids)."""
    query = _returning_query(dialect, columns, len(rows))
    if dialect == "postgresql":
        return query, [*(value for row in rows for value in row), scope.project_id, now]
    return query, [now, *(value for row in rows for value in row), scope.project_id]


@functools.lru_cache(maxsize=1024)
def _returning_query(dialect: str, columns: tuple[str, ...], count: int) -> str:
    # the text depends on the columns and the number of rows alone: a busy server asks for the same few
    width = len(columns) + 1
    values = _values(dialect, columns, count)
    if dialect == "postgresql":
        # rows locked in one order (id), so that two batches touching the same tasks wait for each other
        # instead of deadlocking (PostgreSQL would notice only after deadlock_timeout, a second)
        return (f"WITH v AS (SELECT * FROM {values}), mine AS (SELECT tasks.id FROM tasks JOIN v ON"
                f" tasks.public_id = v.column{width} WHERE tasks.project_id = ? ORDER BY tasks.id FOR UPDATE)"
                f" UPDATE tasks SET {_assignments(columns)}, updated = ? FROM v WHERE tasks.id IN"
                f" (SELECT id FROM mine) AND tasks.public_id = v.column{width} AND NOT {_LIVE_ACTION}"
                " RETURNING tasks.*")  # fmt: skip
    # SQLite's RETURNING takes no table name: its * is the updated table's columns alone
    return (f"UPDATE tasks SET {_assignments(columns)}, updated = ? FROM {values} WHERE tasks.project_id = ?"
            f" AND tasks.public_id = v.column{width} AND NOT {_LIVE_ACTION} RETURNING *")  # fmt: skip


def _update_from_values(cur: Cursor, scope: Scope, columns: tuple[str, ...], rows: list[list[Any]],
                        now: float) -> int:  # fmt: skip
    """The rows (each its columns' values, then the task id) in one ``UPDATE ... FROM (VALUES ...)`` per
    ``_VALUES_CHUNK``: ``executemany`` steps once per row, and sqlite3 lets the GIL go and takes it back at each
    step, which behind one busy application thread costs up to a switch interval (5 ms) per row; PostgreSQL
    runs one statement instead of one per row."""
    matched = 0
    for start in range(0, len(rows), _VALUES_CHUNK):
        chunk = rows[start : start + _VALUES_CHUNK]
        values = _values(cur.dialect.name, columns, len(chunk))
        query = (f"UPDATE tasks SET {_assignments(columns)}, updated = ? FROM {values}"
                 f" WHERE tasks.project_id = ? AND tasks.public_id = v.column{len(columns) + 1}")  # fmt: skip
        params = [now, *(value for row in chunk for value in row), scope.project_id]
        matched += int(cur.execute(query, params).rowcount)
    return matched


def _existing(cur: Cursor, scope: Scope, ids: list[str]) -> list[str]:
    found: list[str] = []
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        found += [row["public_id"] for row in cur.all(
            f"SELECT public_id FROM tasks WHERE project_id = ? AND public_id IN ({marks})", [scope.project_id, *chunk])]
    return found
