"""Worker processes for the store concurrency tests; run as a script, not collected by pytest.

    python tests/_procs.py increment URL ORG PROJECT OWN_TASK SHARED_TASK COUNT
    python tests/_procs.py refs URL ORG PROJECT create|update PREFIX PARENT_REF COUNT

Each prints ``ready``, waits for a line on stdin (so that every worker starts at once), then works and prints
one JSON line: ``{"started": ..., "finished": ...}``. Any error ends it with a traceback and a non-zero status.

``increment`` runs COUNT rounds of two read-modify-write transactions, one on its own task and one on the task
all workers share. ``refs`` writes the tasks ``PREFIX0000``... by reference, one transaction each, all under
the parent PARENT_REF: ``create`` creates them (pending), ``update`` ends them (success) as a process that
only holds their references would.
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


def refs(
    url: str, organization: str, project: str, mode: str, prefix: str, parent: str, count: int
) -> dict[str, float]:
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
        for i in range(count):
            ref = f"{prefix}{i:04d}"
            with store.transaction() as tx:
                if mode == "create":
                    fields = {"name": "job", "data": {"created": True}}
                    tx.create_task(scope, fields, idempotency_key=ref, parent_ref=parent)
                else:
                    fields = {"status": "success", "data": {"by": "update"}}
                    tx.update_task_by_ref(scope, ref, fields, parent_ref=parent)
        return {"started": started, "finished": time.time()}
    finally:
        store.close()


def main(argv: list[str]) -> int:
    command, *args = argv
    if command == "increment":
        url, organization, project, own, shared, count = args
        result = increment(url, organization, project, own, shared, int(count))
    elif command == "refs":
        url, organization, project, mode, prefix, parent, count = args
        result = refs(url, organization, project, mode, prefix, parent, int(count))
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
