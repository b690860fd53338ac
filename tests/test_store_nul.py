"""A NUL character in a lookup on a PostgreSQL store (an id, a filter), whose text can not hold one: invalid
input, said so, rather than a driver error that callers take for an unreachable database and retry."""

from __future__ import annotations

from pathlib import Path

import pytest

import taskreport


@pytest.mark.postgres
def test_nul_in_a_lookup_on_postgresql_is_a_validation_error(postgres_url: str, tmp_path: Path) -> None:
    client = taskreport.Client(taskreport.Config(url=postgres_url, home=tmp_path, spool=False))
    try:
        for lookup in (lambda: client.get_task("a\x00b"), lambda: list(client.list_tasks(name="a\x00"))):
            with pytest.raises(taskreport.ValidationError) as raised:
                lookup()
            assert raised.value.code == "null_characters_not_allowed"
        # the store is still usable: nothing was left half done on the connection
        assert list(client.list_tasks(name="a")) == []
    finally:
        client.close(timeout=0)
