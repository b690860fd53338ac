"""A schema of a test's own on the PostgreSQL at 127.0.0.1:5432 (``TASKREPORT_TEST_PG`` names another), for the
unit tests' ``postgres_url`` fixture and the end-to-end suites alike; and whether a local service is up."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Iterator

import pytest

PG_DSN = os.environ.get("TASKREPORT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def postgres_schema(prefix: str) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema named ``prefix_<random>``, dropped afterwards with any
    connection still open to it (a killed server's); skips the test when PostgreSQL or psycopg is missing."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'taskreport[postgres]')")
    if not reachable("127.0.0.1", 5432):
        pytest.skip("no PostgreSQL server at 127.0.0.1:5432")
    schema = f"{prefix}_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 refused the test database: {exc}")
    sep = "&" if "?" in PG_DSN else "?"
    try:
        # application_name marks this test's connections, so that the drop can end any still open
        yield f"{PG_DSN}{sep}options=-csearch_path%3D{schema}&application_name={schema}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            for attempt in range(5):
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                             (schema,))  # fmt: skip
                try:
                    conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
                    break
                except psycopg.errors.DeadlockDetected:
                    # a backend being ended still held its locks: end it again, then drop
                    if attempt == 4:
                        raise
