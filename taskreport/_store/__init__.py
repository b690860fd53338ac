"""The task store: SQLite by default, PostgreSQL by URL; shared by embedded mode and the server.

Use it through transactions, so that several calls commit together::

    store = open_store("/tmp/tasks.db")
    with store.transaction() as tx:
        scope = tx.ensure_project("local", "default")
        task = tx.create_task(scope, {"name": "job"}, idempotency_key="job-7f3a9c0e1d2b4a5f")
        tx.update_task_by_ref(scope, "job-7f3a9c0e1d2b4a5f", {"value": 10})

What a :class:`Tx` offers:

- tasks (``_tasks``): ``create_task(scope, fields, idempotency_key=ref, parent_ref=None)``,
  ``update_task(scope, id, fields, parent_ref=None)``, ``update_task_by_ref(scope, ref, fields,
  parent_ref=None)``, ``get_task``, ``cancel_task``, ``sweep``; the reference rules are in ``_refs``;
- listing (``_listing``): ``list_tasks(scope, status=, name=, tag=, parent=, external_id=, ref=, cursor=,
  page_size=)``;
- actions (``_actions``): ``list_actions``, ``create_action(..., idempotency_key=K)``, ``get_action``,
  ``update_action``, ``cancel_action``;
- accounts (``_accounts``): organizations, projects, users, tokens, webhook secrets;
- the outbox of action firings (``_outbox``): ``has_due_firings``, ``claim_firings``, ``record_attempt``;
- progress in bulk (``_bulk``): ``update_values(scope, [(id, {"value": n}), ...])`` for many tasks at once;
- ``savepoint()``: a block that, if it raises, is undone alone while the transaction goes on.

Outside transactions, on PostgreSQL, ``store.async_progress`` writes progress updates from an event loop
(``_aio``): the server's commonest write without a writer thread.

``fields`` are validated first (:mod:`taskreport._validation`); every operation raises
:class:`~taskreport.ValidationError` (naming the field) or :class:`~taskreport.NotFound` for what it refuses.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from . import _bulk
from ._accounts import TOKEN_PREFIX, AccountOps, TokenInfo
from ._actions import ActionOps
from ._aio import AsyncProgress
from ._db import Cursor, Database, Row
from ._listing import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MAX_TAG_FILTERS, ListingOps
from ._migrations import LATEST as SCHEMA_VERSION
from ._migrations import migrate
from ._outbox import OutboxOps
from ._passwords import check_password, hash_password, hash_token, scrypt_n
from ._rows import Page, Scope, TaskRow, scrub, task_out
from ._tasks import TaskOps
from ._urls import dialect_for

bulk_qualifies = _bulk.qualifies

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "MAX_TAG_FILTERS",
    "SCHEMA_VERSION",
    "TOKEN_PREFIX",
    "AsyncProgress",
    "Page",
    "Row",
    "Scope",
    "Store",
    "TaskRow",
    "TokenInfo",
    "Tx",
    "bulk_qualifies",
    "check_password",
    "hash_password",
    "hash_token",
    "open_store",
    "scrub",
    "scrypt_n",
]


class Tx(TaskOps, ListingOps, ActionOps, AccountOps, OutboxOps):
    """Every store operation, bound to one open transaction."""

    def __init__(self, cur: Cursor) -> None:
        self.cur = cur
        self._savepoints = itertools.count()

    @property
    def fired(self) -> int:
        """Action firings this transaction has queued so far."""
        return self.cur.fired

    def conflict(self, exc: BaseException) -> bool:
        """True when ``exc`` is a clash with a concurrent transaction (see :meth:`Store.conflict`): the whole
        transaction is lost and must be run again, so no savepoint may swallow it."""
        return self.cur.dialect.conflict(exc)

    def update_values(self, scope: Scope, items: list[tuple[str, dict[str, object]]]) -> set[str]:
        """Progress in bulk (see ``_bulk``): writes the items that qualify, returns their ids."""
        return _bulk.update_values(self.cur, scope, items)

    def update_progress(self, scope: Scope, task_id: str, fields: Mapping[str, object]) -> TaskRow | None:
        """A change of ``value``/``value_max`` alone, to a task with no live action, in one statement (as
        ``update_task`` would write it); None when it does not qualify, for ``update_task`` to do."""
        if not self.progress_only(fields):
            return None
        row = _bulk.update_one(self.cur, scope, task_id, fields, time.time())
        return None if row is None else task_out(row, scope)

    def update_progress_many(self, scope: Scope, items: list[tuple[str, Mapping[str, object]]]) -> dict[str, TaskRow]:
        """Several tasks' progress (distinct ids, each qualifying as for ``update_progress``) in one statement
        per set of columns: the rows written, by id. The ids absent were not written (unknown, or a task with a
        live action): ``update_task`` does those."""
        rows = _bulk.update_returning(self.cur, scope, items, time.time())
        return {task_id: task_out(row, scope) for task_id, row in rows.items()}

    @staticmethod
    def progress_only(fields: Mapping[str, object]) -> bool:
        """True when ``fields`` are a change ``update_progress`` can write (``value``/``value_max``, integers)."""
        return _bulk.qualifies(fields) and all(type(v) is int for v in fields.values())

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Run a block so that an exception undoes only what the block did (and is raised on)."""
        name = f"sp{next(self._savepoints)}"
        self.cur.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.cur.execute(f"ROLLBACK TO SAVEPOINT {name}")
            self.cur.execute(f"RELEASE SAVEPOINT {name}")
            raise
        self.cur.execute(f"RELEASE SAVEPOINT {name}")


class Store:
    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.db = Database(dialect_for(url, pool_size))
        #: progress updates from an event loop, on PostgreSQL (see ``_aio``); None elsewhere
        self.async_progress = AsyncProgress(url) if self.db.dialect.name == "postgresql" else None
        try:
            migrate(self.db)
        except BaseException:
            # nobody gets this store to close: its connections (on PostgreSQL a pool and its threads) go now
            self.db.close()
            raise

    @property
    def dialect(self) -> str:
        return self.db.dialect.name

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Tx]:
        """One transaction; ``write=False`` for reads, which never wait for a writer."""
        with self.db.transaction(write) as cur:
            yield Tx(cur)

    @contextmanager
    def statement(self) -> Iterator[Tx]:
        """A :class:`Tx` for one write statement (``update_progress``, ``update_progress_many`` with one set of
        columns), committed by the statement itself: on PostgreSQL no BEGIN and COMMIT round trips. Nothing in
        it may take a savepoint. On SQLite it is an ordinary write transaction."""
        with self.db.statement() as cur:
            yield Tx(cur)

    def conflict(self, exc: BaseException) -> bool:
        """True when ``exc`` is a clash with a concurrent transaction (a deadlock, a serialization failure),
        so that the same work run again can succeed."""
        return self.db.dialect.conflict(exc)

    def connection_lost(self, exc: BaseException) -> bool:
        """True when ``exc`` says the connection to the database went away (a restart): a new transaction
        takes a new connection."""
        return self.db.dialect.connection_lost(exc)

    def close(self) -> None:
        if self.async_progress is not None:
            self.async_progress.close()
        self.db.close()

    def __repr__(self) -> str:
        # a PostgreSQL URL may carry a password
        return f"<Store {self.dialect}>"


def open_store(url: str, *, pool_size: int = 10) -> Store:
    """Open (creating and migrating as needed) the store at ``url``: a path, ``sqlite:///path`` or
    ``postgresql://...``. ``pool_size`` bounds the connections a process opens to PostgreSQL."""
    return Store(url, pool_size=pool_size)
