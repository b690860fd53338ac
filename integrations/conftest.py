"""The end-to-end suite: no client left behind by a test, and the Celery modules (each a group of tests sharing
one real worker, run on one xdist worker) collected first, so that their long, mostly waiting runs overlap the
rest of the suite instead of trailing it (the 1,000-task run, marked ``load``, first of all)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# scrypt at its real cost (128 MiB, a quarter second a hash) buys a test suite nothing: servers and users are
# made by the hundred here. The tests of the cost itself remove this.
os.environ.setdefault("TASKREPORT_SCRYPT_N", "1024")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def order(item: pytest.Item) -> int:
        if item.get_closest_marker("load") is not None:
            return 0
        return 1 if item.path.name.startswith("test_celery") else 2

    items.sort(key=order)


@pytest.fixture(autouse=True)
def no_client_left() -> Iterator[None]:
    yield
    import taskreport

    taskreport.shutdown(timeout=2)
