"""Worker processes for the store concurrency tests; run as a script, not collected by pytest.

    python tests/_procs.py increment URL ORG PROJECT OWN_TASK SHARED_TASK COUNT

prints ``ready``, waits for a line on stdin (so that every worker starts at once), then runs COUNT rounds of
two read-modify-write transactions, one on its own task and one on the task all workers share, and prints one
JSON line: ``{"started": ..., "finished": ...}``. Any error ends it with a traceback and a non-zero status.
"""

from __future__ import annotations

import json
import sys
import time


def increment(url: str, organization: str, project: str, own: str, shared: str, count: int) -> dict[str, float]:
    from taskreport._store import open_store

    store = open_store(url)
    try:
        with store.transaction(write=False) as tx:
            scope = tx.get_scope(organization, project)
        if scope is None:
            raise SystemExit(f"no project {organization}/{project}")
        print("ready", flush=True)
        sys.stdin.readline()
        started = time.time()
        for _ in range(count):
            for task_id in (own, shared):
                with store.transaction() as tx:
                    task = tx.get_task(scope, task_id)
                    tx.update_task(scope, task_id, {"value": (task["value"] or 0) + 1})
        return {"started": started, "finished": time.time()}
    finally:
        store.close()


def main(argv: list[str]) -> int:
    command, *args = argv
    if command != "increment":
        raise SystemExit(f"unknown command {command!r}")
    url, organization, project, own, shared, count = args
    result = increment(url, organization, project, own, shared, int(count))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
