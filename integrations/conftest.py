"""The end-to-end suite: no client left behind by a test, and the Celery modules (each a group of tests sharing
one real worker, run on one xdist worker) and the browser tests (one Chromium) collected first, so that their
long, mostly waiting runs overlap the rest of the suite instead of trailing it (the 1,000-task run, marked
``load``, first of all)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

# scrypt at its real cost (128 MiB, a quarter second a hash) buys a test suite nothing: servers and users are
# made by the hundred here. The tests of the cost itself remove this.
os.environ.setdefault("TASKREPORT_SCRYPT_N", "1024")

# a suite started in the background by a shell without job control inherits SIGINT and SIGQUIT ignored, and so
# would every process it starts (an ignored signal survives exec): the tests of signal forwarding and of Ctrl-C
# need them as a terminal gives them
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGQUIT) == signal.SIG_IGN:
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def order(item: pytest.Item) -> int:
        if item.get_closest_marker("load") is not None:
            return 0
        return 1 if item.path.name.startswith(("test_celery", "test_dashboard_browser")) else 2

    items.sort(key=order)


@pytest.fixture(autouse=True)
def no_client_left() -> Iterator[None]:
    yield
    import taskreport

    taskreport.shutdown(timeout=2)
