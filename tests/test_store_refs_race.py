"""Two processes writing one set of task references: one creates the tasks, the other ends them by reference
(as a Celery worker may start before the publisher's create lands). In either order, or racing, each
reference ends as exactly one task, born, under one parent, and finished: a create that arrives after the
task finished never reopens it. Real subprocesses, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from taskreport._store import open_store

PROCS = Path(__file__).with_name("_procs.py")
ROOT = Path(__file__).resolve().parents[1]
PREFIX = "race-ref-aaaaaaaaaa-"
PARENT = "race-parent-bbbbbbbbbb"
COUNT = 150


def _start(url: str, mode: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, str(PROCS), "refs", url, "acme", "web", mode, PREFIX, PARENT, str(COUNT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        _out, err = proc.communicate(timeout=10)
        pytest.fail(f"worker did not start: {line!r}\n{err}")
    return proc


def _run(procs: list[subprocess.Popen[str]]) -> list[dict[str, float]]:
    """Release the workers at once; wait for them all."""
    try:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=90)
            assert proc.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("order", ["create-first", "update-first", "racing"])
def test_two_processes_on_one_ref_make_one_finished_task(store_url: str, order: str) -> None:
    store = open_store(store_url)
    try:
        with store.transaction() as tx:
            scope = tx.ensure_project("acme", "web")
        if order == "racing":
            results = _run([_start(store_url, "create"), _start(store_url, "update")])
            # they really overlapped, or this proves nothing about races
            assert max(r["started"] for r in results) < min(r["finished"] for r in results)
        else:
            first, second = ("create", "update") if order == "create-first" else ("update", "create")
            _run([_start(store_url, first)])
            _run([_start(store_url, second)])
        with store.transaction(write=False) as tx:
            rows = tx.cur.all("SELECT idempotency_key AS ref, name, status, born, parent, data FROM tasks")
            (parent,) = tx.list_tasks(scope, ref=PARENT).results
    finally:
        store.close()
    tasks = {row["ref"]: row for row in rows if row["ref"] != PARENT}
    assert len(rows) == COUNT + 1 and sorted(tasks) == [f"{PREFIX}{i:04d}" for i in range(COUNT)]
    assert {(r["name"], r["status"], r["born"], r["parent"]) for r in tasks.values()} == {
        ("job", "success", 1, parent["id"])
    }
    # the parent was only ever named: a placeholder, made once
    assert (parent["name"], parent["status"]) == (PARENT, "pending")
    # an update replaces data; a create fills a placeholder's data in, its keys giving way
    replaced, merged = {"by": "update"}, {"by": "update", "created": True}
    data = [json.loads(r["data"]) for r in tasks.values()]
    expected = {"create-first": [replaced], "update-first": [merged], "racing": [replaced, merged]}[order]
    assert all(d in expected for d in data), data
