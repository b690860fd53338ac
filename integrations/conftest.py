"""Collection order for the end-to-end suite: the Celery modules (each a group of tests sharing one real
worker, run on one xdist worker) go first, so that their long, mostly waiting runs overlap the rest of the
suite instead of trailing it."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: 0 if item.path.name.startswith("test_celery") else 1)
