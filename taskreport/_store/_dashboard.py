"""What the dashboard reads and keeps in the store: its signing secret, sign-in sessions, the projects a user
may see and their settings, a page of tasks, and the tasks changed since a moment (the live feed).

Functions take the transaction's :class:`~taskreport._store.Tx` (or its cursor): the dashboard is a reader of
the task store like the API, and writes only its own tables (sessions, secrets) and one project setting.

Migration 6 (in ``_migrations``) is the dashboard's: the index on ``updated`` that "changed since" walks, the
sessions and secrets tables, and ``projects.public_details``.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import time
from collections.abc import Iterable, Sequence
from typing import Any

from .._errors import NotFound, ValidationError
from ._db import Cursor, Row
from ._listing import MAX_PAGE_SIZE, _statuses, decode_cursor, encode_cursor, split_tag
from ._passwords import hash_token
from ._rows import Page, Scope, load_json, task_out

#: migration 6, the dashboard's
MIGRATION = [
    # "changed since": the live feed asks for the rows updated after a moment, every fraction of a second, for
    # the projects someone watches. (updated, project_id) answers it from the index alone on SQLite
    "CREATE INDEX tasks_updated ON tasks (updated, project_id)",
    # the secret that signs session cookies, CSRF tokens and public links: made once, shared by every server
    # process on the database, never in code or in a file
    "CREATE TABLE dashboard_secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL, created {real} NOT NULL)",
    "CREATE TABLE dashboard_sessions (id {serial}, key_hash TEXT NOT NULL UNIQUE,"
    " user_id {bigint} NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    " created {real} NOT NULL, expires {real} NOT NULL, revoked {real})",
    # 1: a task's public page shows its data, tags and actions too
    "ALTER TABLE projects ADD COLUMN public_details INTEGER NOT NULL DEFAULT 0",
]

#: the columns a list row, a live update and a public page need (never data: it may be large)
SUMMARY_COLUMNS = (
    "id, public_id, project_id, name, status, value, value_max, tags, parent, created, updated,"
    " start_time, end_time, time_to_start"
)


# -- secret ---------------------------------------------------------------------------------------------
def secret(tx: Any, name: str = "dashboard") -> str:
    """The named secret, made on first use. Two processes that are both first agree: the loser's insert
    does nothing and it reads the winner's."""
    cur: Cursor = tx.cur
    value = cur.scalar("SELECT value FROM dashboard_secrets WHERE name = ?", (name,))
    if value is None:
        cur.execute(
            "INSERT INTO dashboard_secrets (name, value, created) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
            (name, secrets.token_urlsafe(48), time.time()),
        )
        value = cur.scalar("SELECT value FROM dashboard_secrets WHERE name = ?", (name,))
    return str(value)


def rotate_secret(tx: Any, name: str = "dashboard") -> None:
    """A new secret: every session, CSRF token and public link signed with the old one stops working."""
    tx.cur.execute("DELETE FROM dashboard_secrets WHERE name = ?", (name,))
    tx.cur.execute("UPDATE dashboard_sessions SET revoked = ? WHERE revoked IS NULL", (time.time(),))
    secret(tx, name)


# -- sessions -------------------------------------------------------------------------------------------
def create_session(tx: Any, user_id: int, lifetime: float) -> str:
    """A new session's key (returned once; stored as a hash)."""
    key = secrets.token_urlsafe(32)
    now = time.time()
    tx.cur.execute(
        "INSERT INTO dashboard_sessions (key_hash, user_id, created, expires) VALUES (?, ?, ?, ?)",
        (hash_token(key), user_id, now, now + lifetime),
    )
    # expired and revoked sessions are of no use to anyone: a sign-in clears its user's
    tx.cur.execute(
        "DELETE FROM dashboard_sessions WHERE user_id = ? AND (expires < ? OR revoked IS NOT NULL)", (user_id, now)
    )
    return key


@dataclasses.dataclass(frozen=True)
class SessionUser:
    session_id: int
    key_hash: str
    user_id: int
    username: str


def session_user(tx: Any, key: str) -> SessionUser | None:
    """The live session's user, or None (unknown, signed out, expired, user gone)."""
    digest = hash_token(key)
    row = tx.cur.one(
        "SELECT s.id, s.user_id, u.username FROM dashboard_sessions s JOIN users u ON u.id = s.user_id"
        " WHERE s.key_hash = ? AND s.revoked IS NULL AND s.expires > ?",
        (digest, time.time()),
    )
    return None if row is None else SessionUser(int(row["id"]), digest, int(row["user_id"]), str(row["username"]))


def end_session(tx: Any, key: str) -> None:
    tx.cur.execute(
        "UPDATE dashboard_sessions SET revoked = ? WHERE key_hash = ? AND revoked IS NULL",
        (time.time(), hash_token(key)),
    )


# -- projects -------------------------------------------------------------------------------------------
def user_projects(tx: Any, user_id: int) -> list[Row]:
    """The projects of the user's organizations: ``organization``, ``project``, ``name``, ``project_id``,
    ``organization_id``."""
    return list(
        tx.cur.all(
            "SELECT o.slug AS organization, o.id AS organization_id, p.slug AS project, p.name AS name,"
            " p.id AS project_id FROM memberships m JOIN organizations o ON o.id = m.organization_id"
            " JOIN projects p ON p.organization_id = o.id WHERE m.user_id = ? ORDER BY o.slug, p.slug",
            (user_id,),
        )
    )


def project_settings(tx: Any, project_id: int) -> Row:
    row = tx.cur.one("SELECT public_details FROM projects WHERE id = ?", (project_id,))
    if row is None:
        raise NotFound("Not found.")
    return {"public_details": bool(row["public_details"])}


def set_public_details(tx: Any, organization: str, project: str, allowed: bool) -> None:
    scope = tx.get_scope(organization, project)
    if scope is None:
        raise NotFound(f"no project {organization}/{project}")
    tx.cur.execute("UPDATE projects SET public_details = ? WHERE id = ?", (1 if allowed else 0, scope.project_id))


def scope_of_project(tx: Any, project_id: int) -> Scope | None:
    row = tx.cur.one(
        "SELECT o.id AS org_id, o.slug AS org, p.slug AS project FROM projects p"
        " JOIN organizations o ON o.id = p.organization_id WHERE p.id = ?",
        (project_id,),
    )
    return None if row is None else Scope(int(row["org_id"]), str(row["org"]), project_id, str(row["project"]))


# -- listing --------------------------------------------------------------------------------------------
def summary(row: Row) -> Row:
    """A summary row (:data:`SUMMARY_COLUMNS`) as the pages and the live feed use it."""
    tags = row.get("tags")
    return {
        "pk": row["id"],
        "id": row["public_id"],
        "project_id": row["project_id"],
        "name": row["name"],
        "status": row["status"],
        "value": row["value"],
        "value_max": row["value_max"],
        "tags": load_json(tags) if tags else {},
        "parent": row["parent"],
        "created": row["created"],
        "updated": row["updated"],
        "start_time": row["start_time"],
        "end_time": row["end_time"],
        "time_to_start": row["time_to_start"],
    }


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


#: a name search reads the project in slices of this many tasks, newest first...
NAME_CHUNK = 2_000
#: ...until the page is full, the project is read to its end, or this many seconds have gone: then the next page
#: searches on from where it stopped. A page costs about the same however rare the name is
NAME_BUDGET = 0.04


@dataclasses.dataclass
class TaskPage(Page):
    #: a name search that stopped (its time was up) before it filled the page or read the whole project:
    #: ``next_cursor`` (or ``previous_cursor``) goes on searching from where it stopped
    partial: bool = False


def list_page(
    tx: Any,
    scope: Scope,
    *,
    statuses: Sequence[str] = (),
    name: str = "",
    tag: str = "",
    cursor: str | None = None,
    page_size: int = 50,
) -> TaskPage:
    """Newest first, ``page_size`` summary rows and cursors, with the filters a person types: ``statuses``
    (any of them), ``name`` (the name contains it, case-insensitive) and ``tag`` (``key:value``).

    Each filter has a plan whose cost does not grow with the project: a status walks its index (project,
    status, id) newest first, one walk per status, merged; a tag walks the tag index (key, value, task id)
    newest first; a name is tested on rows walked newest first in slices of :data:`NAME_CHUNK`, for at most
    :data:`NAME_BUDGET` seconds (a rare name may take several pages of searching, each as quick as the others:
    ``partial`` says so)."""
    size = max(1, min(int(page_size), MAX_PAGE_SIZE))
    wanted = _statuses(list(statuses)) if statuses else []
    direction, key = decode_cursor(cursor) if cursor else ("n", None)
    newest_first = direction == "n"
    order = "DESC" if newest_first else "ASC"
    where = ["t.project_id = ?"]
    params: list[Any] = [scope.project_id]
    source, order_by, id_column = "tasks t", f"t.id {order}", "t.id"
    if tag:
        tag_key, tag_value = split_tag(tag)
        # driven by the tag index, in task order: no sort, and it stops at the page's end
        source, order_by, id_column = "task_tags g JOIN tasks t ON t.id = g.task_id", f"g.task_id {order}", "g.task_id"
        where.insert(0, "g.tag_key = ? AND g.tag_value = ?")
        params[:0] = [tag_key, tag_value]
    columns = ", ".join(f"t.{c.strip()}" for c in SUMMARY_COLUMNS.split(","))
    after = f"{id_column} < ?" if newest_first else f"{id_column} > ?"
    partial = False
    edge_row: Row | None = None
    if name:
        tests = ["LOWER(w.name) LIKE ? ESCAPE '\\'"]
        extra: list[Any] = ["%" + _escape_like(name.lower()) + "%"]
        if wanted:
            tests.append(f"w.status IN ({', '.join('?' * len(wanted))})")
            extra += wanted
        edge_fn = "MIN" if newest_first else "MAX"
        rows: list[Row] = []
        deadline = time.monotonic() + NAME_BUDGET
        position = key
        while True:
            bounded = [*where, after] if position is not None else where
            bound = [*params, position] if position is not None else params
            window = (f"SELECT {columns} FROM {source} WHERE {' AND '.join(bounded)} ORDER BY {order_by}"
                      f" LIMIT {NAME_CHUNK}")
            rows += tx.cur.all(f"SELECT * FROM ({window}) AS w WHERE {' AND '.join(tests)} ORDER BY w.id {order}"
                               " LIMIT ?", [*bound, *extra, size + 1 - len(rows)])  # fmt: skip
            if len(rows) > size:
                break
            read = tx.cur.one(f"SELECT COUNT(*) AS n, {edge_fn}(w.id) AS edge FROM ({window}) AS w", bound)
            if read is None or read["n"] < NAME_CHUNK:
                break  # the project is read to its end
            position = int(read["edge"])
            if time.monotonic() >= deadline:
                partial = True
                edge_row = {"id": position}
                break
    elif wanted and not tag:
        base = f"SELECT {columns} FROM {source} WHERE {' AND '.join([*where, after] if key is not None else where)}"
        params = [*params, key] if key is not None else params
        # one walk of the status index per status, each stopping at the page's end, merged
        parts = [f"SELECT * FROM ({base} AND t.status = ? ORDER BY {order_by} LIMIT ?) AS s{i}"
                 for i in range(len(wanted))]  # fmt: skip
        query = " UNION ALL ".join(parts) + f" ORDER BY id {order} LIMIT ?"
        all_params: list[Any] = []
        for status in wanted:
            all_params += [*params, status, size + 1]
        rows = tx.cur.all(query, [*all_params, size + 1])
    else:
        base = f"SELECT {columns} FROM {source} WHERE {' AND '.join([*where, after] if key is not None else where)}"
        params = [*params, key] if key is not None else params
        if wanted:
            base += f" AND t.status IN ({', '.join('?' * len(wanted))})"
            params += wanted
        rows = tx.cur.all(f"{base} ORDER BY {order_by} LIMIT ?", [*params, size + 1])
    more = len(rows) > size
    rows = rows[:size]
    if not newest_first:
        rows.reverse()
    page = TaskPage([summary(r) for r in rows], partial=partial)
    ends = [r["id"] for r in rows]
    if edge_row is not None:
        # the search stopped at the edge of what it read: go on from there, in the same direction
        if newest_first:
            page.next_cursor = encode_cursor("n", edge_row["id"])
            if key is not None:
                page.previous_cursor = encode_cursor("p", ends[0] if ends else max(0, key - 1))
        else:
            page.previous_cursor = encode_cursor("p", edge_row["id"])
            page.next_cursor = encode_cursor("n", ends[-1] if ends else key + 1) if key is not None else None
        return page
    if ends:
        first, last = ends[0], ends[-1]
        if (newest_first and more) or (not newest_first and key is not None):
            page.next_cursor = encode_cursor("n", last)
        if (not newest_first and more) or (newest_first and key is not None):
            page.previous_cursor = encode_cursor("p", first)
    elif key is not None:
        # an empty page past either end still lets the reader walk back, to the row the cursor named included
        if newest_first:
            page.previous_cursor = encode_cursor("p", max(0, key - 1))
        else:
            page.next_cursor = encode_cursor("n", key + 1)
    return page


def children_counts(tx: Any, scope: Scope, ids: Iterable[str]) -> dict[str, int]:
    ids = list(ids)
    if not ids:
        return {}
    marks = ", ".join("?" * len(ids))
    rows = tx.cur.all(
        f"SELECT parent, COUNT(*) AS n FROM tasks WHERE project_id = ? AND parent IN ({marks}) GROUP BY parent",
        [scope.project_id, *ids],
    )
    return {r["parent"]: int(r["n"]) for r in rows}


def names(tx: Any, scope: Scope, ids: Iterable[str]) -> dict[str, str]:
    """Tasks' names by id (a page's parents)."""
    ids = sorted(set(ids))
    if not ids:
        return {}
    marks = ", ".join("?" * len(ids))
    rows = tx.cur.all(
        f"SELECT public_id, name FROM tasks WHERE project_id = ? AND public_id IN ({marks})", [scope.project_id, *ids]
    )
    return {r["public_id"]: r["name"] for r in rows}


def children(tx: Any, scope: Scope, task_id: str, limit: int = 200) -> list[Row]:
    columns = ", ".join(c.strip() for c in SUMMARY_COLUMNS.split(","))
    rows = tx.cur.all(
        f"SELECT {columns} FROM tasks WHERE project_id = ? AND parent = ? ORDER BY id DESC LIMIT ?",
        (scope.project_id, task_id, limit),
    )
    return [summary(r) for r in rows]


def task_detail(tx: Any, scope: Scope, task_id: str) -> Row:
    """A task as the API renders it (``data`` included), plus its pk; NotFound outside ``scope``."""
    row = tx.cur.one("SELECT * FROM tasks WHERE project_id = ? AND public_id = ?", (scope.project_id, str(task_id)))
    if row is None:
        raise NotFound("Not found.")
    out = dict(task_out(row, scope))
    out["pk"] = row["id"]
    return out


def task_by_public_id(tx: Any, task_id: str) -> tuple[Scope, Row] | None:
    """A task by its id in any project (a public link names it), with its project."""
    row = tx.cur.one("SELECT * FROM tasks WHERE public_id = ?", (str(task_id),))
    if row is None:
        return None
    scope = scope_of_project(tx, int(row["project_id"]))
    if scope is None:  # pragma: no cover - projects are never deleted
        return None
    out = dict(task_out(row, scope))
    out["pk"] = row["id"]
    return scope, out


# -- changed since --------------------------------------------------------------------------------------
def changed_since(cur: Cursor, since: float, project_ids: Sequence[int], limit: int = 5000) -> list[Row]:
    """Summary rows of the watched projects' tasks updated after ``since`` (oldest change first), at most
    ``limit``: the walk of ``tasks_updated`` that feeds every open page of a server process."""
    if not project_ids:
        return []
    if len(project_ids) > 500:
        raise ValidationError("too many projects watched at once", attr="project_ids")
    marks = ", ".join("?" * len(project_ids))
    columns = ", ".join(c.strip() for c in SUMMARY_COLUMNS.split(","))
    if cur.dialect.name == "postgresql":
        # no index holds ``updated`` there (a progress update would then have to add an entry to every index,
        # migration 7): the minute it falls in is indexed, and orders the rows but within each minute
        rows = cur.all(
            f"SELECT {columns} FROM tasks WHERE updated_minute >= ? AND updated > ? AND project_id IN ({marks})"
            " ORDER BY updated_minute, updated LIMIT ?",
            # the same division and floor as the database's (IEEE doubles both): a later ``updated`` is never
            # in an earlier minute
            [math.floor(since / 60), since, *project_ids, limit],
        )
    else:
        rows = cur.all(
            f"SELECT {columns} FROM tasks WHERE updated > ? AND project_id IN ({marks}) ORDER BY updated LIMIT ?",
            [since, *project_ids, limit],
        )
    return [summary(r) for r in rows]
