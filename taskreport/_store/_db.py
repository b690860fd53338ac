"""Connections and transactions for SQLite and PostgreSQL behind one small interface.

SQL is written once with ``?`` placeholders; the PostgreSQL dialect rewrites them. Connections are kept per
thread and per process: a forked child (Celery prefork) opens its own instead of sharing its parent's socket
or file handle.
"""

from __future__ import annotations

import abc
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .._errors import ValidationError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: SQLite's own busy handler only
    fcntl = None  # type: ignore[assignment]
from ._forkgate import GATE

Row = dict[str, Any]
#: connections a forked child inherited; see Database.connection
_INHERITED: list[Any] = []


class Dialect(abc.ABC):
    """What differs between the databases: connecting, placeholders, transactions, column types."""

    name = "base"
    serial = ""
    real = ""
    bigint = "BIGINT"

    def sql(self, query: str) -> str:
        return query

    @abc.abstractmethod
    def connect(self) -> Any: ...

    @abc.abstractmethod
    def begin(self, conn: Any, write: bool) -> None: ...

    def commit(self, conn: Any) -> None:
        conn.execute("COMMIT")

    def rollback(self, conn: Any) -> None:
        conn.execute("ROLLBACK")

    def lock_schema(self, conn: Any) -> None:  # noqa: B027 - optional: SQLite's BEGIN IMMEDIATE already does it
        """Serialise migrations between processes opening the same database at once."""

    def try_exclusive(self, conn: Any, key: int) -> bool:
        """Take, for the rest of this write transaction, a lock no other process holds, or say it is taken.
        SQLite's write transactions are exclusive already."""
        return True

    def disconnected(self, conn: Any, exc: BaseException) -> bool:
        """True when ``exc`` means the connection is gone (so a new one may be tried)."""
        return False

    def conflict(self, exc: BaseException) -> bool:
        """True when ``exc`` is a clash with a concurrent transaction (a deadlock, a serialization failure, a
        lock not had in time): the same work, run again alone, can succeed."""
        return False

    def connection_lost(self, exc: BaseException) -> bool:
        """True when ``exc`` says the connection went away (any connection's: no connection needed)."""
        return False

    #: connections come from a pool, one per transaction, instead of one per thread
    pooled = False

    def acquire(self) -> Any:
        """A connection for one transaction (a pool of none: a new one)."""
        return self.connect()

    def release(self, conn: Any) -> None:
        conn.close()

    def recover(self) -> None:  # noqa: B027 - only a pooled dialect keeps idle connections
        """After a connection was found gone: drop the others that went with it (a server restart ends all)."""

    def close(self) -> None:  # noqa: B027 - only a pooled dialect holds anything
        """Close what the dialect holds beyond per-thread connections."""


class _SQLiteConnection(sqlite3.Connection):
    """A connection that also holds the fd of its database's writers' lock file."""

    writer_lock: int | None = None

    def close(self) -> None:
        fd, self.writer_lock = self.writer_lock, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        super().close()


class SQLiteDialect(Dialect):
    """SQLite in WAL mode. Writers queue on an ``flock`` of a lock file beside the database before they
    begin: SQLite's own busy handler sleeps and retries, so under load one process can lose the race again
    and again (seen: a process starved for 30 s among six busy ones, then "database is locked"). A blocked
    ``flock`` sleeps in the kernel and wakes as soon as the lock is free."""

    name = "sqlite"
    serial = "INTEGER PRIMARY KEY AUTOINCREMENT"
    real = "REAL"
    #: while busy_timeout is at least this, writers wait on the lock without a deadline (a writer holds it
    #: for one transaction); a shorter one (an exit with a deadline) polls until it runs out
    PATIENT = 30.0

    def __init__(self, path: Path, busy_timeout: float = 30.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout

    def connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN ourselves, so writers can take the lock up front
        conn = sqlite3.connect(
            str(self.path),
            timeout=self.busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            factory=_SQLiteConnection,
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        if fcntl is not None:
            lock_path = self.path.with_name(self.path.name + "-writers.lock")
            conn.writer_lock = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return conn

    def _lock(self, conn: Any) -> None:
        fd = getattr(conn, "writer_lock", None)
        if fd is None or fcntl is None:
            return
        if self.busy_timeout >= self.PATIENT:
            fcntl.flock(fd, fcntl.LOCK_EX)  # sleeps in the kernel, without the GIL
            return
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise sqlite3.OperationalError("database is locked (another writer, past the deadline)") from None
                time.sleep(0.005)

    @staticmethod
    def _unlock(conn: Any) -> None:
        fd = getattr(conn, "writer_lock", None)
        if fd is not None and fcntl is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)

    def begin(self, conn: Any, write: bool) -> None:
        if not write:
            conn.execute("BEGIN")
            return
        self._lock(conn)
        try:
            # IMMEDIATE takes SQLite's write lock at BEGIN: a deferred transaction that reads and then writes
            # fails with SQLITE_BUSY at once when another process wrote meanwhile, without waiting
            conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._unlock(conn)
            raise

    def commit(self, conn: Any) -> None:
        try:
            conn.execute("COMMIT")
        finally:
            self._unlock(conn)

    def rollback(self, conn: Any) -> None:
        try:
            conn.execute("ROLLBACK")
        finally:
            self._unlock(conn)


class Database:
    """Transactions on a connection per thread (SQLite) or lent by the dialect's pool (PostgreSQL), aware of
    threads and of fork."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._local = threading.local()
        self._all: list[Any] = []
        self._all_lock = threading.Lock()
        # connections inside a transaction (by id), and those of them that close() left to their thread: closing
        # a SQLite connection while another thread runs a statement on it crashes the process (sqlite3 frees
        # what the statement still uses), which an exit whose last delivery round still writes would do
        self._busy: set[int] = set()
        self._orphans: set[int] = set()
        self._pid = os.getpid()

    def connection(self) -> Any:
        self._forget_parent()
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.dialect.connect()
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def _forget_parent(self) -> None:
        if self._pid != os.getpid():
            # after fork: the parent's connections belong to the parent. Closing one here (even by garbage
            # collection) would run SQLite's close in the child against the parent's locks and WAL, so they
            # are kept referenced and never used or closed.
            _INHERITED.extend(self._all)
            self._local = threading.local()
            self._all = []
            self._all_lock = threading.Lock()
            self._busy, self._orphans = set(), set()
            self._pid = os.getpid()

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Cursor]:
        with GATE.passage(), self._transaction(write) as cur:
            yield cur

    @contextmanager
    def statement(self) -> Iterator[Cursor]:
        """A cursor for one write statement, which commits on its own. On a pooled dialect (PostgreSQL) that
        is the connection's autocommit, without the BEGIN and COMMIT round trips; one statement is atomic
        anyway. Elsewhere, and inside a transaction, it is an ordinary write transaction."""
        depth: int = getattr(self._local, "depth", 0)
        self._refuse_inside_statement()
        if depth or not self.dialect.pooled:
            with self.transaction(write=True) as cur:
                yield cur
            return
        with GATE.passage():
            conn = self._checkout()
            # a transaction begun inside would take another connection and commit apart from this one
            self._local.statement = True
            try:
                yield Cursor(conn, self.dialect, True)
            except BaseException as exc:
                if self.dialect.disconnected(conn, exc):
                    # as a transaction that finds its connection gone: the pool's others likely went with it
                    self._drop(conn)
                    self.dialect.recover()
                else:
                    self._checkin(conn)
                raise
            finally:
                self._local.statement = False
            self._checkin(conn)

    def _refuse_inside_statement(self) -> None:
        if getattr(self._local, "statement", False):
            raise RuntimeError("a transaction or statement inside Store.statement(): it takes no other")

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[Cursor]:
        self._refuse_inside_statement()
        depth = getattr(self._local, "depth", 0)
        conn = self.connection() if depth or not self.dialect.pooled else self._checkout()
        if depth:
            # nested use (a store call inside a batch) joins the outer transaction
            self._local.depth = depth + 1
            try:
                yield Cursor(conn, self.dialect, getattr(self._local, "write", write))
            finally:
                self._local.depth = depth
            return
        if self.dialect.pooled:
            # lent by a pool, which close() leaves to the dialect: nothing to keep track of
            with self._outermost(conn, write) as cur:
                yield cur
            return
        with self._all_lock:
            self._busy.add(id(conn))
        try:
            with self._outermost(conn, write) as cur:
                yield cur
        finally:
            with self._all_lock:
                self._busy.discard(id(conn))
                orphan = id(conn) in self._orphans
                self._orphans.discard(id(conn))
            if orphan:
                with contextlib.suppress(Exception):
                    conn.close()

    @contextmanager
    def _outermost(self, conn: Any, write: bool) -> Iterator[Cursor]:
        try:
            self.dialect.begin(conn, write)
        except Exception as exc:
            if not self.dialect.disconnected(conn, exc):
                raise
            # a connection the server closed (restart, idle timeout, admin) fails here first: nothing was
            # done yet, so a fresh connection can safely take over; if that fails too, the error stands
            self._drop(conn)
            self.dialect.recover()
            conn = self.connection() if not self.dialect.pooled else self._checkout()
            try:
                self.dialect.begin(conn, write)
            except BaseException:
                self._drop(conn)
                raise
        self._local.depth = 1
        self._local.write = write
        try:
            yield Cursor(conn, self.dialect, write)
        except BaseException:
            self._local.depth = 0
            try:
                self.dialect.rollback(conn)
            except Exception:  # pragma: no cover - the connection is gone; the error that got us here matters
                self._drop(conn)
            else:
                self._checkin(conn)
            raise
        self._local.depth = 0
        try:
            self.dialect.commit(conn)
        except BaseException:
            self._drop(conn)
            raise
        self._checkin(conn)

    def _checkout(self) -> Any:
        self._forget_parent()
        conn = self.dialect.acquire()
        self._local.conn = conn
        return conn

    def _checkin(self, conn: Any) -> None:
        if self.dialect.pooled:
            self._local.conn = None
            self.dialect.release(conn)

    def _drop(self, conn: Any) -> None:
        self._local.conn = None
        if self.dialect.pooled:
            with contextlib.suppress(Exception):
                conn.close()
            self.dialect.release(conn)
            return
        with self._all_lock:
            self._all = [c for c in self._all if c is not conn]
        with contextlib.suppress(Exception):
            conn.close()

    def close(self) -> None:
        """Close every connection; one that another thread is using in a transaction is closed by that
        thread when the transaction ends."""
        with GATE.passage():
            with self._all_lock:
                conns, self._all = self._all, []
                busy = {id(conn) for conn in conns} & self._busy
                self._orphans |= busy
            for conn in conns:
                if id(conn) not in busy:
                    with contextlib.suppress(Exception):
                        conn.close()
            self.dialect.close()
        self._local = threading.local()


class Cursor:
    """Executes dialect-neutral SQL on one connection inside a transaction."""

    __slots__ = ("conn", "dialect", "fired", "write")

    def __init__(self, conn: Any, dialect: Dialect, write: bool = True) -> None:
        self.conn = conn
        self.dialect = dialect
        #: action firings this transaction queued, so that a committer wakes the deliverer only for them
        self.fired = 0
        #: reads in a write transaction lock what they read (PostgreSQL), so read-modify-write is safe
        self.write = write

    def execute(self, query: str, params: Sequence[Any] = ()) -> Any:
        if self.dialect.name == "postgresql":
            _refuse_nul(params)
        return self.conn.execute(self.dialect.sql(query), tuple(params))

    def executemany(self, query: str, params: Sequence[Sequence[Any]]) -> int:
        """Run one statement for each set of parameters; returns the rows they changed in all."""
        if self.dialect.name == "sqlite":
            return int(self.conn.executemany(self.dialect.sql(query), params).rowcount)
        for row in params:
            _refuse_nul(row)
        with self.conn.cursor() as cur:
            cur.executemany(self.dialect.sql(query), params)
            return int(cur.rowcount)

    def one(self, query: str, params: Sequence[Any] = ()) -> Row | None:
        row = self.execute(query, params).fetchone()
        return None if row is None else dict(row)

    def all(self, query: str, params: Sequence[Any] = ()) -> list[Row]:
        return [dict(r) for r in self.execute(query, params).fetchall()]

    def scalar(self, query: str, params: Sequence[Any] = ()) -> Any:
        row = self.execute(query, params).fetchone()
        if row is None:
            return None
        return row[0] if self.dialect.name == "sqlite" else next(iter(row.values()))

    def try_exclusive(self, key: int) -> bool:
        """True if this transaction now holds the lock ``key`` (until it ends); False if another has it."""
        return self.dialect.try_exclusive(self.conn, key)

    def insert(self, query: str, params: Sequence[Any] = ()) -> int:
        """Run an INSERT and return the new row's integer key."""
        return int(self.scalar(query + " RETURNING id", params))


def _refuse_nul(params: Sequence[Any]) -> None:
    """PostgreSQL text can not hold NUL, and the driver fails the whole query on one (a server error). Stored
    text is checked when it is written; this catches the rest, such as an id or a filter taken from a request,
    as the invalid input it is."""
    for value in params:
        if isinstance(value, list):  # an array parameter: its elements are text as much as a plain one
            _refuse_nul(value)
        elif isinstance(value, str) and "\x00" in value:
            raise ValidationError("may not contain NUL characters.", code="null_characters_not_allowed")
