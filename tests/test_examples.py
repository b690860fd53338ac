"""Every example runs as its own process against a fresh embedded store, and records what it says it does
(read back with the ``taskreport list --json`` command a user would run next)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CLI = Path(sys.executable).parent / "taskreport"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if (not k.startswith("TASKREPORT_") or k == "TASKREPORT_SCRYPT_N")}
    env["TASKREPORT_HOME"] = str(tmp_path / "example-home")
    env["TASKREPORT_CONFIG"] = str(tmp_path / "example-config.toml")
    return env


def run_example(name: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def listed(env: dict[str, str]) -> list[dict[str, Any]]:
    done = subprocess.run(
        [str(CLI), "list", "--json", "--limit", "100"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    tasks: list[dict[str, Any]] = json.loads(done.stdout)
    return tasks


def by_name(tasks: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [t for t in tasks if t["name"] == name]
    assert len(found) == 1, found
    return found[0]


def test_every_example_has_a_test() -> None:
    tested = {"main_job.py", "decorated.py", "async_job.py", "pipeline.py", "progress_loop.py"}
    tested |= {"logging_tail.py", "opentelemetry_traces.py", "testing_your_code.py"}
    tested |= {"celery_eager.py"}  # tests/test_celery_example.py
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_main_job(env: dict[str, str]) -> None:
    out = run_example("main_job.py", env)
    assert "taskreport list" in out
    tasks = listed(env)
    job = by_name(tasks, "nightly-import")
    assert job["status"] == "success"
    assert job["id"] in out
    loop = by_name(tasks, "import-items")
    assert (loop["status"], loop["value"], loop["value_max"], loop["parent"]) == ("success", 200, 200, job["id"])
    steps = [t for t in tasks if t["name"] == "validate-batch"]
    assert len(steps) == 4 and {(s["status"], s["parent"]) for s in steps} == {("success", job["id"])}


def test_decorated(env: dict[str, str]) -> None:
    out = run_example("decorated.py", env)
    assert "failed as expected" in out
    tasks = listed(env)
    parent = by_name(tasks, "thumbnails")
    resizes = [t for t in tasks if t["name"] == "__main__.resize"]
    assert Counter((t["status"], t["parent"]) for t in resizes) == {
        ("success", parent["id"]): 2,
        ("error", None): 1,
    }
    failed = next(t for t in resizes if t["status"] == "error")
    assert failed["data"]["exception"] == "builtins.ValueError"
    assert "width 0" in failed["data"]["message"]


def test_async_job(env: dict[str, str]) -> None:
    out = run_example("async_job.py", env)
    assert "gave up on https://example.com/slow" in out
    tasks = listed(env)
    crawl = by_name(tasks, "crawl")
    fetches = [t for t in tasks if t["name"] == "fetch"]
    assert crawl["status"] == "success"
    assert Counter(t["status"] for t in fetches) == {"success": 2, "cancelled": 1}
    assert {t["parent"] for t in fetches} == {crawl["id"]}


def test_pipeline(env: dict[str, str]) -> None:
    out = run_example("pipeline.py", env)
    assert "matches: [0, 7, 14, 21, 28]" in out
    tasks = listed(env)
    job = by_name(tasks, "pipeline-job")
    statuses = {name: by_name(tasks, name)["status"] for name in ("read-lines", "parse", "first-matches")}
    assert job["status"] == "success"
    assert statuses == {"read-lines": "cancelled", "parse": "cancelled", "first-matches": "success"}
    assert {by_name(tasks, name)["parent"] for name in statuses} == {job["id"]}


def test_progress_loop(env: dict[str, str]) -> None:
    out = run_example("progress_loop.py", env)
    assert "sum=1225" in out
    tasks = listed(env)
    checksum, scan = by_name(tasks, "checksum"), by_name(tasks, "scan")
    assert (checksum["status"], checksum["value"], checksum["value_max"]) == ("success", 50, 50)
    assert (scan["status"], scan["value"], scan["value_max"]) == ("success", 1000, 1000)


def test_logging_tail(env: dict[str, str]) -> None:
    out = run_example("logging_tail.py", env)
    job = by_name(listed(env), "import-orders")
    assert job["status"] == "success"
    assert [r["message"] for r in job["data"]["logs"]] == [
        "importing 5 rows", "row 3 is empty, skipped", "row 4 could not be parsed", "imported 3 of 5 rows"]
    assert job["data"]["log_error"]["exception"] == "builtins.ValueError"
    assert f"[{job['ref']}] importer: importing 5 rows" in out and "INFO    [] importer: starting" in out


def test_opentelemetry_traces(env: dict[str, str]) -> None:
    pytest.importorskip("opentelemetry.sdk", reason="the example needs opentelemetry-sdk (the dev extra)")
    out = run_example("opentelemetry_traces.py", env)
    trace_id = out.split("request trace: ")[1].split()[0]
    tasks = [t for t in listed(env) if t["name"] == "resize-images"]
    assert sorted(t["status"] for t in tasks) == ["error", "success"]
    for task in tasks:
        assert task["data"]["trace_id"] == trace_id
        assert f"id={task['data']['span_id']}" in out  # each task's own span was printed


def test_testing_your_code(env: dict[str, str]) -> None:
    out = run_example("testing_your_code.py", env)
    assert "3 passed" in out
    assert not Path(env["TASKREPORT_HOME"]).exists()  # nothing reached a store
