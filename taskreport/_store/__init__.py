"""The task store: SQLite by default, PostgreSQL by URL; shared by embedded mode and the server.

Use it through transactions, so that several calls commit together::

    store = open_store("/tmp/tasks.db")
    with store.transaction() as tx:
        scope = tx.ensure_project("local", "default")
        task = tx.create_task(scope, {"name": "job"})
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ._accounts import AccountOps, TokenInfo, check_password, hash_password, hash_token
from ._db import Cursor, Database, Row, dialect_for
from ._migrations import LATEST as SCHEMA_VERSION
from ._migrations import migrate
from ._tasks import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page, Scope, TaskOps

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "SCHEMA_VERSION",
    "Page",
    "Row",
    "Scope",
    "Store",
    "TokenInfo",
    "Tx",
    "check_password",
    "hash_password",
    "hash_token",
    "open_store",
]


class Tx(TaskOps, AccountOps):
    """Every store operation, bound to one open transaction."""

    def __init__(self, cur: Cursor) -> None:
        self.cur = cur


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.db = Database(dialect_for(url))
        migrate(self.db)

    @property
    def dialect(self) -> str:
        return self.db.dialect.name

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Tx]:
        """One transaction; ``write=False`` for reads, which never wait for a writer."""
        with self.db.transaction(write) as cur:
            yield Tx(cur)

    def close(self) -> None:
        self.db.close()

    def __repr__(self) -> str:
        # a PostgreSQL URL may carry a password
        return f"<Store {self.dialect}>"


def open_store(url: str) -> Store:
    """Open (creating and migrating as needed) the store at ``url``: a path, ``sqlite:///path`` or
    ``postgresql://...``."""
    return Store(url)
