"""Testing what your code reports: ``capture_tasks()`` and the ``taskreport_tasks`` pytest fixture.

The functions at the top are "your code"; the tests below check what it reported, in memory: no thread, no
network, and your real store or server is never touched.

Run: ``python examples/testing_your_code.py`` (it runs pytest on itself), or ``pytest examples/testing_your_code.py``.
"""

from __future__ import annotations

import logging
import sys

import pytest

import taskreport
from taskreport.integrations.logging import LoggingIntegration
from taskreport.testing import capture_tasks

log = logging.getLogger("shop")


# -- your code ---------------------------------------------------------------------------------------------
@taskreport.track(name="send-invoices", tags={"team": "billing"})
def send_invoices(customers: list[str]) -> int:
    sent = 0
    for customer in taskreport.progress(customers, name="invoice-batch"):
        if not customer:
            log.warning("a customer without an address was skipped")
            continue
        sent += 1
    return sent


@taskreport.track(name="refund")
def refund(amount: int) -> None:
    if amount <= 0:
        raise ValueError(f"cannot refund {amount}")


# -- your tests --------------------------------------------------------------------------------------------
def test_invoices_are_reported_with_their_progress(taskreport_tasks):  # type: ignore[no-untyped-def]
    assert send_invoices(["ada@example.com", "", "bob@example.com"]) == 2
    job = taskreport_tasks.get("send-invoices")
    batch = taskreport_tasks.get("invoice-batch")
    assert (job.status, job.tags) == ("success", {"team": "billing"})
    assert (batch.value, batch.value_max, batch.parent) == (3, 3, job.id)
    # the tasks as they ended: the batch first, then the job it ran in
    assert [t.name for t in taskreport_tasks] == ["invoice-batch", "send-invoices"]


def test_a_failed_refund_is_reported_as_an_error(taskreport_tasks):  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        refund(0)
    [task] = taskreport_tasks
    assert task.status == "error"
    assert task.data["exception"] == "builtins.ValueError"
    assert task.data["message"] == "cannot refund 0"


def test_log_records_on_the_task_without_the_fixture() -> None:
    # capture_tasks() works anywhere (unittest, a script); here with the logging integration on
    with capture_tasks(integrations=[LoggingIntegration(level="WARNING")]) as tasks:
        send_invoices(["", "carol@example.com"])
    batch = tasks.get("invoice-batch")
    assert [r["message"] for r in batch.data["logs"]] == ["a customer without an address was skipped"]


if __name__ == "__main__":
    # -o addopts="": this repository's pytest settings (parallel workers) are not this example's
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", "-o", "addopts="]))
