"""Two processes writing to one store at once lose nothing: every transaction's read-modify-write counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from taskreport._store import open_store

WORKERS = 2
ROUNDS = 400  # enough for the two to overlap for a good while (checked below); each round is a commit
PROCS = Path(__file__).with_name("_procs.py")
ROOT = Path(__file__).resolve().parents[1]


def _run_workers(url: str, own: list[str], shared: str) -> list[dict[str, float]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    procs = [
        subprocess.Popen(
            [sys.executable, str(PROCS), "increment", url, "acme", "web", own_id, shared, str(ROUNDS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for own_id in own
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "ready":
                _out, err = proc.communicate(timeout=10)
                pytest.fail(f"worker did not start: {line!r}\n{err}")
        # release every worker at once
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _check(url: str, request: pytest.FixtureRequest, *, shared_xfail: str | None = None) -> None:
    store = open_store(url)
    try:
        with store.transaction() as tx:
            scope = tx.ensure_project("acme", "web")
            own = [
                tx.create_task(scope, {"name": f"worker {i}", "value": 0, "value_max": ROUNDS}) for i in range(WORKERS)
            ]
            shared = tx.create_task(scope, {"name": "shared", "value": 0, "value_max": ROUNDS * WORKERS})
        results = _run_workers(url, [t["id"] for t in own], shared["id"])

        # the workers really ran at the same time, or this test proves nothing
        assert max(r["started"] for r in results) < min(r["finished"] for r in results)
        with store.transaction(write=False) as tx:
            own_values = [tx.get_task(scope, t["id"])["value"] for t in own]
            shared_task = tx.get_task(scope, shared["id"])
    finally:
        store.close()
    assert own_values == [ROUNDS] * WORKERS
    if shared_xfail:
        # only the shared counter is known to fail; everything above must pass
        request.applymarker(pytest.mark.xfail(strict=True, reason=shared_xfail))
    assert shared_task["value"] == ROUNDS * WORKERS
    assert shared_task["value_percent"] == 100


@pytest.mark.timeout(90)
def test_two_processes_on_sqlite_lose_nothing(sqlite_url: str, request: pytest.FixtureRequest) -> None:
    _check(sqlite_url, request)


@pytest.mark.postgres
@pytest.mark.timeout(90)
def test_two_processes_on_postgresql_lose_nothing(postgres_url: str, request: pytest.FixtureRequest) -> None:
    _check(postgres_url, request)
