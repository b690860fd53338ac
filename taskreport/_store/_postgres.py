"""The PostgreSQL dialect: connections lent by a pool per process."""

from __future__ import annotations

import functools
import os
import threading
from typing import Any

from .._errors import ConfigurationError
from ._db import Dialect

#: pools a forked child inherited: the parent's, never used or closed here (see _current_pool)
_ABANDONED: list[Any] = []


@functools.lru_cache(maxsize=1024)
def numbered(query: str) -> bytes:
    """The store's statement (``?`` placeholders; none inside its literals) with PostgreSQL's own ``$1``,
    ``$2``...: for a raw cursor, which passes the text as it is (see :meth:`PostgresDialect.sql` for psycopg's)."""
    parts = query.split("?")
    return "".join(f"{part}${n}" for n, part in enumerate(parts[:-1], start=1)).encode() + parts[-1].encode()


class PostgresDialect(Dialect):
    """PostgreSQL through a psycopg_pool pool per process: a server runs many threads (its writers, the
    thread pool that serves reads) and several processes, and a connection per thread would multiply past
    the database's ``max_connections``; a bounded pool lends one per transaction instead."""

    name = "postgresql"
    serial = "BIGSERIAL PRIMARY KEY"
    real = "DOUBLE PRECISION"
    pooled = True

    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.url = url
        self.pool_size = max(1, pool_size)
        try:
            import psycopg  # noqa: F401
            import psycopg_pool  # noqa: F401
        except ImportError:  # pragma: no cover - depends on the environment
            raise ConfigurationError(
                "a postgresql:// store needs psycopg and psycopg_pool: pip install 'taskreport[postgres]'"
            ) from None
        self._pool: Any = None
        self._pid = os.getpid()
        self._pool_lock = threading.Lock()

    def sql(self, query: str) -> str:
        # a literal % in SQL (LIKE 'x%') would otherwise be read by psycopg as a placeholder
        return query.replace("%", "%%").replace("?", "%s")

    def connect(self) -> Any:
        import psycopg
        from psycopg.rows import dict_row

        return psycopg.connect(self.url, autocommit=True, row_factory=dict_row)

    def _current_pool(self) -> Any:
        if self._pid != os.getpid():
            # after fork: the parent's pool (its sockets, its threads, which do not exist here) is the
            # parent's; closing it here would end the parent's sessions, so it is kept and never used
            if self._pool is not None:
                _ABANDONED.append(self._pool)
            self._pool = None
            self._pool_lock = threading.Lock()
            self._pid = os.getpid()
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    from psycopg.rows import dict_row
                    from psycopg_pool import ConnectionPool

                    self._pool = ConnectionPool(
                        self.url,
                        min_size=1,
                        max_size=self.pool_size,
                        kwargs={"autocommit": True, "row_factory": dict_row},
                        name="taskreport",
                        open=True,
                    )
        return self._pool

    def acquire(self) -> Any:
        return self._current_pool().getconn()

    def release(self, conn: Any) -> None:
        # the pool discards a closed or broken connection and makes a new one in the background
        self._current_pool().putconn(conn)

    def recover(self) -> None:
        # checks each idle connection (one round trip each) and replaces those that are gone
        self._current_pool().check()

    def close(self) -> None:
        if self._pool is not None and self._pid == os.getpid():
            pool, self._pool = self._pool, None
            pool.close()

    def begin(self, conn: Any, write: bool) -> None:
        conn.execute("BEGIN")

    def lock_schema(self, conn: Any) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(7346215)")

    def try_exclusive(self, conn: Any, key: int) -> bool:
        row = conn.execute("SELECT pg_try_advisory_xact_lock(%s) AS taken", (key,)).fetchone()
        return bool(row["taken"])

    def disconnected(self, conn: Any, exc: BaseException) -> bool:
        return bool(conn.closed) or self.connection_lost(exc)

    def connection_lost(self, exc: BaseException) -> bool:
        import psycopg

        return isinstance(exc, psycopg.OperationalError)

    def conflict(self, exc: BaseException) -> bool:
        from psycopg import errors

        # LockNotAvailable: a lock waited on past lock_timeout (the event loop's progress connection sets one)
        return isinstance(exc, errors.DeadlockDetected | errors.SerializationFailure | errors.LockNotAvailable)
