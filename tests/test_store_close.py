"""Closing a store while another thread is inside a transaction: the process goes on, the transaction
finishes, and its connection is closed when it does (closing a SQLite connection under a running statement
crashed the process: an exit whose last delivery round was still writing to the embedded store)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import json, sqlite3, sys, threading, time
    from taskreport._store import open_store

    results = []
    for n in range(5):
        store = open_store(f"{sys.argv[1]}/{n}.db")
        with store.transaction() as tx:
            scope = tx.ensure_project("acme", "web")
        started, out = threading.Event(), {}

        def long_write():
            try:
                with store.transaction() as tx:
                    started.set()
                    # a statement that runs for a while, then a write in the same transaction
                    out["count"] = tx.cur.scalar(
                        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000)"
                        " SELECT count(*) FROM c")
                    out["task"] = tx.create_task(scope, {"name": f"written while closing {n}"})["id"]
            except Exception as exc:
                out["error"] = repr(exc)

        thread = threading.Thread(target=long_write)
        thread.start()
        started.wait(10)
        time.sleep(0.05)
        store.close()
        thread.join(30)
        # what the transaction wrote is there, read by another connection
        with sqlite3.connect(f"{sys.argv[1]}/{n}.db") as check:
            out["stored"] = check.execute("SELECT count(*) FROM tasks").fetchone()[0]
        results.append(out)
    print(json.dumps(results))
    """
)


def test_closing_a_store_under_a_running_transaction_lets_it_finish(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    for out in json.loads(done.stdout):
        assert out.get("error") is None
        assert out["count"] == 1_000_000 and out["task"] and out["stored"] == 1
