"""From a store URL (or a path) to the dialect that opens it."""

from __future__ import annotations

from pathlib import Path

from .._errors import ConfigurationError
from ._db import Dialect, SQLiteDialect
from ._postgres import PostgresDialect


def dialect_for(url: str, pool_size: int = 10) -> Dialect:
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDialect(url, pool_size)
    if url.startswith("sqlite://"):
        # sqlite:///abs/path.db, as SQLAlchemy spells it (sqlite:////abs/path.db works too)
        path = url[len("sqlite://") :]
        return SQLiteDialect(Path("/" + path.lstrip("/")) if path.startswith("/") else Path(path))
    if "://" in url:
        raise ConfigurationError(f"unsupported store URL scheme: {url.split('://', 1)[0]}://")
    return SQLiteDialect(Path(url).expanduser())
