"""The store's schema, as numbered migrations applied in order when a store is opened.

A later release adds a migration to the end of MIGRATIONS; it never edits one that has shipped.
``{serial}``, ``{real}`` and ``{bigint}`` become each dialect's type; a ``(dialect, statement)`` pair runs on
that dialect alone.
"""

from __future__ import annotations

from ._dashboard import MIGRATION as DASHBOARD_MIGRATION
from ._db import Cursor, Database

Statement = str | tuple[str, str]

#: the minute a task was last updated in, kept by PostgreSQL itself (migration 7)
_MINUTE_COLUMN = (
    "ALTER TABLE tasks ADD COLUMN updated_minute BIGINT GENERATED ALWAYS AS (floor(updated / 60)::bigint) STORED"
)

MIGRATIONS: list[list[Statement]] = [
    # 1: tenancy, tasks, tags, actions, users and tokens
    [
        "CREATE TABLE organizations (id {serial}, slug TEXT NOT NULL UNIQUE, name TEXT NOT NULL,"
        " created {real} NOT NULL)",
        "CREATE TABLE projects (id {serial}, organization_id {bigint} NOT NULL REFERENCES organizations(id),"
        " slug TEXT NOT NULL, name TEXT NOT NULL, created {real} NOT NULL, UNIQUE (organization_id, slug))",
        "CREATE TABLE tasks ("
        " id {serial},"
        " public_id TEXT NOT NULL UNIQUE,"
        " project_id {bigint} NOT NULL REFERENCES projects(id),"
        " name TEXT NOT NULL, queue TEXT, external_id TEXT, status TEXT NOT NULL,"
        " value {bigint}, value_max {bigint} NOT NULL DEFAULT 100, data TEXT, tags TEXT NOT NULL DEFAULT '{{}}',"
        " parent TEXT, created {real} NOT NULL, updated {real} NOT NULL, start_time {real}, end_time {real},"
        " time_to_start {real}, max_runtime {bigint}, stale_timeout {bigint})",
        "CREATE INDEX tasks_project ON tasks (project_id, id)",
        "CREATE INDEX tasks_status ON tasks (project_id, status, id)",
        "CREATE INDEX tasks_name ON tasks (project_id, name, id)",
        "CREATE INDEX tasks_parent ON tasks (project_id, parent, id)",
        "CREATE INDEX tasks_external ON tasks (project_id, external_id, id)",
        "CREATE INDEX tasks_running ON tasks (status, updated)",
        "CREATE TABLE task_tags (task_id {bigint} NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,"
        " tag_key TEXT NOT NULL, tag_value TEXT NOT NULL, PRIMARY KEY (task_id, tag_key))",
        "CREATE INDEX task_tags_lookup ON task_tags (tag_key, tag_value, task_id)",
        "CREATE TABLE actions (id {serial}, task_id {bigint} NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,"
        ' "trigger" TEXT NOT NULL, integration TEXT NOT NULL, status TEXT NOT NULL, config TEXT,'
        " created {real} NOT NULL, updated {real} NOT NULL)",
        "CREATE INDEX actions_task ON actions (task_id, id)",
        "CREATE TABLE users (id {serial}, username TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,"
        " created {real} NOT NULL)",
        "CREATE TABLE memberships (user_id {bigint} NOT NULL REFERENCES users(id),"
        " organization_id {bigint} NOT NULL REFERENCES organizations(id), PRIMARY KEY (user_id, organization_id))",
        "CREATE TABLE tokens (id {serial}, key_hash TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL,"
        " organization_id {bigint} NOT NULL REFERENCES organizations(id), user_id {bigint} REFERENCES users(id),"
        " name TEXT NOT NULL DEFAULT '', created {real} NOT NULL, revoked {real})",
    ],
    # 2: the outbox of action firings, written in the task's transaction and delivered by the server
    [
        "CREATE TABLE action_firings (id {serial},"
        " action_id {bigint} NOT NULL REFERENCES actions(id) ON DELETE CASCADE,"
        " task_id {bigint} NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,"
        " point TEXT NOT NULL, payload TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending',"
        " attempts INTEGER NOT NULL DEFAULT 0, next_attempt {real} NOT NULL, last_error TEXT,"
        " created {real} NOT NULL, updated {real} NOT NULL)",
        "CREATE INDEX action_firings_due ON action_firings (state, next_attempt)",
    ],
    # 3: a client's key for a create, so a create retried after a lost answer finds the task it made
    [
        "ALTER TABLE tasks ADD COLUMN idempotency_key TEXT",
        "CREATE UNIQUE INDEX tasks_idempotency ON tasks (project_id, idempotency_key)",
    ],
    # 4: task references (the key above is a task's ref): born = 0 marks a placeholder made by a write by
    # reference that arrived before the create; and a client's key for an action, so a retried POST adds one
    [
        "ALTER TABLE tasks ADD COLUMN born INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE actions ADD COLUMN idempotency_key TEXT",
        "CREATE UNIQUE INDEX actions_idempotency ON actions (task_id, idempotency_key)",
    ],
    # 5: each project's secret for signing its webhook deliveries (made when first needed)
    [
        "ALTER TABLE projects ADD COLUMN webhook_secret TEXT",
    ],
    # 6: the dashboard's: the index "changed since" walks, sign-in sessions, its secret, a project setting
    list(DASHBOARD_MIGRATION),
    # 7: progress updates that touch no index. A PostgreSQL row whose indexed columns did not change is
    # updated in place (HOT): no new entry in each of the table's indexes, where most of a progress update's
    # cost in the database went. ``updated`` was in two indexes: the sweeper's, which filters on status alone
    # (its test on ``updated`` is an expression), and the live feed's, which on PostgreSQL now walks the minute
    # a task last changed in (a generated column, the same for every update of a task within that minute).
    # Room left in each page lets the new version of a row stay on its page, which HOT needs.
    # (The indexes go before the column, whose rewrite of the table would rebuild them, and the room is set
    # before it too, so that the rows it writes again have room. Generated columns: PostgreSQL 12 and later.)
    [
        "DROP INDEX tasks_running",
        ("postgresql", "DROP INDEX tasks_updated"),
        ("postgresql", "ALTER TABLE tasks SET (fillfactor = 80)"),
        ("postgresql", _MINUTE_COLUMN),
        "CREATE INDEX tasks_running ON tasks (status)",
        ("postgresql", "CREATE INDEX tasks_changed ON tasks (updated_minute, project_id)"),
    ],
]

LATEST = len(MIGRATIONS)


def _render(statement: Statement, cur: Cursor) -> str | None:
    d = cur.dialect
    if isinstance(statement, tuple):
        dialect, statement = statement
        if dialect != d.name:
            return None
    return statement.format(serial=d.serial, real=d.real, bigint=d.bigint)


def migrate(db: Database) -> int:
    """Bring the schema up to the last migration; returns the version it was at before."""
    with db.transaction(write=True) as cur:
        cur.dialect.lock_schema(cur.conn)
        cur.execute("CREATE TABLE IF NOT EXISTS taskreport_schema (version INTEGER NOT NULL)")
        version = cur.scalar("SELECT MAX(version) FROM taskreport_schema") or 0
        latest = len(MIGRATIONS)
        if version > latest:
            from .._errors import ConfigurationError

            raise ConfigurationError(
                f"the store's schema is version {version}, newer than this taskreport ({latest}): upgrade taskreport"
            )
        for number in range(version + 1, latest + 1):
            for statement in MIGRATIONS[number - 1]:
                sql = _render(statement, cur)
                if sql is not None:
                    cur.execute(sql)
            cur.execute("INSERT INTO taskreport_schema (version) VALUES (?)", (number,))
    return int(version)
