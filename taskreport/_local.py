"""The embedded transport: tasks go straight into a store on this machine (SQLite by default)."""

from __future__ import annotations

import sqlite3
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from ._errors import TaskReportError, TransportError, ValidationError
from ._store import Scope, Store, Tx, bulk_qualifies, open_store
from ._transport import Op, PageResult, Row


def _data_errors() -> tuple[type[BaseException], ...]:
    """Errors that say the data is wrong, not that the database is unavailable."""
    errors: list[type[BaseException]] = [sqlite3.IntegrityError, sqlite3.DataError]
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        errors += [psycopg.IntegrityError, psycopg.DataError]
    return tuple(errors)


def _driver_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [sqlite3.Error]
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        errors.append(psycopg.Error)
    return tuple(errors)


@contextmanager
def database_errors(where: str) -> Iterator[None]:
    """A database that can't be opened or written (locked, disk full, server down) is an unreachable
    service to the caller: the flusher retries it and the CLI says so in one line."""
    try:
        yield
    except _driver_errors() as exc:
        shown = where if "://" not in where else where.split("://", 1)[0] + "://…"
        raise TransportError(f"store {shown}: {type(exc).__name__}: {exc}") from exc


class LocalTransport:
    """Writes to a store directly. The store is opened on first use, not at import or init."""

    def __init__(self, store_url: str, organization: str, project: str) -> None:
        self.store_url = store_url
        self.organization = organization
        self.project = project
        self._store: Store | None = None
        self._scope: Scope | None = None
        self._lock = threading.Lock()
        self._busy_default: float | None = None

    def __repr__(self) -> str:
        return f"<LocalTransport {self.organization}/{self.project}>"

    def _open(self) -> tuple[Store, Scope]:
        store, scope = self._store, self._scope
        if store is not None and scope is not None:
            return store, scope
        with self._lock, database_errors(self.store_url):
            if self._store is None or self._scope is None:
                store = open_store(self.store_url)
                with store.transaction() as tx:
                    self._scope = tx.ensure_project(self.organization, self.project)
                self._store = store
            return self._store, self._scope

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[tuple[Tx, Scope]]:
        store, scope = self._open()
        with database_errors(self.store_url), store.transaction(write) as tx:
            yield tx, scope

    refs: bool | None = True
    #: a round's changes in one transaction, however many: no request size to keep under
    max_ops = 100_000

    def send(self, ops: Sequence[Op]) -> list[Row | TaskReportError]:
        results: list[Row | TaskReportError | None] = [None] * len(ops)
        # one transaction for the whole round: progress of known tasks in bulk, every other op on its own,
        # a bad one rolled back alone with a savepoint
        with self._tx() as (tx, scope):
            bulk = [(i, op) for i, op in enumerate(ops)
                    if op.kind == "update" and op.task_id is not None and bulk_qualifies(op.fields)]
            if bulk:
                written = tx.update_values(scope, [(str(op.task_id), op.fields) for _, op in bulk])
                for i, op in bulk:
                    if op.task_id in written:
                        results[i] = {"id": op.task_id, "ref": op.ref}
            for i, op in enumerate(ops):
                if results[i] is None:
                    results[i] = self._apply(tx, scope, i, op)
        return [r for r in results if r is not None]

    @staticmethod
    def _apply(tx: Tx, scope: Scope, i: int, op: Op) -> Row | TaskReportError:
        tx.cur.execute(f"SAVEPOINT op{i}")
        try:
            if op.kind == "create":
                row = tx.create_task(scope, op.fields, idempotency_key=op.ref, parent_ref=op.parent_ref)
            elif op.task_id is not None:
                row = tx.update_task(scope, op.task_id, op.fields, merge=True)
            else:
                assert op.ref is not None
                row = tx.update_task_by_ref(scope, op.ref, op.fields, parent_ref=op.parent_ref, merge=True)
        except TaskReportError as exc:
            tx.cur.execute(f"ROLLBACK TO SAVEPOINT op{i}")
            return exc
        except _data_errors() as exc:
            # the database refuses this op's data (it always will): drop it, keep the others
            tx.cur.execute(f"ROLLBACK TO SAVEPOINT op{i}")
            return ValidationError(f"the store refused it: {type(exc).__name__}: {exc}")
        finally:
            tx.cur.execute(f"RELEASE SAVEPOINT op{i}")
        return {"id": row["id"], "ref": row.get("ref")}

    def create_task(self, fields: Mapping[str, Any], idempotency_key: str | None = None) -> Row:
        with self._tx() as (tx, scope):
            return tx.create_task(scope, fields, idempotency_key=idempotency_key)

    def get_task(self, task_id: str) -> Row:
        with self._tx(write=False) as (tx, scope):
            return tx.get_task(scope, task_id)

    def update_task(self, task_id: str, fields: Mapping[str, Any]) -> Row:
        with self._tx() as (tx, scope):
            return tx.update_task(scope, task_id, fields)

    def cancel_task(self, task_id: str) -> None:
        with self._tx() as (tx, scope):
            tx.cancel_task(scope, task_id)

    def list_tasks(self, filters: Mapping[str, Any], cursor: str | None, page_size: int | None) -> PageResult:
        with self._tx(write=False) as (tx, scope):
            page = tx.list_tasks(scope, cursor=cursor, page_size=page_size, **filters)
        return PageResult(page.results, page.next_cursor, page.previous_cursor)

    def list_actions(self, task_id: str) -> list[Row]:
        with self._tx(write=False) as (tx, scope):
            return tx.list_actions(scope, task_id)

    def create_action(self, task_id: str, fields: Mapping[str, Any], idempotency_key: str | None = None) -> Row:
        with self._tx() as (tx, scope):
            return tx.create_action(scope, task_id, fields, idempotency_key=idempotency_key)

    def update_action(self, task_id: str, action_id: int, fields: Mapping[str, Any]) -> Row:
        with self._tx() as (tx, scope):
            return tx.update_action(scope, task_id, action_id, fields)

    def cancel_action(self, task_id: str, action_id: int) -> None:
        with self._tx() as (tx, scope):
            tx.cancel_action(scope, task_id, action_id)

    def set_timeout(self, seconds: float | None) -> None:
        """Local writes wait for SQLite's lock only as long as the caller can; None restores the default."""
        if self._store is None or self._store.dialect != "sqlite":
            return
        dialect = self._store.db.dialect
        if self._busy_default is None:
            self._busy_default = float(dialect.busy_timeout)  # type: ignore[attr-defined]
        wait = self._busy_default if seconds is None else min(self._busy_default, max(0.05, seconds))
        dialect.busy_timeout = wait  # type: ignore[attr-defined]
        with self._store.transaction(write=False) as tx:
            tx.cur.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")

    def after_fork(self) -> None:
        # another thread of the parent may have held the lock at the fork; the store's connection pool
        # notices the new pid by itself
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
