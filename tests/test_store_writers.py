"""Writers of one SQLite store queue on a lock file beside it, so none starves behind SQLite's sleeping busy
handler (bench/embedded_writers.py shows the fairness under load); a writer with a deadline (an exit) still
gives up in time."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from taskreport._local import LocalTransport
from taskreport._store import open_store

fcntl = pytest.importorskip("fcntl", reason="writers queue on flock, which this platform lacks")

HOLDER = """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold_lock(path: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HOLDER), str(path), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_write_waits_its_turn_behind_another_processes_writer(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    store = open_store(str(db))
    with store.transaction() as tx:
        scope = tx.ensure_project("local", "default")
        task = tx.create_task(scope, {"name": "queued"})
    lock = tmp_path / "store.db-writers.lock"
    assert lock.exists() and (lock.stat().st_mode & 0o777) == 0o600
    holder = hold_lock(lock, 0.6)
    start = time.monotonic()
    with store.transaction() as tx:  # waits for the other writer, then goes: no "database is locked"
        tx.update_task(scope, task["id"], {"value": 1})
    waited = time.monotonic() - start
    holder.wait(10)
    assert 0.4 < waited < 5, waited
    with store.transaction(write=False) as tx:
        assert tx.get_task(scope, task["id"])["value"] == 1
    with store.transaction(write=False) as tx:  # readers never wait for writers
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            assert tx.get_task(scope, task["id"])["name"] == "queued"
        finally:
            os.close(fd)
    store.close()


def test_a_writer_with_a_deadline_gives_up_in_time(tmp_path: Path) -> None:
    from taskreport import TransportError
    from taskreport._refs import new_ref
    from taskreport._transport import Op

    db = tmp_path / "store.db"
    transport = LocalTransport(str(db), "local", "default")
    transport.send([Op("create", new_ref(), None, {"name": "first"})])
    holder = hold_lock(tmp_path / "store.db-writers.lock", 5)
    try:
        transport.set_timeout(0.3)  # what an exit with a deadline does
        start = time.monotonic()
        with pytest.raises(TransportError, match="database is locked"):
            transport.send([Op("create", new_ref(), None, {"name": "second"})])
        assert time.monotonic() - start < 2
    finally:
        holder.kill()
        holder.wait()
        transport.set_timeout(None)
    assert transport.send([Op("create", new_ref(), None, {"name": "third"})])[0]["id"]
    transport.close()
