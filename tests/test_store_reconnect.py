"""A store whose PostgreSQL connection was closed under it (server restart, idle timeout, an admin) carries
on with a fresh connection instead of failing from then on."""

from __future__ import annotations

import urllib.parse

import pytest

from taskreport._store import open_store


@pytest.mark.postgres
def test_store_reconnects_after_its_connection_is_killed(postgres_url: str) -> None:
    import psycopg

    store = open_store(postgres_url)
    try:
        with store.transaction() as tx:
            scope = tx.ensure_project("acme", "web")
            task = tx.create_task(scope, {"name": "before"})
        app = urllib.parse.parse_qs(urllib.parse.urlsplit(postgres_url).query)["application_name"][0]
        admin_dsn = postgres_url.split("?", 1)[0]
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s", (app,)
            ).fetchone()
        assert killed is not None and killed[0] >= 1
        with store.transaction() as tx:
            updated = tx.update_task(scope, task["id"], {"value": 5})
        assert updated["value"] == 5
    finally:
        store.close()
