"""``examples/celery_eager.py`` runs as its own process against a fresh embedded store and records what it says
(read back with ``taskreport list --json``, as a user would)."""

from __future__ import annotations

import pytest
from test_examples import by_name, env, listed, run_example

__all__ = ["env"]  # the fixture


def test_celery_eager(env: dict[str, str]) -> None:
    pytest.importorskip("celery")
    out = run_example("celery_eager.py", env)
    tasks = listed(env)
    batch = by_name(tasks, "nightly batch")
    resize, flaky, broken = (by_name(tasks, n) for n in ("example.resize", "example.flaky", "example.broken"))
    assert all(t["parent"] == batch["id"] for t in (resize, flaky, broken)), out
    assert (resize["status"], resize["value"], resize["value_max"]) == ("success", 20, 20)
    assert (flaky["status"], flaky["data"]["retries"]) == ("success", 2)
    assert (broken["status"], broken["data"]["exception"]) == ("error", "builtins.ValueError")
    assert resize["data"]["args"] == [20]
